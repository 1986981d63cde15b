"""``srlm-harness study``: plan and run a grid of pipelines as one tree."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from srlm_harness.cli.options import override_option, spec_file
from srlm_harness.cli.pipeline_commands import launch_options, launch_overrides


def show_tree(study: Any) -> dict[str, int]:
    """Print the merged tree of steps and return the counts it shows."""
    from rich.tree import Tree

    from srlm_harness.cli.console import console, esc

    unique = study.unique_stages()
    counts = {
        "pipelines": len(study.plans),
        "unique_stages": len(unique),
        "cached": sum(step.cached for step in unique.values()),
    }
    root = Tree(f"[bold]{esc(study.name)}[/]  [dim]({esc(str(study.source))})[/]")
    nodes: dict[str, Any] = {}
    for plan in study.plans:
        parent = nodes.get(plan.model.key)
        if parent is None:
            parent = nodes[plan.model.key] = root.add(
                f"[bold]{esc(plan.model.ref)}[/] [dim]base[/]"
            )
        for step in plan.stages:
            if step.key not in nodes:
                state = "[cyan]cached[/]" if step.cached else "[yellow]to run[/]"
                nodes[step.key] = parent.add(f"{esc(step.name)} [dim]{step.key[:12]}[/] {state}")
            parent = nodes[step.key]
        seed = f" [dim]seed {plan.pipeline.seed}[/]" if study.spec.seeds and plan.stages else ""
        parent.add(f"[green]→ {esc(plan.pipeline.name)}[/]{seed}")
    console.print(root)
    console.print(
        f"  {counts['pipelines']} pipelines, {counts['unique_stages']} unique stages, "
        f"{counts['cached']} already cached"
    )
    return counts


def _complete_spec(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    from srlm_harness.cli.options import complete_spec

    return complete_spec(ctx, param, incomplete)


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False), shell_complete=_complete_spec)
@click.option("--dry-run", is_flag=True, help="Show the tree of steps and stop.")
@override_option("Override a key in every pipeline, e.g. grpo.max_steps=10.")
@launch_options
@click.pass_obj
def study(
    state: Any, spec: str, dry_run: bool, overrides: tuple[str, ...], **launch: Any
) -> None:
    """Run a study: models x pipelines, every shared prefix trained once, then a report
    (table, plot, Markdown) in the study folder. SPEC may be a shipped recipe's name."""
    from srlm_harness.pipeline import hardware
    from srlm_harness.pipeline.runner import new_run_id
    from srlm_harness.study.record import study_command
    from srlm_harness.study.spec import load_study

    session = state.session
    state.require_healthy()
    spec = str(spec_file(spec))
    # --launcher/--num-processes/...: the same as `launch.KEY=VALUE` overrides.
    overrides = (*overrides, *launch_overrides(launch))
    study_obj = load_study(
        spec, session.registry, hardware.detect, session.store, session.plugin_versions(), overrides
    )
    counts = show_tree(study_obj)
    if dry_run:
        return
    study_id = f"{new_run_id()}-{_slug(study_obj.name)}"
    run_ids, counts["executed"] = _run_pipelines(state, study_obj, study_id)
    _report(session, study_obj, study_id, run_ids, counts, study_command(spec, overrides))


def _run_pipelines(state: Any, study_obj: Any, study_id: str) -> tuple[list[Any], int]:
    """Run every pipeline of the study in turn: ``(model, label, run id)`` of each, and how
    many unique stages were trained (not found cached). Ctrl-C says what was kept."""
    from srlm_harness.cli.console import console, error, esc
    from srlm_harness.cli.library_output import library_output_to
    from srlm_harness.pipeline.interrupt import stop_on_signal

    executed: set[str] = set()
    run_ids: list[tuple[str, str, str]] = []
    log = state.session.store.root / "logs" / f"{study_id}.log"
    if not state.verbose:
        console.print(f"  [dim]library output → {esc(str(log))} (--verbose shows it here)[/]")

    def kept() -> str:
        done = ", ".join(name for _, name, _ in run_ids) or "no pipeline finished yet"
        return f"interrupted; kept: {done} — run `{state.command}` again to resume"

    try:
        with (
            library_output_to(log, state.verbose) as person_fd,
            stop_on_signal(kept, person_fd),
        ):
            for i, plan in enumerate(study_obj.plans):
                plan.refresh(state.session.store)
                executed |= {s.key for s in plan.stages if not s.cached}
                run_ids.append(_run_pipeline(state.session, study_obj, study_id, i, plan))
    except KeyboardInterrupt:
        error(kept())
        raise SystemExit(130) from None
    return run_ids, len(executed)


def _run_pipeline(
    session: Any, study_obj: Any, study_id: str, i: int, plan: Any
) -> tuple[str, str, str]:
    """Run (or find cached) one pipeline of the study and publish it if it asks to."""
    from srlm_harness.cli.console import RichReporter, console, esc
    from srlm_harness.cli.views import publish_from_spec
    from srlm_harness.pipeline.runner import Runner

    console.rule(f"[bold]{esc(plan.pipeline.name)}[/] on {esc(plan.model.ref)}")
    runner = Runner(session, plan, RichReporter())
    seed = f"-s{plan.pipeline.seed}" if study_obj.spec.seeds else ""
    manifest = runner.execute(f"{study_id}-{i:02d}-{_slug(plan.pipeline.name)}{seed}")
    label = plan.pipeline.name
    if seed and plan.stages:
        label += f" (seed {plan.pipeline.seed})"
    if plan.pipeline.publish:
        publish_from_spec(session, manifest, plan.pipeline.publish)
    return plan.model.ref, label, manifest["run_id"]


def _report(
    session: Any, study_obj: Any, study_id: str, run_ids: list[Any], counts: dict[str, int],
    command: str,
) -> None:
    """Write the study's report and record into its folder and show the report."""
    from rich.markdown import Markdown

    from srlm_harness.cli.console import console, esc
    from srlm_harness.study.report import load_results, write_report

    folder = session.store.root / "studies" / study_id
    files = write_report(folder, study_obj.name, load_results(session.store, run_ids), counts)
    _record(session, folder, study_obj, run_ids, command)
    report = files["report"].read_text(encoding="utf-8")
    console.print(Markdown(report) if console.is_terminal else report, markup=False)
    console.print(
        f"[bold green]study complete[/]: {esc(str(files['report']))}, {esc(str(files['plot']))}"
    )


def _record(session: Any, folder: Any, study_obj: Any, run_ids: Any, command: str) -> None:
    """Statistics, commands, hardware, timings and findings; a copy in the study's board."""
    from srlm_harness.cli.views import publish_target
    from srlm_harness.leaderboard.board import board_path
    from srlm_harness.study.record import record_study

    board = None
    if study_obj.spec.publish:
        target, _, is_board = publish_target(study_obj.spec.publish, session.registry)
        board = board_path(target) if is_board else None
    manifests = [session.store.run_manifest(run_id) for _, _, run_id in run_ids]
    record_study(
        folder, study_obj.name, manifests, study_obj.spec.unstable_spread, command, board
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:40] or "x"


@click.command("study-stats")
@click.argument("board", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--check", is_flag=True, help="Compare with the board's study.json; exit 1 on a difference."
)
def study_stats(board: str, check: bool) -> None:
    """Recompute a published study's table (intervals, paired tests, seeds) from the board's
    entries and committed per-sample logs."""
    from srlm_harness.api import UserError
    from srlm_harness.cli.console import console
    from srlm_harness.study.record import STUDY_FILE, board_analysis, differences
    from srlm_harness.study.table import markdown_table

    folder = Path(board)
    path = folder / STUDY_FILE
    if not path.is_file():
        raise UserError(
            f"no {STUDY_FILE} in this board",
            str(folder),
            "publish a study to it: a study spec with publish: leaderboards/NAME",
        )
    record = json.loads(path.read_text(encoding="utf-8"))
    fresh = board_analysis(folder, record["finals"], record["unstable_spread"])
    console.print(markdown_table(fresh), markup=False)
    if check:
        problems = differences(record["table"], fresh)
        for line in problems:
            console.print(f"{path}: {line}", markup=False)
        if problems:
            raise SystemExit(1)
        console.print(f"{path}: every number matches the sample logs", markup=False)
