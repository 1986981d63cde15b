"""The ``srlm-harness`` command line. Heavy libraries load only when a command needs them."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click

from srlm_harness import __version__
from srlm_harness.api import UserError
from srlm_harness.cli.options import (
    complete_spec,
    json_option,
    limit_option,
    report_option,
    split_names,
    trackers,
)


class State:
    """Per-invocation options; the session (plugins, registries, store) loads on demand."""

    def __init__(
        self,
        plugins: tuple[str, ...],
        disable: tuple[str, ...],
        store: str | None,
        debug: bool,
        verbose: bool = False,
    ) -> None:
        self.plugin_paths, self.disable, self.store_root, self.debug = (
            plugins,
            disable,
            store,
            debug,
        )
        self.verbose = verbose
        self._session: Any = None

    @property
    def command(self) -> str:
        """This invocation as a command a person can paste (to resume an interrupted run)."""
        return shlex.join(["srlm-harness", *_PRELOADED.get("argv", [])])

    def execute(self, plan: Any, run_id: str | None, trackers: list[str] | None = None) -> Any:
        import os

        from srlm_harness.cli import views
        from srlm_harness.pipeline import tracking
        saved = os.environ.get(tracking.ENV)
        if trackers:
            os.environ[tracking.ENV] = ",".join(trackers)
        try:
            return views.execute_and_report(
                self.session,
                plan,
                run_id,
                verbose=self.verbose,
                command=self.command,
                started=_PRELOADED.get("started"),
            )
        finally:
            if saved is None:
                os.environ.pop(tracking.ENV, None)
            else:
                os.environ[tracking.ENV] = saved

    @property
    def session(self) -> Any:
        if self._session is None:
            from srlm_harness.pipeline.session import Session

            self._session = Session.load(
                self.plugin_paths, self.disable, self.store_root, plugins=_PRELOADED.get("plugins")
            )
        return self._session

    def report_broken(self) -> list[Any]:
        from srlm_harness.cli.console import warn

        broken = self.session.plugins.broken
        for info in broken:
            warn(f"plugin '{info.name}' ({info.module}) {info.error}")
        return broken

    def require_healthy(self) -> None:
        """Runs refuse to start with a broken plugin: results must be reproducible."""
        # Touch every table so hooks that raise during registration are found now.
        self.session.registry.all_tables()
        broken = self.report_broken()
        if broken:
            names = ", ".join(info.name for info in broken)
            raise UserError(
                f"refusing to run with broken plugin(s): {names}",
                "plugins",
                "fix them, or leave them out with --disable NAME",
            )


_PRELOADED: dict[str, Any] = {}


pass_state = click.make_pass_decorator(State)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="srlm-harness")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Show the libraries' own progress bars and warnings (else kept in the run's log).",
)
@click.option(
    "--plugin",
    "plugin_paths",
    multiple=True,
    metavar="MODULE",
    help="Load a plugin module that is not installed as a package (repeatable).",
)
@click.option("--disable", multiple=True, metavar="NAME", help="Do not load this plugin.")
@click.option(
    "--store",
    type=click.Path(file_okay=False),
    envvar="SRLM_HARNESS_STORE",
    help="Artifact store folder [default: ./runs; env SRLM_HARNESS_STORE].",
)
@click.pass_context
def cli(
    ctx: click.Context,
    debug: bool,
    verbose: bool,
    plugin_paths: tuple[str, ...],
    disable: tuple[str, ...],
    store: str | None,
) -> None:
    """Train and evaluate small reasoning language models with any composition of SFT,
    distillation and GRPO; cache every stage; publish trustworthy leaderboard entries."""
    ctx.obj = State(plugin_paths, disable, store, debug, verbose)


# --------------------------------------------------------------------------- run / plan / eval


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
        click.option(
            "-o",
            "--override",
            "overrides",
            multiple=True,
            metavar="PATH=VALUE",
            help="Override a key: stage.key=value, seed=1, evaluate.limit=5 ...",
        ),
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


def spec_file(spec: str | None) -> str | None:
    """A spec path as given, or the file of a shipped recipe named so (``smollm2-cpu/sft``)."""
    if spec is None or Path(spec).exists():
        return spec
    from srlm_harness import recipes
    if spec.removesuffix(".yaml") in recipes.names():
        return str(recipes.path(spec))
    return spec


def default_recipe() -> Path:
    """The quick-start pipeline that ``srlm-harness run`` runs with no arguments."""
    from srlm_harness import recipes
    return recipes.path("quickstart")


@cli.command()
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


@cli.command()
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
        views.publish_target(plan.pipeline.publish)


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


@cli.command()
@pipeline_options
@pass_state
def config(state: State, **flags: Any) -> None:
    """Print the fully resolved spec (defaults filled in, overrides applied) as YAML."""
    click.echo(resolved_yaml(build_plan(state, **flags)), nl=False)


@cli.command("eval")
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
@click.option(
    "-o",
    "--override",
    "overrides",
    multiple=True,
    metavar="PATH=VALUE",
    help="e.g. evaluate.options.num_fewshot=0, seed=1",
)
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


# --------------------------------------------------------------------------- listings


@cli.command()
@json_option
@pass_state
def plugins(state: State, as_json: bool) -> None:
    """List loaded plugins: name, version, hooks and where each came from."""
    from srlm_harness.cli import views
    state.session.registry.all_tables()
    if as_json:
        views.print_json(views.plugins_data(state.session.plugins))
    else:
        views.show_plugins(state.session.plugins)
    state.report_broken()


def _listing(kind: str, help_text: str) -> None:
    @cli.command(kind, help=help_text)
    @click.argument("name", required=False)
    @json_option
    @pass_state
    def command(state: State, name: str | None, as_json: bool) -> None:
        from srlm_harness.cli import views
        table = getattr(state.session.registry, kind)
        state.report_broken()
        if as_json:
            views.print_json(views.table_data(kind, table, name))
        else:
            views.show_table(kind, table, name)


_listing("stages", "List training stages and their options (or one stage's, with NAME).")
_listing("tasks", "List registered evaluation tasks (lm-eval built-in names work too).")
_listing("rewards", "List reward functions for RL stages.")
_listing("datasets", "List dataset sources and their options.")


@cli.group()
def runs() -> None:
    """Inspect runs in the store."""


@runs.command("list")
@json_option
@pass_state
def runs_list(state: State, as_json: bool) -> None:
    """List runs, newest last."""
    from srlm_harness.cli import views
    if as_json:
        views.print_json(views.runs_data(state.session.store))
    else:
        views.show_runs(state.session.store)


@runs.command("show")
@click.argument("run_id")
@json_option
@pass_state
def runs_show(state: State, run_id: str, as_json: bool) -> None:
    """Show one run's steps, timings, scores and the paths of its models, results and
    sample logs."""
    from srlm_harness.cli import views
    manifest = state.session.store.run_manifest(run_id)
    if as_json:
        views.print_json(views.run_data(manifest))
    else:
        views.show_run(manifest)


# --------------------------------------------------------------------------- entry point


def _prescan(argv: list[str], flag: str) -> list[str]:
    values = []
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(flag + "="):
            values.append(arg.split("=", 1)[1])
    return values


def _add_plugin_commands(argv: list[str]) -> None:
    """Plugins may add commands; they must be known before click parses the arguments."""
    from srlm_harness.plugin_system.manager import load_plugins

    plugins = load_plugins(_prescan(argv, "--plugin"), _prescan(argv, "--disable"))
    _PRELOADED["plugins"] = plugins
    for impl in plugins.hook.srlm_register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as exc:  # noqa: BLE001 - reported like any broken plugin
            plugins.fail(impl.plugin_name, f"srlm_register_commands raised {exc!r}")


def _attach_builtin_groups() -> None:
    import importlib

    for module, name in (
        ("srlm_harness.cli.leaderboard", "leaderboard"),
        ("srlm_harness.cli.study", "study"),
        ("srlm_harness.study.record", "study_stats"),
        ("srlm_harness.cli.scaffold", "new_plugin"),
        ("srlm_harness.cli.recipes", "recipes"),
        ("srlm_harness.cli.store", "store"),
    ):
        try:
            cli.add_command(getattr(importlib.import_module(module), name))
        except ImportError:
            pass


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    argv = list(sys.argv[1:] if argv is None else argv)
    _PRELOADED.update(argv=argv, started=started)
    debug = "--debug" in argv
    try:
        _attach_builtin_groups()
        _add_plugin_commands(argv)
        code = cli.main(args=argv, prog_name="srlm-harness", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        from srlm_harness.cli.console import error

        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see {exc.ctx.command_path} --help)"
        else:
            hint = ""
        error(f"{exc.format_message()}{hint}")
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        # click turns Ctrl-C outside a run into Abort; a run reports what it kept itself.
        from srlm_harness.cli.console import error

        command = shlex.join(["srlm-harness", *argv])
        error(f"interrupted; finished stages are kept — run `{command}` again to resume")
        sys.exit(130)
    except UserError as exc:
        if debug:
            raise
        from srlm_harness.cli.console import error

        error(str(exc))
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - one line unless --debug
        if debug:
            raise
        from srlm_harness.cli.console import error
        from srlm_harness.pipeline.runner import StageFailed

        if isinstance(exc, StageFailed):
            where = f" (traceback: {exc.log})" if exc.log else ""
            error(f"{exc}{where}")
        else:
            text = " ".join(str(exc).split())
            error(f"internal error: {type(exc).__name__}: {text} (run with --debug for details)")
        sys.exit(1)
