"""A third-party task plugin for cache-key tests: task data in its folder, a loader module
outside it, and a declared file the loader reads."""

from pathlib import Path

from srlm_harness.api import Task
from srlm_harness.api.hookspecs import hookimpl

__version__ = "1.0"

HERE = Path(__file__).resolve().parent


@hookimpl
def srlm_register_tasks(register):  # type: ignore[no-untyped-def]
    register(Task("pack_add", "two additions", include_path=HERE / "tasks",
                  verifier="gsm8k", files=(HERE / "extra" / "suffix.txt",)))
