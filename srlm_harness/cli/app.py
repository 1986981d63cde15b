"""The ``srlm-harness`` command line: ``create_cli()`` builds the command group, ``main()``
runs it inside the one error boundary. Heavy libraries load only when a command needs them.

Nothing here is module-level state: each ``create_cli()`` builds a fresh group with the
built-in commands and the commands of the plugins loaded for that invocation, so two
invocations in one process see exactly the commands each asked for.
"""

from __future__ import annotations

import importlib
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import click

from srlm_harness import __version__
from srlm_harness.cli.state import PROG, Invocation, State
from srlm_harness.errors import UserError

#: The built-in command groups, each the ``(module, attribute)`` of a click command. An
#: import error in one of them is a bug and surfaces as one: no command vanishes quietly.
BUILTIN_COMMANDS = (
    ("srlm_harness.cli.pipeline_commands", "COMMANDS"),
    ("srlm_harness.cli.listings", "COMMANDS"),
    ("srlm_harness.cli.leaderboard", "leaderboard"),
    ("srlm_harness.cli.study", "study"),
    ("srlm_harness.cli.study", "study_stats"),
    ("srlm_harness.cli.scaffold", "new_plugin"),
    ("srlm_harness.cli.recipes", "recipes"),
    ("srlm_harness.cli.store", "store"),
)

_ROOT_OPTIONS = (
    click.version_option(__version__, "--version", prog_name=PROG),
    click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors."),
    click.option(
        "--verbose",
        "-v",
        is_flag=True,
        help="Show the libraries' own progress bars and warnings (else kept in the run's log).",
    ),
    click.option(
        "--plugin",
        "plugin_paths",
        multiple=True,
        metavar="MODULE",
        help="Load a plugin module that is not installed as a package (repeatable).",
    ),
    click.option("--disable", multiple=True, metavar="NAME", help="Do not load this plugin."),
    click.option(
        "--store",
        type=click.Path(file_okay=False),
        envvar="SRLM_HARNESS_STORE",
        help="Artifact store folder [default: ./runs; env SRLM_HARNESS_STORE].",
    ),
)


def _root_group(invocation: Invocation) -> click.Group:
    """The main command, its options and help, without subcommands."""

    def callback(
        debug: bool,
        verbose: bool,
        plugin_paths: tuple[str, ...],
        disable: tuple[str, ...],
        store: str | None,
    ) -> None:
        """Train and evaluate small reasoning language models with any composition of SFT,
        distillation and GRPO; cache every stage; publish trustworthy leaderboard entries."""
        state = State(plugin_paths, disable, store, debug, verbose, invocation)
        click.get_current_context().obj = state

    for option in reversed(_ROOT_OPTIONS):
        callback = option(callback)
    settings = {"help_option_names": ["-h", "--help"]}
    return click.group(name=PROG, context_settings=settings)(callback)


def builtin_commands() -> list[click.Command]:
    """The built-in commands and command groups, imported now (an import error is raised)."""
    commands: list[click.Command] = []
    for module, name in BUILTIN_COMMANDS:
        found = getattr(importlib.import_module(module), name)
        commands += found if isinstance(found, tuple) else [found]
    return commands


def _prescan(argv: Sequence[str], flag: str) -> list[str]:
    """The values of ``flag`` in ``argv``, before click parses it."""
    values = []
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(flag + "="):
            values.append(arg.split("=", 1)[1])
    return values


def _add_plugin_commands(cli: click.Group, plugins: Any) -> None:
    """Each plugin's ``srlm_register_commands``; one that raises is reported as broken."""
    for impl in plugins.hook.srlm_register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as exc:  # noqa: BLE001 - reported like any broken plugin
            plugins.fail(impl.plugin_name, f"srlm_register_commands raised {exc!r}")


def create_cli(
    argv: Sequence[str] = (), *, plugins: Any = None, started: float | None = None
) -> click.Group:
    """A fresh ``srlm-harness`` group: the built-in commands, then the commands of the
    plugins (``plugins``, else those loaded as ``argv``'s ``--plugin``/``--disable`` ask;
    they must be known before click parses the arguments)."""
    if plugins is None:
        from srlm_harness.plugin_system.manager import load_plugins

        plugins = load_plugins(_prescan(argv, "--plugin"), _prescan(argv, "--disable"))
    cli = _root_group(Invocation(tuple(argv), started, plugins))
    for command in builtin_commands():
        cli.add_command(command)
    _add_plugin_commands(cli, plugins)
    return cli


# --------------------------------------------------------------------------- the error boundary


def _click_error(exc: click.ClickException, argv: Sequence[str]) -> int:
    if type(exc).__name__ == "NoArgsIsHelpError":  # click >= 8.2: a group given no command
        click.echo(exc.format_message())
        return 0
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else PROG
    hint = f"see {where} --help" if isinstance(exc, click.UsageError) else None
    _print_error(str(UserError(exc.format_message().rstrip("."), where, hint)))
    return exc.exit_code


def _interrupted(exc: BaseException, argv: Sequence[str]) -> int:
    # click turns Ctrl-C outside a run into Abort; a run reports what it kept itself.
    command = shlex.join([PROG, *argv])
    _print_error(f"interrupted; finished stages are kept — run `{command}` again to resume")
    return 130


def _user_error(exc: BaseException, argv: Sequence[str]) -> int:
    _print_error(str(exc))
    return 2


def _internal_error(exc: BaseException, argv: Sequence[str]) -> int:
    from srlm_harness.pipeline.runner import StageFailed

    if isinstance(exc, StageFailed):
        where = f" (traceback: {exc.log})" if exc.log else ""
        _print_error(f"{exc}{where}")
    else:
        text = " ".join(str(exc).split())
        _print_error(
            f"internal error: {type(exc).__name__}: {text} (run with --debug for details)"
        )
    return 1


def _print_error(message: str) -> None:
    from srlm_harness.cli.console import error

    error(message)


#: What each kind of failure prints and the exit code it gives, first match wins.
_HANDLERS: tuple[tuple[type[BaseException], Callable[[Any, Sequence[str]], int]], ...] = (
    (click.exceptions.Exit, lambda exc, argv: exc.exit_code),
    (click.ClickException, _click_error),
    (click.exceptions.Abort, _interrupted),
    (KeyboardInterrupt, _interrupted),
    (UserError, _user_error),
    (Exception, _internal_error),
)
#: Never a traceback, even with ``--debug``: they are the person's doing, not the code's.
_NO_TRACEBACK = (
    click.exceptions.Exit, click.ClickException, click.exceptions.Abort, KeyboardInterrupt
)


def report_error(exc: BaseException, argv: Sequence[str]) -> int:
    """Print ``exc`` in the one error format (``error: WHERE: WHAT (HINT)`` on stderr) and
    return the exit code: 2 a user error, 130 an interrupt, 1 anything else."""
    for kind, handler in _HANDLERS:
        if isinstance(exc, kind):
            return handler(exc, argv)
    raise exc


def main(argv: Sequence[str] | None = None) -> None:
    """The ``srlm-harness`` console script: build the CLI, run it, turn errors into one
    line and an exit code (with ``--debug``, user and internal errors show a traceback)."""
    started = time.monotonic()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = create_cli(args, started=started).main(
            args=args, prog_name=PROG, standalone_mode=False
        )
    except (Exception, KeyboardInterrupt) as exc:
        if "--debug" in args and not isinstance(exc, _NO_TRACEBACK):
            raise
        code = report_error(exc, args)
    if isinstance(code, int) and code:
        sys.exit(code)
