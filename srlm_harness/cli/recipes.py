"""``srlm-harness recipes``: the pipelines and studies shipped in the package, listed and
copied out to edit (like ``tune ls`` / ``tune cp``)."""

from __future__ import annotations

import shlex

import click

from srlm_harness.cli.options import json_option


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def recipes(ctx: click.Context, as_json: bool) -> None:
    """List the recipes shipped with the harness (pipelines and studies to run or copy).

    Any command that takes a SPEC file also takes a recipe NAME."""
    if ctx.invoked_subcommand is not None:
        return
    from srlm_harness import recipes as shipped
    from srlm_harness.cli import views
    rows = [{"name": n, "description": shipped.description(n)} for n in shipped.names()]
    if as_json:
        views.print_json(rows)
    else:
        views.show_recipes(rows)


@recipes.command("copy")
@click.argument("name")
@click.argument("dest", required=False, type=click.Path())
def recipes_copy(name: str, dest: str | None) -> None:
    """Write recipe NAME to DEST (a file or folder; default: ./NAME.yaml) to edit."""
    from srlm_harness import recipes as shipped
    target = shipped.copy(name, dest)
    click.echo(f"wrote {target} (plan it with: srlm-harness plan {shlex.quote(str(target))})")
