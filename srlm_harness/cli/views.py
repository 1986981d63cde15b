"""What the CLI shows: plans, runs, plugins and registry listings, as rich tables or JSON."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from rich.table import Table

from srlm_harness.api import UserError
from srlm_harness.cli.console import RichReporter, console, error, esc, fmt_delta, fmt_score
from srlm_harness.store.manifest import RunManifest


def typed_run(manifest: RunManifest | dict[str, Any]) -> RunManifest:
    """A run manifest as the typed record (from its JSON if need be)."""
    if isinstance(manifest, RunManifest):
        return manifest
    return RunManifest.from_dict(manifest, f"run {manifest.get('run_id', '?')}")


def print_json(data: Any) -> None:
    """Machine-readable output: one JSON document on stdout, nothing else."""
    print(json.dumps(data, indent=2, default=str))


def plan_data(plan: Any, store: Any) -> dict[str, Any]:
    pipeline = plan.pipeline
    steps = []
    for i, step in enumerate(plan.steps, 1):
        entry = {"number": i, **step.describe(), "cached": step.cached}
        steps.append(entry)
    return {
        "name": pipeline.name,
        "source": str(pipeline.source),
        "model": {
            "ref": plan.model.ref,
            "identity": plan.model.identity,
            "identified_by": plan.model.source,
            "key": plan.model.key,
        },
        "hardware": plan.hardware.as_dict(),
        "store": str(store.root),
        "steps": steps,
        "cached": sum(s.cached for s in plan.steps),
        "to_run": sum(not s.cached for s in plan.steps),
    }


def show_plan(plan: Any, store: Any) -> None:
    pipeline = plan.pipeline
    console.print(f"[bold]{esc(pipeline.name)}[/]  [dim]({esc(str(pipeline.source))})[/]")
    console.print(
        f"  model     {esc(plan.model.ref)}  "
        f"[dim]{esc(plan.model.identity[:40])} via {esc(plan.model.source)}[/]"
    )
    console.print(f"  hardware  {esc(plan.hardware.summary())}")
    for key, reason in plan.hardware.reasons.items():
        console.print(f"            [dim]{esc(key)}: {esc(reason)}[/]")
    console.print(f"  store     {esc(str(store.root))}")
    table = Table(title="Plan", title_justify="left")
    for col in ("#", "step", "what", "cache key", "state"):
        table.add_column(col)
    for i, step in enumerate(plan.steps, 1):
        if step.kind == "stage":
            config = step.spec.config.model_dump(exclude_defaults=True)
            what = ", ".join(f"{k}={_short(v)}" for k, v in config.items()) or "defaults"
            name = f"stage {step.label}"
        else:
            what = ", ".join(t.name for t in step.tasks) + (
                f" (limit {step.limit})" if step.limit else ""
            )
            name = f"eval {step.label}"
        state = "[cyan]cached[/]" if step.cached else "[yellow]to run[/]"
        table.add_row(str(i), esc(name), esc(what), step.key[:12], state)
    console.print(table)
    todo = sum(not s.cached for s in plan.steps)
    console.print(f"  {len(plan.steps)} steps, {len(plan.steps) - todo} cached, {todo} to run")


def _short(value: Any, limit: int = 40) -> str:
    text = " ".join(str(value).split())
    if not console.is_terminal:
        return text  # piped: never cut, a script or a pager reads it whole
    return text if len(text) <= limit else text[: limit - 1] + "…"


def output_paths(manifest: RunManifest | dict[str, Any]) -> list[tuple[str, str, str]]:
    """(step, what, path) for every model, results file and sample log a run produced."""
    rows: list[tuple[str, str, str]] = []
    for step in typed_run(manifest).steps:
        label = f"{step.kind} {step.label}"
        if step.is_stage and step.path:
            rows.append((label, "model", step.path))
        for what, value in step.files.items():
            if isinstance(value, dict):
                rows += [(label, f"{what} {task}", str(path)) for task, path in value.items()]
            else:
                rows.append((label, what, str(value)))
    return rows


def show_output_paths(manifest: RunManifest | dict[str, Any]) -> None:
    rows = output_paths(manifest)
    if not rows:
        return
    console.print("  outputs:")
    width = max(len(f"{step} {what}") for step, what, _ in rows)
    for step, what, path in rows:
        console.print(f"    {esc(f'{step} {what}'.ljust(width))}  {esc(path)}")


def interrupted_message(runner: Any, command: str) -> str:
    """What an interrupted run kept, and the command that resumes it."""
    done = [f"{s.kind} {s.label}" for s in runner.manifest.steps]
    store = runner.store
    checkpoints = [
        f"checkpoints of stage {step.label}"
        for step in runner.plan.stages
        if any((store.root / "work" / step.key / "checkpoints").glob("*"))
    ]
    kept = ", ".join(done + checkpoints) or "nothing finished yet"
    return f"interrupted; kept: {kept} — run `{command}` again to resume"


def execute_and_report(
    session: Any,
    plan: Any,
    run_id: str | None,
    *,
    verbose: bool = False,
    command: str = "srlm-harness run",
    started: float | None = None,
) -> dict[str, Any]:
    from srlm_harness.cli.library_output import library_output_to
    from srlm_harness.pipeline.interrupt import stop_on_signal
    from srlm_harness.pipeline.runner import Runner, new_run_id

    if plan.pipeline.publish:
        # A bad board name fails before any training.
        publish_target(plan.pipeline.publish, session.registry)
    started = time.monotonic() if started is None else started
    run_id = run_id or new_run_id()
    log = session.store.root / "logs" / f"{run_id}.log"
    if not verbose:
        console.print(f"  [dim]library output → {esc(str(log))} (--verbose shows it here)[/]")
    reporter = RichReporter()
    runner = Runner(session, plan, reporter)
    try:
        with (
            library_output_to(log, verbose) as person_fd,
            stop_on_signal(lambda: interrupted_message(runner, command), person_fd),
        ):
            manifest = runner.execute(run_id)
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):  # a display half taken down by the interrupt
            reporter.stop()
        error(interrupted_message(runner, command))
        raise SystemExit(130) from None
    table = reporter.table()
    if table is not None:
        console.print(table)
    if plan.pipeline.publish:
        publish_from_spec(session, manifest, plan.pipeline.publish)
    show_output_paths(manifest)
    console.print(
        f"[bold green]run {esc(manifest['run_id'])} complete[/] in "
        f"{time.monotonic() - started:.1f}s  [dim]{esc(str(runner.run_dir))}[/]"
    )
    return manifest


def publish_target(publish: Any, registry: Any) -> tuple[str, str | None, bool]:
    """(target, publisher name or None for the board publisher, whether it is a board
    publisher) of a spec's ``publish:`` value, checked before any training."""
    from srlm_harness.leaderboard.board import board_path

    target = publish if isinstance(publish, str) else publish.get("target") or publish.get("board")
    name = None if isinstance(publish, str) else publish.get("publisher")
    if not target:
        raise UserError("'publish' needs a target board", "publish")
    chosen = registry.publishers.get(name, "publish.publisher") if name else \
        registry.board_publisher("publish")
    if chosen.board:
        board_path(target)
    return target, name, bool(chosen.board)


def publish_from_spec(session: Any, manifest: dict[str, Any], publish: Any) -> None:
    from srlm_harness.leaderboard.board import publish_run, spec_boards_root

    target, publisher, _ = publish_target(publish, session.registry)
    # A recipe's board is relative to its project, not to where the command ran.
    run = typed_run(manifest)
    root = spec_boards_root(run.spec_path or run.spec_source)
    published = publish_run(manifest, target, publisher=publisher, root=root,
                            registry=session.registry, store=session.store)
    if published.new:
        console.print(f"  leaderboard entry written: [bold]{esc(str(published.location))}[/]")
    else:
        console.print(
            f"  already on the leaderboard (same results): [bold]{esc(str(published.location))}[/]"
        )


def plugins_data(plugins: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": info.name,
            "version": info.version,
            "hooks": [h.removeprefix("srlm_") for h in info.hooks],
            "origin": info.origin,
            "module": info.module,
            "error": info.error,
        }
        for info in sorted(plugins.infos.values(), key=lambda i: i.name)
    ]


def show_plugins(plugins: Any) -> None:
    table = Table(title="Plugins", title_justify="left")
    for col in ("name", "version", "hooks", "from"):
        table.add_column(col)
    for info in plugins_data(plugins):
        hooks = esc(", ".join(info["hooks"]))
        if info["error"]:
            hooks = f"[red]{esc(info['error'])}[/]"
        where = esc(f"{info['origin']} ({info['module']})")
        table.add_row(esc(info["name"]), esc(info["version"]), hooks, where)
    console.print(table)


def _schema_rows(model: Any) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        annotation = getattr(field.annotation, "__name__", None) or str(field.annotation)
        annotation = annotation.replace("typing.", "")
        default = (
            "required"
            if field.is_required()
            else repr(field.get_default(call_default_factory=True))
        )
        rows.append((name, annotation, default, field.description or ""))
    return rows


def table_data(kind: str, table: Any, name: str | None) -> Any:
    """A registry listing (or one entry with its options) as plain data."""
    if name is None:
        return [
            {
                "name": obj.name,
                "plugin": table.owner(obj.name),
                "description": obj.description or "",
            }
            for obj in table
        ]
    obj = table.get(name)
    schema = getattr(obj, "config", None) or getattr(obj, "options", None)
    return {
        "name": obj.name,
        "kind": kind[:-1],
        "plugin": table.owner(name),
        "description": getattr(obj, "description", "") or "",
        "options": [
            dict(zip(("key", "type", "default", "description"), row, strict=True))
            for row in (_schema_rows(schema) if schema is not None else [])
        ],
        "columns": list(getattr(obj, "columns", None) or []),
    }


def summary(description: str) -> str:
    """A description's first paragraph on one line, without reST double backticks."""
    first = description.strip().split("\n\n")[0]
    return " ".join(first.split()).replace("``", "`")


def show_table(kind: str, table: Any, name: str | None) -> None:
    data = table_data(kind, table, name)
    if name is not None:
        console.print(
            f"[bold]{esc(data['name'])}[/] [dim]({kind[:-1]} from plugin {esc(data['plugin'])})[/]"
        )
        if data["description"]:
            console.print(f"  {esc(data['description'])}")
        if data["options"]:
            options = Table(title="options", title_justify="left")
            for col in ("key", "type", "default", "description"):
                options.add_column(col)
            for row in data["options"]:
                options.add_row(*(esc(str(v)) for v in row.values()))
            console.print(options)
        if data["columns"]:
            console.print(f"  needs dataset columns: {esc(', '.join(data['columns']))}")
        return
    listing = Table(title=kind.capitalize(), title_justify="left")
    for col in ("name", "plugin", "description"):
        listing.add_column(col)
    for row in data:
        listing.add_row(esc(row["name"]), esc(row["plugin"]), esc(summary(row["description"])))
    console.print(listing)
    if kind == "stages":
        console.print("  [dim]srlm-harness stages NAME shows a stage's options[/]")
    if kind == "tasks":
        console.print("  [dim]any lm-eval built-in task name works too[/]")


def show_recipes(rows: list[dict[str, str]]) -> None:
    table = Table(title="Recipes", title_justify="left")
    for col in ("name", "description"):
        table.add_column(col)
    for row in rows:
        table.add_row(esc(row["name"]), esc(row["description"]))
    console.print(table)
    console.print(
        "  [dim]srlm-harness recipes copy NAME [DEST] writes one to edit; "
        "run and plan take a NAME too[/]"
    )


def runs_data(store: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for run_id in store.run_ids():
        try:
            m = store.run(run_id)
        except UserError as exc:
            rows.append({"run_id": run_id, "error": exc.message})
            continue
        last = m.final_eval
        rows.append(
            {
                "run_id": run_id,
                "name": m.name,
                "status": m.status,
                "steps": len(m.steps),
                # Only a complete run has final scores; otherwise the last one it reached.
                "final": m.status == "complete" and last is not None,
                "last_eval": None
                if last is None
                else {"label": last.label, "scores": last.score_values()},
            }
        )
    return rows


def show_runs(store: Any) -> None:
    table = Table(title=f"Runs in {esc(str(store.root))}", title_justify="left")
    for col in ("run", "name", "status", "steps", "scores"):
        table.add_column(col)
    for row in runs_data(store):
        if "error" in row:
            table.add_row(esc(row["run_id"]), "", f"[red]{esc(row['error'])}[/]", "", "")
            continue
        last = row["last_eval"]
        scores = ""
        if last is not None:
            values = ", ".join(f"{t} {fmt_score(v)}" for t, v in last["scores"].items())
            scores = f"{values} ({'final' if row['final'] else 'eval ' + last['label']})"
        table.add_row(
            esc(row["run_id"]), esc(row["name"]), esc(row["status"]), str(row["steps"]), esc(scores)
        )
    console.print(table)


def run_data(manifest: RunManifest | dict[str, Any]) -> dict[str, Any]:
    run = typed_run(manifest)
    outputs = [{"step": s, "what": w, "path": p} for s, w, p in output_paths(run)]
    return {**run.to_dict(), "outputs": outputs}


def show_run(manifest: RunManifest | dict[str, Any]) -> None:
    run = typed_run(manifest)
    console.print(
        f"[bold]{esc(run.run_id)}[/] {esc(run.name)} — "
        f"{esc(run.status)}  [dim]{run.started} → {run.finished}[/]"
    )
    source = run.model.source or run.model.identified_by
    console.print(f"  model {esc(str(run.model.ref))} via {esc(str(source))}")
    hw = run.hardware
    console.print(f"  hardware {hw.get('device')} {hw.get('dtype')} {hw.get('threads')} threads")
    table = Table(title_justify="left")
    for col in ("step", "cached", "seconds", "result"):
        table.add_column(col)
    base: dict[str, float] = {}
    for step in run.steps:
        if step.is_stage:
            numbers = {k: v for k, v in step.metrics.items() if isinstance(v, int | float)}
            result = esc(", ".join(f"{k}={v:.4g}" for k, v in numbers.items()))
        else:
            values = step.score_values()
            if step.label == "base":
                base = values
            result = ", ".join(
                f"{esc(t)} {fmt_score(v)}"
                f"{fmt_delta(v, base.get(t)) if step.label != 'base' else ''}"
                for t, v in values.items()
            )
        table.add_row(f"{step.kind} {esc(step.label)}", str(step.cached), str(step.seconds),
                      result)
    console.print(table)
    show_output_paths(run)
    if run.error:
        console.print(f"  [red]error:[/] {esc(run.error)}")
