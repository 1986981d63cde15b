"""What the core does for plugins at run time: look up a registered verifier, write an
entry into a leaderboard folder. Cheap to import: the work loads on first call."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from srlm_harness.api.types import Verifier


def find_verifier(name: str, where: str | None = None) -> Verifier:
    """The verifier registered as ``name`` by the plugins this process loaded (those of the
    latest plugin registry; the installed plugins if none was built yet). An unknown name
    raises UserError with close matches, naming ``where``."""
    from srlm_harness.plugin_system.registry import current_registry

    return current_registry().verifiers.get(name, where or "verifier")


def check_name(value: Any, what: str, where: str | None = None) -> str:
    """``value`` if it is a safe file name (one path component of letters, digits, ``.``,
    ``_``, ``-``), else a UserError naming ``what`` and ``where``."""
    from srlm_harness.util.names import check_name as check

    return check(value, what, where)


def write_board_entry(entry: dict[str, Any], board_dir: str | Path) -> str:
    """Write ``entry`` as ``<board_dir>/entries/<entry id>.json`` atomically (the entry id is
    checked to be a safe file name) and return the path. Entry ids are unique, so two
    publishers never write the same file. What a ``board=True`` publisher's ``publish``
    calls; the core holds the board's lock around it."""
    import json

    from srlm_harness.util.fs import atomic_write_text
    from srlm_harness.util.names import check_name

    entry_id = check_name(entry.get("id"), "entry id", str(board_dir))
    path = Path(board_dir) / "entries" / f"{entry_id}.json"
    atomic_write_text(path, json.dumps(entry, indent=1, ensure_ascii=False) + "\n")
    return str(path)
