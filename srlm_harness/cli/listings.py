"""The listings: ``plugins``, ``stages``, ``tasks``, ``rewards``, ``datasets`` and ``runs``."""

from __future__ import annotations

import click

from srlm_harness.cli.options import json_option
from srlm_harness.cli.state import State, pass_state


@click.command()
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


def _listing(kind: str, help_text: str) -> click.Command:
    """``srlm-harness KIND [NAME]``: one registry table, or one entry of it."""

    @click.command(kind, help=help_text)
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

    return command


TABLES = (
    _listing("stages", "List training stages and their options (or one stage's, with NAME)."),
    _listing("tasks", "List registered evaluation tasks (lm-eval built-in names work too)."),
    _listing("rewards", "List reward functions for RL stages."),
    _listing("datasets", "List dataset sources and their options."),
    _listing("verifiers", "List answer verifiers (what tasks and the accuracy reward judge with)."),
)


@click.group()
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


COMMANDS = (plugins, *TABLES, runs)
