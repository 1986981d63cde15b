"""What one invocation of the command line carries: its arguments, when it started, the
plugins loaded before parsing, and the options of the main command; the session (plugins,
registries, store) loads on demand."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Any

import click

from srlm_harness.errors import UserError

PROG = "srlm-harness"


@dataclass(frozen=True)
class Invocation:
    """The command line as given, its start time, and the plugins loaded to find commands."""

    argv: tuple[str, ...] = ()
    started: float | None = None
    plugins: Any = None

    @property
    def command(self) -> str:
        """This invocation as a command a person can paste (to resume an interrupted run)."""
        return shlex.join([PROG, *self.argv])


class State:
    """Per-invocation options (``ctx.obj`` of the main command)."""

    def __init__(
        self,
        plugins: tuple[str, ...],
        disable: tuple[str, ...],
        store: str | None,
        debug: bool,
        verbose: bool = False,
        invocation: Invocation | None = None,
    ) -> None:
        self.plugin_paths, self.disable, self.store_root = plugins, disable, store
        self.debug, self.verbose = debug, verbose
        self.invocation = invocation or Invocation()
        self._session: Any = None

    @property
    def command(self) -> str:
        """This invocation as a command a person can paste (to resume an interrupted run)."""
        return self.invocation.command

    def execute(self, plan: Any, run_id: str | None, trackers: list[str] | None = None) -> Any:
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
                started=self.invocation.started,
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
                self.plugin_paths, self.disable, self.store_root, plugins=self.invocation.plugins
            )
        return self._session

    def report_broken(self) -> list[Any]:
        from srlm_harness.cli.console import warn

        broken: list[Any] = self.session.plugins.broken
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


pass_state = click.make_pass_decorator(State)
