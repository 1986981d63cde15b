"""What the environment says about where files live and whether the network may be used:
one reading of each variable for the core and the plugins (through ``srlm_harness.api``)."""

from __future__ import annotations

import os
from pathlib import Path

#: Variables that switch Hugging Face libraries offline (models, datasets, everything).
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
#: Those that stop a model download (HF_DATASETS_OFFLINE alone does not).
MODEL_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
#: The shared data folder (``gsm8k/{train,test}.jsonl``, ``math500/test.jsonl``, ...).
DATA_DIR_ENV = "SRLM_HARNESS_DATA_DIR"
#: Where caches of derived files go (task indexes, generated datasets, file hashes).
CACHE_ENV = "SRLM_HARNESS_CACHE"

_TRUE = ("1", "true", "yes", "on")


def env_true(name: str) -> bool:
    """Whether variable ``name`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(name, "").strip().lower() in _TRUE


def offline_variable(names: tuple[str, ...] = OFFLINE_VARIABLES) -> str | None:
    """The first of ``names`` that is set to a true value (offline mode), or ``None``."""
    return next((name for name in names if env_true(name)), None)


def hub_offline(names: tuple[str, ...] = OFFLINE_VARIABLES) -> bool:
    """Whether offline mode is set: no Hub access may be attempted."""
    return offline_variable(names) is not None


def cache_dir() -> Path:
    """``$SRLM_HARNESS_CACHE``, else ``$XDG_CACHE_HOME/srlm-harness``, else
    ``~/.cache/srlm-harness``."""
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "srlm-harness"


def data_dir(override: str | Path | None = None) -> Path | None:
    """``override`` (a source's ``data_dir`` option), else ``$SRLM_HARNESS_DATA_DIR``."""
    value = override or os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None
