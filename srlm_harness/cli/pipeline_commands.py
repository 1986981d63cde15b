"""``run``, ``plan``, ``config`` and ``eval``: the commands that build a pipeline's plan from a
SPEC and flags, show it, and run it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from srlm_harness.cli.options import (
    complete_spec,
    json_option,
    limit_option,
    override_option,
    report_option,
    spec_file,
    split_names,
    trackers,
)
from srlm_harness.cli.state import State, pass_state
from srlm_harness.errors import UserError


def pipeline_options(func: Any) -> Any:
    options = [
        click.argument(
            "spec",
            required=False,
            type=click.Path(dir_okay=False),
            shell_complete=complete_spec,
        ),
        click.option("--model", help="Model reference: Hub id, local dir or .gguf file."),
        click.option(
            "--stage",
            "stages",
            multiple=True,
            metavar="NAME",
            help="Add a stage (repeatable, in order).",
        ),
        click.option(
            "--tasks",
            "--eval",
            "-t",
            "tasks",
            multiple=True,
            metavar="TASK",
            help="Evaluate on these tasks (repeatable or comma-separated; --eval is an alias).",
        ),
        limit_option,
        override_option("Override a key: stage.key=value, seed=1, evaluate.limit=5 ..."),
        *LAUNCH_OPTIONS,
    ]
    for option in reversed(options):
        func = option(func)
    return func


#: ``--launcher accelerate --num-processes N ...``: the spec's ``launch:`` keys as flags.
LAUNCH_FLAGS = {
    "launcher": "engine",
    "num_processes": "num_processes",
    "launch_config": "config_file",
    "num_machines": "num_machines",
    "machine_rank": "machine_rank",
    "main_process_ip": "main_process_ip",
    "main_process_port": "main_process_port",
}
LAUNCH_OPTIONS = [
    click.option("--launcher", metavar="ENGINE",
                 help="inprocess (default) or accelerate: run stages as several processes."),
    click.option("--num-processes", type=int, help="Processes for --launcher accelerate."),
    click.option("--launch-config", metavar="FILE",
                 help="An accelerate config file (FSDP, DeepSpeed; see recipes/launch/)."),
    click.option("--num-machines", type=int, help="Machines (multi-node; as accelerate)."),
    click.option("--machine-rank", type=int, help="This machine's rank (multi-node)."),
    click.option("--main-process-ip", help="Rank 0's address (multi-node)."),
    click.option("--main-process-port", type=int, help="Rank 0's port (multi-node)."),
]


def launch_overrides(flags: dict[str, Any]) -> tuple[str, ...]:
    """``-o launch.KEY=VALUE`` overrides for the launch flags that were given."""
    return tuple(f"launch.{LAUNCH_FLAGS[k]}={v}" for k, v in flags.items()
                 if k in LAUNCH_FLAGS and v is not None)


def build_plan(
    state: State,
    spec: str | None,
    model: str | None,
    stages: tuple[str, ...],
    tasks: tuple[str, ...],
    limit: float | None,
    overrides: tuple[str, ...],
    **launch: Any,
) -> Any:
    from srlm_harness.pipeline import hardware
    from srlm_harness.pipeline.plan import make_plan
    from srlm_harness.pipeline.spec import load_pipeline

    session = state.session
    state.require_healthy()
    if spec is None and model is None and not stages:
        spec = str(default_recipe())
    overrides = (*overrides, *launch_overrides(launch))
    spec = spec_file(spec)
    tasks = split_names(tasks)
    pipeline = load_pipeline(session.registry, spec, model, stages, tasks, limit, overrides)
    hw = hardware.detect(pipeline.hardware)
    return make_plan(pipeline, session.registry, hw, session.store, session.plugin_versions())


def _is_study(spec: str) -> bool:
    """A study spec names ``models`` and ``pipelines`` or a ``grid`` instead of one pipeline."""
    from srlm_harness.pipeline.spec import load_yaml

    try:
        raw, _ = load_yaml(Path(spec))  # guarded against alias bombs, unlike yaml.safe_load
    except UserError:
        return False  # the pipeline loader reports it properly
    return isinstance(raw, dict) and ("pipelines" in raw or "grid" in raw or "models" in raw)


def default_recipe() -> Path:
    """The quick-start pipeline that ``srlm-harness run`` runs with no arguments."""
    from srlm_harness import recipes
    return recipes.path("quickstart")


@click.command()
@pipeline_options
@click.option("--dry-run", is_flag=True, help="Show the plan and stop.")
@click.option("--run-id", help="Name this run (default: timestamp + random suffix).")
@report_option
@pass_state
def run(
    state: State, dry_run: bool, run_id: str | None, report_to: tuple[str, ...], **flags: Any
) -> None:
    """Run a pipeline from SPEC (YAML) and/or flags; with no arguments, the quick start."""
    from srlm_harness.cli import views
    names = trackers(report_to)
    if run_id is not None:
        state.session.store.check_new_run_id(run_id)
    plan = build_plan(state, **flags)
    if dry_run:
        check_plan(state, plan)
    views.show_plan(plan, state.session.store)
    if dry_run:
        return
    state.execute(plan, run_id, names)


@click.command()
@pipeline_options
@json_option
@click.option("--resolved", is_flag=True, help="Print the fully resolved spec as YAML.")
@pass_state
def plan(state: State, as_json: bool, resolved: bool, **flags: Any) -> None:
    """Show the ordered steps of a pipeline (or the tree of a study), each with its cache
    key and cache state."""
    from srlm_harness.cli import views
    spec = flags["spec"] = spec_file(flags["spec"])
    if spec is not None and _is_study(spec):
        if resolved:
            raise UserError(
                "--resolved prints one pipeline; this spec is a study",
                spec,
                "leave --resolved out to see the study's tree",
            )
        if as_json:
            views.print_json(study_data(state, spec, flags["overrides"]))
            return
        from srlm_harness.cli.study import study

        click.get_current_context().invoke(
            study, spec=spec, dry_run=True, overrides=flags["overrides"]
        )
        return
    the_plan = build_plan(state, **flags)
    if resolved:
        click.echo(resolved_yaml(the_plan), nl=False)
        return
    check_plan(state, the_plan)
    if as_json:
        views.print_json(views.plan_data(the_plan, state.session.store))
    else:
        views.show_plan(the_plan, state.session.store)


def check_plan(state: State, plan: Any) -> None:
    """What ``run`` checks before its first step (stage preflights, the publish target)."""
    from srlm_harness.cli import views
    from srlm_harness.pipeline import runner as run
    run.check_plan(state.session, plan)
    if plan.pipeline.publish:
        views.publish_target(plan.pipeline.publish, state.session.registry)


def launch_options(func: Any) -> Any:
    for option in reversed(LAUNCH_OPTIONS):
        func = option(func)
    return func


def study_data(state: State, spec: str, overrides: tuple[str, ...]) -> dict[str, Any]:
    from srlm_harness.cli import views
    from srlm_harness.pipeline import hardware
    from srlm_harness.study.spec import load_study

    session = state.session
    state.require_healthy()
    found = load_study(
        spec, session.registry, hardware.detect, session.store, session.plugin_versions(), overrides
    )
    unique = found.unique_stages()
    return {
        "study": found.name,
        "source": str(found.source),
        "unique_stages": len(unique),
        "cached": sum(step.cached for step in unique.values()),
        "pipelines": [views.plan_data(plan, session.store) for plan in found.plans],
    }


def resolved_yaml(the_plan: Any) -> str:
    import yaml

    return str(yaml.safe_dump(the_plan.pipeline.as_dict(), sort_keys=False, allow_unicode=True))


@click.command()
@pipeline_options
@pass_state
def config(state: State, **flags: Any) -> None:
    """Print the fully resolved spec (defaults filled in, overrides applied) as YAML."""
    click.echo(resolved_yaml(build_plan(state, **flags)), nl=False)


@click.command("eval")
@launch_options
@click.argument("model")
@click.option(
    "--tasks",
    "-t",
    "tasks",
    multiple=True,
    required=True,
    metavar="TASK",
    help="Task names (repeatable or comma-separated).",
)
@limit_option
@override_option("e.g. evaluate.options.num_fewshot=0, seed=1")
@click.option("--run-id", help="Name this run.")
@pass_state
def eval_command(
    state: State,
    model: str,
    tasks: tuple[str, ...],
    limit: float | None,
    overrides: tuple[str, ...],
    run_id: str | None,
    **launch: Any,
) -> None:
    """Evaluate MODEL (Hub id, directory or .gguf) on TASKS."""
    if run_id is not None:
        state.session.store.check_new_run_id(run_id)
    plan = build_plan(state, None, model, (), tasks, limit, overrides, **launch)
    state.execute(plan, run_id)


COMMANDS = (run, plan, config, eval_command)
