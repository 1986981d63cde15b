"""``srlm-harness leaderboard ...``: publish runs as entries, validate boards (schema and
tamper checks), show and render them, export entries for Hugging Face model cards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from srlm_harness.api import UserError


def load_manifest(ctx: click.Context, run: str, store: str | None) -> dict[str, Any]:
    """A run's manifest by id, id prefix or run directory, from ``--store`` (this command's,
    else the main command's, else ``$SRLM_HARNESS_STORE`` or ``./runs``)."""
    from srlm_harness.store.store import Store

    return Store(store or getattr(ctx.find_root().obj, "store_root", None)).run_manifest(run)


def _registry(ctx: click.Context) -> Any:
    """The main command's plugin registry when there is one, else the installed plugins'."""
    state = ctx.find_root().obj
    if hasattr(state, "session"):
        return state.session.registry
    from srlm_harness.plugin_system.manager import load_plugins
    from srlm_harness.plugin_system.registry import Registry

    return Registry(load_plugins())


def _root(ctx: click.Context) -> str | None:
    options = ctx.find_object(dict)
    return options.get("leaderboards_root") if options else None


def _board_at(ctx: click.Context, board: str) -> tuple[str, str | None]:
    """(name, root) of a board argument: a name under ``--root`` (or ``leaderboards/NAME``
    as specs write it), or an explicit folder path: absolute, ``./DIR`` or ``~/DIR``. Any
    other path (``../../x``, ``a/b``) stays an invalid name, so nothing lands outside the
    boards root by accident."""
    from srlm_harness.leaderboard.board import board_path

    path = Path(board).expanduser()
    if not board.startswith(("/", "./", "~")):
        try:
            board_path(board, _root(ctx))
        except UserError as exc:
            exc.hint = f"{exc.hint}; or give the board's folder as ./DIR or /abs/DIR"
            raise
        return board, _root(ctx)
    path = path.resolve()
    return path.name, str(path.parent)


@click.group("leaderboard")
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    envvar="SRLM_HARNESS_LEADERBOARDS",
    help="Folder holding the boards (default ./leaderboards).",
)
@click.pass_context
def leaderboard(ctx: click.Context, root: str | None) -> None:
    """Publish, validate, show and render leaderboards of runs."""
    ctx.ensure_object(dict)["leaderboards_root"] = root


@leaderboard.command()
@click.argument("run")
@click.option("--board", "-b", help="Board name (default: the spec's 'publish:' key).")
@click.option(
    "--publisher",
    "-p",
    help="Publisher name (default: the installed board publisher, `folder`).",
)
@click.option("--target", "-t", help="Where non-board publishers write (hf: a path or '-').")
@click.option(
    "--store",
    type=click.Path(file_okay=False),
    help="Run store (default $SRLM_HARNESS_STORE or ./runs).",
)
@click.pass_context
def publish(
    ctx: click.Context,
    run: str,
    board: str | None,
    publisher: str | None,
    target: str | None,
    store: str | None,
) -> None:
    """Publish run RUN (an id, id prefix or run directory) as a leaderboard entry."""
    from srlm_harness.leaderboard.board import publish_run

    registry = _registry(ctx)
    chosen = (registry.publishers.get(publisher, "--publisher") if publisher
              else registry.board_publisher("--publisher"))
    manifest = load_manifest(ctx, run, store)
    store = store or getattr(ctx.find_root().obj, "store_root", None)
    root = _root(ctx)
    if chosen.board:
        target, root = _publish_board(ctx, manifest, board, root)
    elif not target:
        raise UserError(f"publisher {publisher!r} needs --target", "--target")
    published = publish_run(manifest, target, chosen.name, root=root, registry=registry,
                            store=store)
    if published.new:
        click.echo(f"published {manifest.get('run_id')} -> {published.location}")
    else:
        click.echo(
            f"{manifest.get('run_id')}: already on the board (same results) as {published.location}"
        )


def _publish_board(
    ctx: click.Context, manifest: dict[str, Any], board: str | None, root: str | None
) -> tuple[str, str | None]:
    """(board name, boards root) a board publisher writes to: ``--board``, else the spec's
    ``publish:`` board, relative to the spec's project as ``run`` publishes it."""
    from srlm_harness.leaderboard.board import spec_boards_root

    target = board or (manifest.get("spec") or {}).get("publish")
    if not isinstance(target, str):
        raise UserError(
            "no board given",
            f"run {manifest.get('run_id')}",
            "pass --board NAME or set 'publish:' in the pipeline spec",
        )
    name, root = _board_at(ctx, target)
    if root is None and board is None:
        spec_root = spec_boards_root(manifest.get("spec_path"))
        root = str(spec_root) if spec_root is not None else None
    return name, root


@leaderboard.command()
@click.argument("targets", nargs=-1)
@click.option("--allow-unverified", is_flag=True,
              help="accept scores that have no sample log (listed as 'unverified')")
@click.pass_context
def validate(ctx: click.Context, targets: tuple[str, ...], allow_unverified: bool) -> None:
    """Check boards or entry files: schema, sample-log checksums and recomputed scores.

    With no argument, every board under the root. Prints one line per problem and exits 1
    if there is any. A score without its sample log is a problem: nothing backs it.
    """
    from srlm_harness.leaderboard.board import (
        board_entries,
        board_path,
        boards_root,
        is_unverifiable,
        validate_board,
        validate_entry_file,
    )

    root = _root(ctx)
    if not targets:
        base = boards_root(root)
        targets = (
            tuple(sorted(d.name for d in base.iterdir() if (d / "entries").is_dir()))
            if base.is_dir()
            else ()
        )
        if not targets:
            raise UserError("no boards found", str(base), "pass a board name or entry files")
    problems: list[str] = []
    checked = 0
    for target in targets:
        if target.endswith(".json") and Path(target).is_file():
            problems += validate_entry_file(Path(target))
            checked += 1
            continue
        board_dir = board_path(*_board_at(ctx, target))
        if not (board_dir / "entries").is_dir():
            raise UserError(
                f"no board {target!r}", str(board_dir), "publish a run to it first, or check --root"
            )
        problems += validate_board(board_dir)
        checked += len(board_entries(board_dir)[0])
    unverified = [p for p in problems if allow_unverified and is_unverifiable(p)]
    problems = [p for p in problems if p not in unverified]
    for problem in problems + unverified:
        click.echo(problem)
    if problems:
        raise SystemExit(1)
    marked = f" ({len(unverified)} unverified scores accepted)" if unverified else ""
    click.echo(f"ok: {checked} entries valid{marked}")


def _load_board(ctx: click.Context, board: str) -> tuple[Path, list[dict[str, Any]]]:
    from srlm_harness.leaderboard.board import board_entries, board_path

    board_dir = board_path(*_board_at(ctx, board))
    if not (board_dir / "entries").is_dir():
        raise UserError(
            f"no board {board!r}", str(board_dir), "publish a run to it first, or check --root"
        )
    found, problems = board_entries(board_dir)
    from srlm_harness.cli.console import warn

    for problem in problems:
        warn(f"skipped: {problem}")
    return board_dir, [data for _, data in found]


@leaderboard.command()
@click.argument("board")
@click.option("--by", help="Rank by this task (or task|metric).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of tables.")
@click.pass_context
def show(ctx: click.Context, board: str, by: str | None, as_json: bool) -> None:
    """Show BOARD (a name or a board folder) as a ranked table; partial evaluations are
    ranked separately."""
    from rich.table import Table

    from srlm_harness.cli.console import console
    from srlm_harness.leaderboard.render import (
        column_title,
        format_delta,
        format_score,
        percent_columns,
        pipeline_label,
        rank_entries,
        score_stderr,
    )

    board_dir, entries = _load_board(ctx, board)
    ranking = rank_entries(entries, by)
    percent = percent_columns(ranking)
    if as_json:
        _print_ranking(board_dir, ranking)
        return
    if not ranking.full and not ranking.partial:
        console.print(_plain(f"{board_dir.name}: no entries yet (publish a run to it)"))
        return
    for title, rows in (
        (f"{board_dir.name}: ranked", ranking.full),
        (f"{board_dir.name}: partial evaluations (limited)", ranking.partial),
    ):
        if not rows and (title.endswith("(limited)") or ranking.partial):
            continue
        table = Table(title=title)
        table.add_column("#", justify="right")
        table.add_column("Model", overflow="fold")  # never cut: "-Instruct" matters
        table.add_column("Pipeline", overflow="fold")
        for c in ranking.columns:
            table.add_column(column_title(c), justify="right")
            table.add_column("Δ base", justify="right")
        table.add_column("Run", overflow="fold")
        for row in rows:
            cells = [str(row.rank), row.entry["model"]["ref"], pipeline_label(row.entry)]
            for c in ranking.columns:
                cells += [
                    format_score(row.scores.get(c), score_stderr(row.entry, c), c in percent),
                    format_delta(row.deltas.get(c), c in percent),
                ]
            # Entry text is data, never rich markup.
            table.add_row(*(_plain(cell) for cell in cells + [row.entry["run_id"]]))
        console.print(table)


def _print_ranking(board_dir: Path, ranking: Any) -> None:
    from srlm_harness.cli.views import print_json
    from srlm_harness.leaderboard.render import column_title, pipeline_label

    def rows(found: list[Any]) -> list[dict[str, Any]]:
        return [
            {
                "rank": row.rank,
                "model": row.entry["model"]["ref"],
                "pipeline": pipeline_label(row.entry),
                "run_id": row.entry["run_id"],
                "scores": {column_title(c): row.scores.get(c) for c in ranking.columns},
                "delta_base": {column_title(c): row.deltas.get(c) for c in ranking.columns},
            }
            for row in found
        ]

    print_json(
        {"board": str(board_dir), "ranked": rows(ranking.full), "partial": rows(ranking.partial)}
    )


def _plain(text: str) -> Any:
    from rich.text import Text

    return Text(text)


@leaderboard.command()
@click.argument("board")
@click.option("--by", help="Rank by this task (or task|metric).")
@click.pass_context
def render(ctx: click.Context, board: str, by: str | None) -> None:
    """Write BOARD's README.md and index.html from its entries."""
    from srlm_harness.leaderboard.render import render_board

    board_dir, _ = _load_board(ctx, board)
    render_board(board_dir, by)
    click.echo(f"wrote {board_dir / 'README.md'} and {board_dir / 'index.html'}")


@leaderboard.command()
@click.argument("run_or_entry")
@click.option(
    "--format",
    "fmt",
    default="hf",
    show_default=True,
    help="json: the entry; else a publisher that writes files (hf: model-index YAML for a "
    "model card).",
)
@click.option(
    "--output",
    "-o",
    default="-",
    show_default=True,
    help="hf: a .yaml file, '-' for stdout, or a model folder (.eval_results/).",
)
@click.option("--store", type=click.Path(file_okay=False), help="Run store.")
@click.pass_context
def export(ctx: click.Context, run_or_entry: str, fmt: str, output: str, store: str | None) -> None:
    """Export a run (id or directory) or an entry file for other tools."""
    from srlm_harness.leaderboard.board import build_entry, load_entry

    if run_or_entry.endswith(".json") and Path(run_or_entry).is_file():
        entry = load_entry(Path(run_or_entry))
    else:
        entry = build_entry(load_manifest(ctx, run_or_entry, store))
    if fmt == "json":
        text = json.dumps(entry, indent=1, ensure_ascii=False)
        if output == "-":
            click.echo(text)
        else:
            from srlm_harness.util.fs import atomic_write_text

            atomic_write_text(Path(output), text + "\n")
        return
    chosen = _registry(ctx).publishers.get(fmt, "--format")
    if chosen.board:
        raise UserError(f"--format {fmt} publishes into a board", "--format",
                        "use `srlm-harness leaderboard publish` for boards")
    location = chosen.publish(entry, output)
    if location != "stdout":
        click.echo(f"wrote {location}")
