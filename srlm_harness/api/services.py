"""What the core does for plugins at run time: look up a registered verifier, write an
entry into a leaderboard folder, put the hardware settings into effect, apply the run's
remote-code policy and tracking, open the store. Cheap to import: the work loads on first
call. Built-in plugins reach the core only through these and ``srlm_harness.api``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from srlm_harness.api.types import Verifier
    from srlm_harness.pipeline.hardware import Hardware
    from srlm_harness.store.store import Store


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


def apply_hardware(hardware: Hardware) -> None:
    """Put the process-wide hardware choices (threads, allocator) into effect, as the core
    does before a stage or an evaluation; a stage running in a fresh process calls it."""
    from srlm_harness.pipeline.hardware import apply_hardware as apply

    apply(hardware)


def remote_code_allowed() -> bool:
    """Whether the pipeline allowed models' own code (``trust_remote_code: true`` at the top
    of the spec); pass it to ``from_pretrained(trust_remote_code=...)``, never prompt."""
    from srlm_harness.pipeline import remote_code

    return remote_code.allowed()


def check_remote_code(model_dir: str | Path) -> None:
    """A UserError if ``model_dir`` needs its own code and the pipeline did not allow it."""
    from srlm_harness.pipeline import remote_code

    remote_code.check_model(model_dir)


def tracking_settings(stage_label: str) -> dict[str, Any]:
    """Trainer settings for the trackers the run asked for (``--report-to``): ``report_to``,
    ``run_name`` and the logging folder, for a transformers/TRL trainer config."""
    from srlm_harness.pipeline import tracking

    return tracking.trainer_settings(stage_label)


def safetensors_problem(path: str | Path) -> str | None:
    """What is wrong with a ``.safetensors`` file (truncated, unreadable header), or None."""
    from srlm_harness.store.store import safetensors_problem as problem

    return problem(Path(path))


def open_store(root: str | Path | None = None) -> Store:
    """The artifact store at ``root`` (default: the run's store), for a model source that
    resolves references to stored stages and runs."""
    from srlm_harness.store.store import Store

    return Store(root)
