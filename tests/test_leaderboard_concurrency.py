"""Many publishers at once lose no entry: 8 processes publish 25 entries each to one board,
and publishers racing to publish one result write it once."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from test_leaderboard import make_run

from srlm_harness.leaderboard.board import publish_run, validate_board
from srlm_harness.leaderboard.render import render_board

PROCESSES, EACH = 8, 25


def _publish_many(manifest: dict, root: str, count: int, vary: bool = True) -> list[str]:
    """Publish ``count`` results of ``manifest``'s run: distinct final evaluations (as many
    checkpoints of one run would have) unless ``vary`` is False."""
    from srlm_harness.plugin_system.manager import load_plugins
    from srlm_harness.plugin_system.registry import Registry

    registry = Registry(load_plugins())
    locations = []
    for j in range(count):
        copy = copy_manifest(manifest)
        if vary:
            copy["steps"][-1]["key"] = f"{manifest['steps'][-1]['key'][:60]}{j:04d}"
        locations.append(publish_run(copy, "gsm8k", root=root, registry=registry).location)
    return locations


def copy_manifest(manifest: dict) -> dict:
    return json.loads(json.dumps(manifest))


def test_concurrent_publishers_lose_no_entry(tmp_path: Path) -> None:
    store, root = tmp_path / "store", tmp_path / "leaderboards"
    manifests = [make_run(store, f"run{i}", 0.3 + i / 20, seed=i) for i in range(PROCESSES)]
    # fork keeps the workers cheap (no re-import); every publish re-renders the board too.
    context = multiprocessing.get_context("fork")
    with context.Pool(PROCESSES) as pool:
        results = pool.starmap(_publish_many, [(m, str(root), EACH) for m in manifests])
    locations = [loc for batch in results for loc in batch]
    assert len(set(locations)) == PROCESSES * EACH

    board = root / "gsm8k"
    files = sorted((board / "entries").glob("*.json"))
    assert len(files) == PROCESSES * EACH
    assert not list(board.rglob("*.tmp"))  # no temp file left behind
    assert {json.loads(f.read_text())["run_id"] for f in files} == {f"run{i}" for i in
                                                                    range(PROCESSES)}
    assert validate_board(board) == []
    # The last re-render ran after the last entry was written: it shows all of them.
    rows = [line for line in (board / "README.md").read_text().splitlines()
            if line.startswith("| ") and "run" in line.split("|")[-3]]
    assert len(rows) == PROCESSES * EACH
    assert render_board(board) == []


def test_racing_publishers_of_one_result_write_one_entry(tmp_path: Path) -> None:
    store, root = tmp_path / "store", tmp_path / "leaderboards"
    manifest = make_run(store, "run0", 0.5)
    context = multiprocessing.get_context("fork")
    with context.Pool(4) as pool:
        results = pool.starmap(_publish_many, [(manifest, str(root), 3, False)] * 4)
    files = list((root / "gsm8k" / "entries").glob("*.json"))
    assert len(files) == 1
    assert {loc for batch in results for loc in batch} == {str(files[0])}
    assert validate_board(root / "gsm8k") == []
