"""Leaderboard entries: the versioned schema, building an entry from a run manifest, strict
validation, tamper checks against per-sample logs, ranking, and publishing into a board.

A board is a folder ``<root>/<board>/`` holding ``entries/*.json`` (one file per entry),
``samples/<sha256>.jsonl.gz`` (the per-sample logs the scores came from) and the rendered
``README.md`` and ``index.html``. The schema is documented in ``docs/leaderboard.md``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, cast

from srlm_harness.api import (
    EvalProvenance,
    TaskProvenance,
    UserError,
    atomic_path,
    write_board_entry,
)
from srlm_harness.leaderboard.schema import (  # noqa: F401 - re-exported
    _NAME,
    _SAMPLES_PATH,
    _SHA256,
    _TOLERANCE,
    RUN_SCHEMA,
    SCHEMA,
    SCHEMAS,
    Environment,
    Evaluation,
    EvaluationV1,
    LeaderboardEntry,
    LeaderboardEntryV1,
    ModelInfo,
    PipelineRecord,
    Samples,
    Score,
    Stage,
    _key_path,
    _Strict,
    entry_problems,
    load_entry,
    validate_entry,
)
from srlm_harness.util.faults import fault_point
from srlm_harness.util.fs import writing
from srlm_harness.util.names import check_name

# --------------------------------------------------------------------------- building


def _open_log(path: Path) -> BinaryIO:
    # Logs are checksummed as their uncompressed JSONL, however they are stored.
    return cast(BinaryIO, gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb"))


def log_sha256(path: Path) -> str:
    """sha256 of a sample log's uncompressed JSONL (the same for a ``.gz`` copy)."""
    digest = hashlib.sha256()
    with _open_log(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _slug(text: str, limit: int = 60) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "model"


def _sample_log(
    task: str, sample_files: dict[str, Any], sources: dict[str, Path], store: Path | None
) -> dict[str, str] | None:
    """The board path and checksum of ``task``'s sample log (noted in ``sources`` for the
    copy into the board), or ``None`` when the run kept no log for it."""
    source = Path(sample_files.get(task) or "")
    if not source.is_absolute() and store is not None:
        source = store / source
    if not (source.name and source.is_file()):
        return None
    digest = log_sha256(source)
    sources[digest] = source
    return {"path": f"samples/{digest}.jsonl.gz", "sha256": digest}


def _evaluation(
    step: dict[str, Any], sources: dict[str, Path], store: Path | None
) -> dict[str, Any]:
    prov = EvalProvenance.from_dict(step.get("provenance"))
    sample_files = (step.get("files") or {}).get("samples") or {}
    scores = []
    for score in step["scores"]:
        info = prov.tasks.get(score["task"]) or TaskProvenance()
        scores.append(
            {
                "task": score["task"],
                "metric": score["metric"],
                "value": score["value"],
                "stderr": score.get("stderr"),
                "n": score["n"],
                "task_version": info.version,
                "n_shot": info.n_shot,
                "chat_template": info.chat_template,
                "generation": info.generation,
                "prompt_hash": info.prompt_hash,
                "samples": _sample_log(score["task"], sample_files, sources, store),
                "data": info.data,
                "settings": info.settings,
            }
        )
    return {
        "label": step["label"],
        "key": step["key"],
        "model_key": step.get("model_key"),
        "partial": prov.partial or prov.limit is not None,
        "limit": prov.limit,
        "seed": prov.seed,
        "libraries": prov.libraries,
        "scores": scores,
    }


def _build(
    manifest: dict[str, Any], where: str, store: Any = None
) -> tuple[dict[str, Any], dict[str, Path]]:
    store_dir = Path(getattr(store, "root", store)) if store is not None else None
    try:
        return _build_checked(manifest, where, store_dir)
    except (KeyError, TypeError, AttributeError) as exc:
        raise UserError(
            f"malformed run manifest ({type(exc).__name__}: {exc})",
            where,
            f"expected a {RUN_SCHEMA} manifest written by srlm-harness run",
        ) from None


def _completed_evals(manifest: Any, where: str) -> list[dict[str, Any]]:
    """The run's completed evaluation steps, or a UserError saying why it cannot be
    published (not a manifest, not finished, nothing evaluated)."""
    if not isinstance(manifest, dict) or manifest.get("schema") != RUN_SCHEMA:
        raise UserError(f"not a run manifest (expected schema {RUN_SCHEMA!r})", where)
    if manifest.get("status") != "complete":
        raise UserError(
            f"run status is {manifest.get('status')!r}, not 'complete'",
            where,
            "only finished runs can be published; resume the run first",
        )
    steps = manifest.get("steps") or []
    evals = [s for s in steps if s.get("kind") == "eval" and s.get("status") == "complete"]
    if not evals:
        raise UserError(
            "the run has no completed evaluation",
            where,
            "add 'evaluate: {tasks: [...]}' to the pipeline spec",
        )
    return evals


def _stages(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    steps = [s for s in manifest.get("steps") or [] if s.get("kind") == "stage"]
    return [
        {
            "index": s["index"],
            "type": s["name"],
            "config": s.get("config") or {},
            "key": s["key"],
            "plugin": s.get("plugin"),
            "plugin_version": s.get("plugin_version"),
            "cached": bool(s.get("cached")),
            "seconds": s.get("seconds"),
            "metrics": s.get("metrics") or {},
        }
        for s in sorted(steps, key=lambda s: s["index"])
    ]


def _model(manifest: dict[str, Any]) -> dict[str, Any]:
    model = manifest.get("model") or {}
    details = model.get("details") or {}
    return {
        "ref": model.get("ref") or (manifest.get("spec") or {}).get("model"),
        "revision": details.get("revision"),
        "identity": model.get("identity"),
        "source": model.get("source") or model.get("identified_by"),
        "parameters": details.get("parameters"),
        "dtype": details.get("dtype"),
    }


def _environment(manifest: dict[str, Any]) -> dict[str, Any]:
    env = manifest.get("environment") or {}
    return {
        "harness": env.get("harness"),
        "python": env.get("python"),
        "platform": env.get("platform"),
        "plugins": env.get("plugins") or {},
        "libraries": env.get("libraries") or {},
    }


def _entry_id(manifest: dict[str, Any], model_ref: str, label: str) -> str:
    stamp = re.sub(r"[^0-9T]", "", (manifest.get("finished") or "")[:19]) or (
        datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    )
    return f"{stamp}-{_slug(model_ref + '-' + label)}-{uuid.uuid4().hex[:12]}"


def _build_checked(
    manifest: Any, where: str, store: Path | None
) -> tuple[dict[str, Any], dict[str, Path]]:
    evals = _completed_evals(manifest, where)
    sources: dict[str, Path] = {}
    final = _evaluation(evals[-1], sources, store)
    base_step = next((s for s in evals[:-1] if s.get("label") == "base"), None)
    base = _evaluation(base_step, sources, store) if base_step else None
    stages = _stages(manifest)
    model = _model(manifest)
    spec = manifest.get("spec") or {}
    label = " → ".join(s["type"] for s in stages) or "base"
    entry = {
        "schema": SCHEMA,
        "id": _entry_id(manifest, (manifest.get("model") or {}).get("ref", ""), label),
        "run_id": manifest["run_id"],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "started": manifest.get("started"),
        "finished": manifest.get("finished"),
        "partial": final["partial"] or bool(base and base["partial"]),
        "model": model,
        "pipeline": {
            "name": manifest.get("name") or spec.get("name") or "pipeline",
            "label": label,
            "spec_hash": manifest.get("spec_hash"),
            "seed": spec.get("seed"),
            "stages": stages,
        },
        "final": final,
        "base": base,
        "environment": _environment(manifest),
        "hardware": {
            k: v
            for k, v in (manifest.get("hardware") or {}).items()
            if v is None or isinstance(v, (str, int, float, bool))
        },
        "trust_remote_code": bool(manifest.get("trust_remote_code")),
    }
    return validate_entry(entry, where), sources


def build_entry(
    manifest: dict[str, Any], where: str = "run manifest", store: Any = None
) -> dict[str, Any]:
    """Turn a complete run's manifest into a validated leaderboard entry (a fresh id each
    call). Sample-log paths in the entry are where the logs live once published to a board;
    ``store`` (a Store or its root) resolves log paths the manifest gives relative to it."""
    return _build(manifest, where, store)[0]


# --------------------------------------------------------------------------- boards


def boards_root(root: str | Path | None = None) -> Path:
    """``--root``, else ``SRLM_HARNESS_LEADERBOARDS``, else ``./leaderboards``."""
    return Path(root or os.environ.get("SRLM_HARNESS_LEADERBOARDS") or "leaderboards")


#: Files or folders that mark a project's root folder (where ``leaderboards/`` lives).
PROJECT_MARKERS = ("leaderboards", "pyproject.toml", ".git")


def spec_boards_root(spec_file: str | Path | None) -> Path | None:
    """The boards root a spec's ``publish:`` target is relative to: ``leaderboards/`` in the
    spec's project (the nearest folder at or above the spec file that holds ``leaderboards``,
    ``pyproject.toml`` or ``.git``, else the spec's own folder), so a recipe publishes to the
    same board from any working directory. ``None`` when ``SRLM_HARNESS_LEADERBOARDS`` is set
    (it wins) or there is no spec file."""
    if os.environ.get("SRLM_HARNESS_LEADERBOARDS") or not spec_file:
        return None
    path = Path(spec_file).resolve()
    if not path.is_file():
        return None
    for folder in path.parents:
        if any((folder / marker).exists() for marker in PROJECT_MARKERS):
            return folder / "leaderboards"
    return path.parent / "leaderboards"


def board_path(board: str, root: str | Path | None = None) -> Path:
    """The folder of board ``board`` (a plain name, or ``leaderboards/NAME`` as pipeline
    specs write it); names never reach outside the boards root."""
    base = boards_root(root)
    name = board
    prefix = base.name + "/"
    if board.startswith(prefix):
        name = board[len(prefix) :]
    check_name(name, "board name", "board")
    path = base / name
    if path.exists() and not path.is_dir():
        raise UserError(f"board {board!r} is a file, not a folder", str(path),
                        "move that file away or pick another board name")
    return path


@contextmanager
def board_lock(board_dir: Path) -> Iterator[None]:
    """Serialise board re-renders, and the check-then-write of an entry, across processes
    (on systems without ``fcntl`` both may race: renders are redone, duplicates possible)."""
    entries = board_dir / "entries"
    entries.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: renders may race, entries are still safe
        yield
        return
    fd = os.open(entries, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def board_entries(board_dir: Path) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Valid entries of a board (sorted by file name) and one problem line per bad file."""
    good, problems = [], []
    for path in sorted((board_dir / "entries").glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: cannot read entry: {exc}")
            continue
        found = entry_problems(data, str(path))
        if not found and data["id"] != path.stem:
            found = [f"{path}: id: {data['id']!r} does not match the file name"]
        problems += found
        if not found:
            good.append((path, data))
    return good, problems


# --------------------------------------------------------------------------- tamper checks


def _read_samples(path: Path) -> Iterator[dict[str, Any]]:
    with _open_log(path) as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def recompute_score(path: Path, metric: str) -> tuple[float, int]:
    """Mean of the per-sample ``correct`` field (or of the metric's own key, for lm-eval
    sample lines, restricted to the metric's filter), and the number of samples."""
    name, _, filt = metric.partition(",")
    values = []
    for line in _read_samples(path):
        if filt and "filter" in line and line["filter"] != filt:
            continue
        value = line.get("correct", line.get(name))
        if isinstance(value, bool | int | float):
            values.append(float(value))
        else:
            raise ValueError(f"sample {len(values)} has no numeric 'correct' field")
    return (sum(values) / len(values) if values else math.nan), len(values)


#: Problems that only say a score cannot be checked (``--allow-unverified`` accepts them).
UNVERIFIABLE = "unverifiable:"


def verify_entry(data: dict[str, Any], board_dir: Path, where: str) -> list[str]:
    """Check every score against its per-sample log: the log must exist, match its sha256,
    and give the score when recomputed. One problem line each; a score with no log to check
    it against gives a line containing ``UNVERIFIABLE``."""
    problems = []
    for label in ("final", "base"):
        for i, score in enumerate((data.get(label) or {}).get("scores", [])):
            samples = score.get("samples")
            at = f"{where}: {label}.scores[{i}] ({score['task']})"
            if not samples:
                problems.append(f"{at}: {UNVERIFIABLE} the score has no sample log (samples: null)")
                continue
            path = board_dir / samples["path"]
            if not path.is_file():
                problems.append(f"{at}: {UNVERIFIABLE} sample log {samples['path']} is missing")
                continue
            try:
                if log_sha256(path) != samples["sha256"]:
                    problems.append(
                        f"{at}: sample log {samples['path']} does not match its "
                        "sha256 (edited after publishing?)"
                    )
                    continue
                value, n = recompute_score(path, score["metric"])
            except (OSError, ValueError, EOFError) as exc:
                problems.append(f"{at}: cannot read sample log {samples['path']}: {exc}")
                continue
            if n != score["n"]:
                problems.append(f"{at}: n is {score['n']} but the sample log has {n}")
            if not math.isclose(value, score["value"], abs_tol=_TOLERANCE):
                problems.append(
                    f"{at}: value {score['value']} does not match {value:.6g} "
                    "recomputed from the sample log"
                )
    return problems


def is_unverifiable(problem: str) -> bool:
    """Whether a problem line only says that a score has no sample log to check it with."""
    return f": {UNVERIFIABLE} " in problem


def validate_board(board_dir: Path) -> list[str]:
    """Every problem of a board: bad entry files, and tampered values or sample logs."""
    good, problems = board_entries(board_dir)
    for path, data in good:
        problems += verify_entry(data, board_dir, str(path))
    return problems


def validate_entry_file(path: Path) -> list[str]:
    """Problems of one entry file; sample logs are looked up in the board the file is in."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{path}: cannot read entry: {exc}"]
    problems = entry_problems(data, str(path))
    board_dir = path.parent.parent if path.parent.name == "entries" else path.parent
    return problems or verify_entry(data, board_dir, str(path))


# --------------------------------------------------------------------------- publishing


def _copy_samples(board_dir: Path, sources: dict[str, Path]) -> None:
    # Content-addressed, so concurrent publishers of the same log write identical bytes.
    (board_dir / "samples").mkdir(parents=True, exist_ok=True)
    for digest, source in sources.items():
        final = board_dir / "samples" / f"{digest}.jsonl.gz"
        if final.is_file():
            continue
        with atomic_path(final) as tmp:
            with _open_log(source) as src, open(tmp, "wb") as raw:
                with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
                    shutil.copyfileobj(src, out)
            fault_point("sample-log-copy")


class Published(NamedTuple):
    """Where an entry went; ``new`` is False when the board already had the same results."""

    location: str
    new: bool = True


def _results_identity(entry: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two entries the same result: their evaluations' content keys (which cover
    the model, every stage, the tasks, limit, seed and precision)."""
    base = entry.get("base") or {}
    return (entry["final"]["key"], base.get("key"))


def published_copy(board_dir: Path, entry: dict[str, Any]) -> Path | None:
    """The board's entry with the same results as ``entry`` (a re-run of a cached pipeline,
    or the same run published twice), if there is one."""
    wanted = _results_identity(entry)
    for path, data in board_entries(board_dir)[0]:
        if _results_identity(data) == wanted:
            return path
    return None


def publish_run(
    manifest: dict[str, Any],
    target: str,
    publisher: str | None = None,
    *,
    root: str | Path | None = None,
    registry: Any = None,
    store: Any = None,
) -> Published:
    """Build an entry from a run manifest and publish it with the named publisher.

    For a board publisher (``Publisher.board``, as the built-in ``folder``) the target is a
    board name (``gsm8k`` or ``leaderboards/gsm8k``) and the core does the board's work:
    under the board's lock it skips an entry whose results the board already holds (that
    entry is returned with ``new=False``), copies the sample logs into the board and calls
    the publisher to write the entry; then it re-renders the board. Other publishers get
    the entry and the target as they take it (``hf``: a file or folder path). Without a
    ``publisher`` the installed board publisher is used. ``registry`` defaults to one built
    from the installed plugins; ``store`` (a Store or its root) resolves sample-log paths
    recorded relative to the store.
    """
    if registry is None:
        from srlm_harness.plugin_system.manager import load_plugins
        from srlm_harness.plugin_system.registry import Registry

        registry = Registry(load_plugins())
    chosen = (registry.publishers.get(publisher, "--publisher") if publisher
              else registry.board_publisher("--publisher"))
    if not chosen.board:
        return Published(chosen.publish(build_entry(manifest, store=store), target))
    board_dir = board_path(target, root)  # checked before any work
    entry, sources = _build(manifest, "run manifest", store)
    return publish_to_board(entry, sources, board_dir, chosen.publish)


def publish_to_board(
    entry: dict[str, Any],
    sources: dict[str, Path],
    board_dir: Path,
    write: Callable[[dict[str, Any], str], str] = write_board_entry,
) -> Published:
    """Publish a built entry into ``board_dir`` with the board's guarantees: one writer at
    a time (the board lock), no second entry for the same results, the sample logs copied
    before the entry names them, the board re-rendered (also when nothing was written, to
    repair an interrupted render). ``write(entry, board_dir)`` writes the entry itself."""
    with writing(board_dir), board_lock(board_dir):  # one publisher of a result writes it
        existing = published_copy(board_dir, entry)
        if existing is None:
            _copy_samples(board_dir, sources)
            fault_point("publish-samples-copied")
            location = write(entry, str(board_dir))
    from srlm_harness.leaderboard.render import render_board

    fault_point("publish-before-render")
    with writing(board_dir):
        render_board(board_dir)
    if existing is not None:
        return Published(str(existing), new=False)
    return Published(location)
