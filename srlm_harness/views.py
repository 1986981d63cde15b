"""What the CLI shows: plans, runs, plugins and registry listings, as rich tables."""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table

from srlm_harness.api import UserError
from srlm_harness.console import RichReporter, console, fmt_delta, fmt_score


def show_plan(plan: Any, store: Any) -> None:
    pipeline = plan.pipeline
    console.print(f"[bold]{pipeline.name}[/]  [dim]({pipeline.source})[/]")
    console.print(
        f"  model     {plan.model.ref}  [dim]{plan.model.identity[:40]} via {plan.model.source}[/]"
    )
    console.print(f"  hardware  {plan.hardware.summary()}")
    for key, reason in plan.hardware.reasons.items():
        console.print(f"            [dim]{key}: {reason}[/]")
    console.print(f"  store     {store.root}")
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
        table.add_row(str(i), name, what, step.key[:12], state)
    console.print(table)
    todo = sum(not s.cached for s in plan.steps)
    console.print(f"  {len(plan.steps)} steps, {len(plan.steps) - todo} cached, {todo} to run")


def _short(value: Any, limit: int = 40) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def execute_and_report(session: Any, plan: Any, run_id: str | None) -> dict[str, Any]:
    from srlm_harness.run import Runner

    if plan.pipeline.publish:
        publish_target(plan.pipeline.publish)  # a bad board name fails before any training
    reporter = RichReporter()
    started = time.perf_counter()
    runner = Runner(session, plan, reporter)
    manifest = runner.execute(run_id)
    table = reporter.table()
    if table is not None:
        console.print(table)
    if plan.pipeline.publish:
        publish_from_spec(session, manifest, plan.pipeline.publish)
    console.print(
        f"[bold green]run {manifest['run_id']} complete[/] in "
        f"{time.perf_counter() - started:.1f}s  [dim]{runner.run_dir}[/]"
    )
    return manifest


def publish_target(publish: Any) -> tuple[str, str]:
    """(target, publisher) of a spec's ``publish:`` value, checked."""
    from srlm_harness.leaderboard import board_path

    target = publish if isinstance(publish, str) else publish.get("target") or publish.get("board")
    publisher = "folder" if isinstance(publish, str) else publish.get("publisher", "folder")
    if not target:
        raise UserError("'publish' needs a target board", "publish")
    if publisher == "folder":
        board_path(target)
    return target, publisher


def publish_from_spec(session: Any, manifest: dict[str, Any], publish: Any) -> None:
    from srlm_harness.leaderboard import publish_run, spec_boards_root

    target, publisher = publish_target(publish)
    # A recipe's board is relative to its project, not to where the command ran.
    root = spec_boards_root(manifest.get("spec_path") or manifest.get("spec_source"))
    published = publish_run(manifest, target, publisher=publisher, root=root,
                            registry=session.registry, store=session.store)
    if published.new:
        console.print(f"  leaderboard entry written: [bold]{published.location}[/]")
    else:
        console.print(f"  already on the leaderboard (same results): [bold]{published.location}[/]")


def show_plugins(plugins: Any) -> None:
    table = Table(title="Plugins", title_justify="left")
    for col in ("name", "version", "hooks", "from"):
        table.add_column(col)
    for info in sorted(plugins.infos.values(), key=lambda i: i.name):
        hooks = ", ".join(h.removeprefix("srlm_") for h in info.hooks)
        if info.error:
            hooks = f"[red]{info.error}[/]"
        table.add_row(info.name, info.version, hooks, f"{info.origin} ({info.module})")
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


def show_table(kind: str, table: Any, name: str | None) -> None:
    if name is not None:
        obj = table.get(name)
        console.print(f"[bold]{obj.name}[/] [dim]({kind[:-1]} from plugin {table.owner(name)})[/]")
        if getattr(obj, "description", ""):
            console.print(f"  {obj.description}")
        schema = getattr(obj, "config", None) or getattr(obj, "options", None)
        if schema is not None:
            options = Table(title="options", title_justify="left")
            for col in ("key", "type", "default", "description"):
                options.add_column(col)
            for row in _schema_rows(schema):
                options.add_row(*row)
            console.print(options)
        columns = getattr(obj, "columns", None)
        if columns:
            console.print(f"  needs dataset columns: {', '.join(columns)}")
        return
    listing = Table(title=kind.capitalize(), title_justify="left")
    for col in ("name", "plugin", "description"):
        listing.add_column(col)
    for obj in table:
        listing.add_row(obj.name, table.owner(obj.name), (obj.description or "").split("\n")[0])
    console.print(listing)
    if kind == "stages":
        console.print("  [dim]srlm-harness stages NAME shows a stage's options[/]")
    if kind == "tasks":
        console.print("  [dim]any lm-eval built-in task name works too[/]")


def show_runs(store: Any) -> None:
    table = Table(title=f"Runs in {store.root}", title_justify="left")
    for col in ("run", "name", "status", "steps", "final scores"):
        table.add_column(col)
    for run_id in store.run_ids():
        try:
            m = store.run_manifest(run_id)
        except UserError as exc:
            table.add_row(run_id, "", f"[red]{exc.message}[/]", "", "")
            continue
        evals = [s for s in m.get("steps", []) if s.get("kind") == "eval"]
        final = evals[-1]["scores"] if evals else []
        scores = ", ".join(f"{s['task']} {fmt_score(s['value'])}" for s in final)
        table.add_row(
            run_id, m.get("name", ""), m.get("status", "?"), str(len(m.get("steps", []))), scores
        )
    console.print(table)


def show_run(manifest: dict[str, Any]) -> None:
    console.print(
        f"[bold]{manifest['run_id']}[/] {manifest.get('name', '')} — "
        f"{manifest.get('status')}  [dim]{manifest.get('started')} → "
        f"{manifest.get('finished')}[/]"
    )
    model = manifest.get("model", {})
    console.print(
        f"  model {model.get('ref')} via {model.get('source', model.get('identified_by'))}"
    )
    hw = manifest.get("hardware", {})
    console.print(f"  hardware {hw.get('device')} {hw.get('dtype')} {hw.get('threads')} threads")
    table = Table(title_justify="left")
    for col in ("step", "cached", "seconds", "result"):
        table.add_column(col)
    base: dict[str, float] = {}
    for step in manifest.get("steps", []):
        if step.get("kind") == "stage":
            metrics = step.get("metrics", {})
            result = ", ".join(
                f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, int | float)
            )[:80]
            table.add_row(
                f"stage {step['label']}", str(step.get("cached")), str(step.get("seconds")), result
            )
        else:
            values = {s["task"]: s["value"] for s in step.get("scores", [])}
            if step.get("label") == "base":
                base = values
            result = ", ".join(
                f"{t} {fmt_score(v)}{fmt_delta(v, base.get(t)) if step['label'] != 'base' else ''}"
                for t, v in values.items()
            )
            table.add_row(
                f"eval {step['label']}", str(step.get("cached")), str(step.get("seconds")), result
            )
    console.print(table)
    if manifest.get("error"):
        console.print(f"  [red]error:[/] {manifest['error']}")
