"""The ``srlm-harness`` command line. Heavy libraries load only when a command needs them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from srlm_harness import __version__
from srlm_harness.api import UserError


class State:
    """Per-invocation options; the session (plugins, registries, store) loads on demand."""

    def __init__(
        self, plugins: tuple[str, ...], disable: tuple[str, ...], store: str | None, debug: bool
    ) -> None:
        self.plugin_paths, self.disable, self.store_root, self.debug = (
            plugins,
            disable,
            store,
            debug,
        )
        self._session: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            from srlm_harness.session import Session

            self._session = Session.load(
                self.plugin_paths, self.disable, self.store_root, plugins=_PRELOADED.get("plugins")
            )
        return self._session

    def report_broken(self) -> list[Any]:
        from srlm_harness.console import warn

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
    plugin_paths: tuple[str, ...],
    disable: tuple[str, ...],
    store: str | None,
) -> None:
    """Train and evaluate small reasoning language models with any composition of SFT,
    distillation and GRPO; cache every stage; publish trustworthy leaderboard entries."""
    ctx.obj = State(plugin_paths, disable, store, debug)


# --------------------------------------------------------------------------- run / plan / eval


def pipeline_options(func: Any) -> Any:
    options = [
        click.argument("spec", required=False, type=click.Path(dir_okay=False)),
        click.option("--model", help="Model reference: Hub id, local dir or .gguf file."),
        click.option(
            "--stage",
            "stages",
            multiple=True,
            metavar="NAME",
            help="Add a stage (repeatable, in order).",
        ),
        click.option(
            "--eval",
            "tasks",
            multiple=True,
            metavar="TASK",
            help="Evaluate on this task (repeatable).",
        ),
        click.option("--limit", type=int, help="Evaluate on the first N samples per task."),
        click.option(
            "-o",
            "--override",
            "overrides",
            multiple=True,
            metavar="PATH=VALUE",
            help="Override a key: stage.key=value, seed=1, evaluate.limit=5 ...",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_plan(
    state: State,
    spec: str | None,
    model: str | None,
    stages: tuple[str, ...],
    tasks: tuple[str, ...],
    limit: int | None,
    overrides: tuple[str, ...],
) -> Any:
    from srlm_harness import hardware
    from srlm_harness.plan import make_plan
    from srlm_harness.spec import load_pipeline

    session = state.session
    state.require_healthy()
    if spec is None and model is None and not stages:
        spec = str(default_recipe())
    pipeline = load_pipeline(session.registry, spec, model, stages, tasks, limit, overrides)
    hw = hardware.detect(pipeline.hardware)
    return make_plan(pipeline, session.registry, hw, session.store, session.plugin_versions())


def _is_study(spec: str) -> bool:
    """A study spec names ``models`` and ``pipelines`` or a ``grid`` instead of one pipeline."""
    from srlm_harness.spec import load_yaml

    try:
        raw, _ = load_yaml(Path(spec))  # guarded against alias bombs, unlike yaml.safe_load
    except UserError:
        return False  # the pipeline loader reports it properly
    return isinstance(raw, dict) and ("pipelines" in raw or "grid" in raw or "models" in raw)


def default_recipe() -> Path:
    """The quick-start pipeline that ``srlm-harness run`` runs with no arguments."""
    from srlm_harness import recipes

    return recipes.path("quickstart")


@cli.command()
@pipeline_options
@click.option("--dry-run", is_flag=True, help="Show the plan and stop.")
@click.option("--run-id", help="Name this run (default: timestamp + random suffix).")
@pass_state
def run(state: State, dry_run: bool, run_id: str | None, **flags: Any) -> None:
    """Run a pipeline from SPEC (YAML) and/or flags; with no arguments, the quick start."""
    from srlm_harness import views

    if run_id is not None:
        state.session.store.check_new_run_id(run_id)
    plan = build_plan(state, **flags)
    views.show_plan(plan, state.session.store)
    if dry_run:
        return
    views.execute_and_report(state.session, plan, run_id)


@cli.command()
@pipeline_options
@pass_state
def plan(state: State, **flags: Any) -> None:
    """Show the ordered steps of a pipeline (or the tree of a study), each with its cache
    key and cache state."""
    from srlm_harness import views

    spec = flags["spec"]
    if spec is not None and _is_study(spec):
        from srlm_harness.study_cli import study

        click.get_current_context().invoke(
            study, spec=spec, dry_run=True, overrides=flags["overrides"]
        )
        return
    views.show_plan(build_plan(state, **flags), state.session.store)


@cli.command("eval")
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
@click.option("--limit", type=int, help="Evaluate on the first N samples per task.")
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
    limit: int | None,
    overrides: tuple[str, ...],
    run_id: str | None,
) -> None:
    """Evaluate MODEL (Hub id, directory or .gguf) on TASKS."""
    from srlm_harness import views

    names = tuple(t.strip() for item in tasks for t in item.split(",") if t.strip())
    if run_id is not None:
        state.session.store.check_new_run_id(run_id)
    plan = build_plan(state, None, model, (), names, limit, overrides)
    views.execute_and_report(state.session, plan, run_id)


# --------------------------------------------------------------------------- listings


@cli.command()
@pass_state
def plugins(state: State) -> None:
    """List loaded plugins: name, version, hooks and where each came from."""
    from srlm_harness import views

    state.session.registry.all_tables()
    views.show_plugins(state.session.plugins)
    state.report_broken()


def _listing(kind: str, help_text: str) -> None:
    @cli.command(kind, help=help_text)
    @click.argument("name", required=False)
    @pass_state
    def command(state: State, name: str | None) -> None:
        from srlm_harness import views

        table = getattr(state.session.registry, kind)
        state.report_broken()
        views.show_table(kind, table, name)


_listing("stages", "List training stages and their options (or one stage's, with NAME).")
_listing("tasks", "List registered evaluation tasks (lm-eval built-in names work too).")
_listing("rewards", "List reward functions for RL stages.")
_listing("datasets", "List dataset sources and their options.")


@cli.group()
def runs() -> None:
    """Inspect runs in the store."""


@runs.command("list")
@pass_state
def runs_list(state: State) -> None:
    """List runs, newest last."""
    from srlm_harness import views

    views.show_runs(state.session.store)


@runs.command("show")
@click.argument("run_id")
@pass_state
def runs_show(state: State, run_id: str) -> None:
    """Show one run's steps, timings and scores."""
    from srlm_harness import views

    views.show_run(state.session.store.run_manifest(run_id))


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
    from srlm_harness.plugins import load_plugins

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
        ("srlm_harness.leaderboard_cli", "leaderboard"),
        ("srlm_harness.study_cli", "study"),
        ("srlm_harness.store_cli", "store"),
    ):
        try:
            cli.add_command(getattr(importlib.import_module(module), name))
        except ImportError:
            pass


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
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
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        from srlm_harness.console import error

        error("interrupted; finished stages are kept — run the same command again to resume")
        sys.exit(130)
    except UserError as exc:
        if debug:
            raise
        from srlm_harness.console import error

        error(str(exc))
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - one line unless --debug
        if debug:
            raise
        from srlm_harness.console import error
        from srlm_harness.run import StageFailed

        if isinstance(exc, StageFailed):
            where = f" (traceback: {exc.log})" if exc.log else ""
            error(f"{exc}{where}")
        else:
            text = " ".join(str(exc).split())
            error(f"internal error: {type(exc).__name__}: {text} (run with --debug for details)")
        sys.exit(1)
