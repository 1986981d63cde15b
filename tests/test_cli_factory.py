"""The command line as a factory: every ``create_cli()`` is a fresh group with the built-in
commands and the plugins' commands, and every failure leaves through one error boundary in
one format (``error: WHERE: WHAT (HINT)``) with the usual exit codes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest

from srlm_harness.cli import app

HELLO_PLUGIN = '''
import click

from srlm_harness.api import UserError


def srlm_register_commands(cli):
    @cli.command("hello")
    @click.option("--times", type=int, default=1)
    def hello(times):
        """Say hello."""
        click.echo("hello " * times)

    @cli.command("refuse")
    def refuse():
        """Fail the way a person's mistake fails."""
        raise UserError("no greeting configured", "hello.yaml:3", "add greeting: hi")

    @cli.command("crash")
    def crash():
        """Fail the way a bug fails."""
        raise ZeroDivisionError("deliberate")
'''


@pytest.fixture
def hello(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``--plugin hello_commands``: a plugin module that adds three commands."""
    (tmp_path / "hello_commands.py").write_text(textwrap.dedent(HELLO_PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    return ["--plugin", "hello_commands"]


def test_two_in_process_invocations_see_the_same_commands(hello, harness):
    first = sorted(app.create_cli(hello).commands)
    second = sorted(app.create_cli(hello).commands)
    assert first == second and {"hello", "run", "leaderboard", "study"} <= set(first)
    assert harness(*hello, "hello", "--times", "2") == (0, "hello hello \n", "")
    assert harness(*hello, "hello") == (0, "hello \n", "")
    assert harness("--help")[1] == harness("--help")[1]


def test_a_plugins_commands_do_not_leak_into_the_next_invocation(hello, harness):
    assert "hello" in app.create_cli(hello).commands
    assert "hello" not in app.create_cli([]).commands
    code, _, err = harness("hello")
    assert code == 2
    assert err.strip() == (
        "error: srlm-harness: No such command 'hello' (see srlm-harness --help)"
    )


def test_the_module_keeps_no_mutable_state():
    mutable = [
        name
        for name, value in vars(app).items()
        if not name.startswith("__") and isinstance(value, dict | list | set | click.Command)
    ]
    assert mutable == []


def test_a_user_error_from_any_command_is_one_line_with_exit_code_2(hello, harness):
    code, out, err = harness(*hello, "refuse")
    assert (code, out) == (2, "")
    assert err.strip() == "error: hello.yaml:3: no greeting configured (add greeting: hi)"


def test_click_errors_use_the_same_format(hello, harness):
    code, _, err = harness(*hello, "hello", "--times", "many")
    assert code == 2
    assert err.strip() == (
        "error: srlm-harness hello: Invalid value for '--times': 'many' is not a valid "
        "integer (see srlm-harness hello --help)"
    )


def test_a_group_without_its_command_shows_its_help(harness):
    code, out, err = harness("runs")
    assert (code, err) == (0, "")
    assert out.startswith("Usage: srlm-harness runs [OPTIONS] COMMAND") and "list" in out


def test_a_bug_is_an_internal_error_unless_debug(hello, harness):
    code, _, err = harness(*hello, "crash")
    assert code == 1
    assert err.strip() == (
        "error: internal error: ZeroDivisionError: deliberate (run with --debug for details)"
    )
    with pytest.raises(ZeroDivisionError):
        app.main([*hello, "--debug", "crash"])


def test_an_import_error_in_a_command_module_surfaces(harness, monkeypatch):
    # A module that cannot be imported (None in sys.modules makes the import fail) must not
    # make its command vanish from the CLI: the CLI says so and fails.
    monkeypatch.setitem(sys.modules, "srlm_harness.cli.recipes", None)
    with pytest.raises(ImportError, match="srlm_harness.cli.recipes"):
        app.create_cli([])
    code, _, err = harness("--help")
    assert code == 1
    assert "internal error: ModuleNotFoundError" in err and "srlm_harness.cli.recipes" in err


def test_the_console_script_and_the_package_entry_points():
    version = "srlm-harness, version 0.1.0"
    for entry in ("srlm_harness.cli.app:main", "srlm_harness.cli:main"):  # script, shorthand
        module, function = entry.split(":")
        code = f"import sys, {module}; sys.argv[1:] = ['--version']; {module}.{function}()"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert (done.returncode, done.stdout.strip()) == (0, version), done.stderr
    done = subprocess.run([sys.executable, "-m", "srlm_harness", "--version"],
                          capture_output=True, text=True)
    assert (done.returncode, done.stdout.strip()) == (0, version), done.stderr
