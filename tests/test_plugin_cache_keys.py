"""Cache keys cover what a plugin's task or stage reads: a task's data, its loader module,
declared files, the providing plugin's version; a composed stage's inner stage version."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from srlm_harness.api import DatasetSource, StageResult, StageType
from srlm_harness.api.hookspecs import hookimpl
from srlm_harness.pipeline import hardware
from srlm_harness.pipeline.plan import make_plan
from srlm_harness.pipeline.spec import load_pipeline
from srlm_harness.plugin_system.manager import load_plugins
from srlm_harness.plugin_system.registry import Registry
from srlm_harness.store.store import Store

PACK = Path(__file__).resolve().parent / "fixture_plugins" / "task_pack"


@pytest.fixture
def pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the task plugin package, importable as ``srlm_task_pack``."""
    root = Path(shutil.copytree(PACK, tmp_path / "pack"))
    monkeypatch.syspath_prepend(str(root))
    for name in [m for m in sys.modules if m.startswith("srlm_task_pack")]:
        monkeypatch.delitem(sys.modules, name)
    return root / "srlm_task_pack"


def fresh_import() -> None:
    """The next --plugin load reads the package's files again (its version, say)."""
    for name in [m for m in sys.modules if m.startswith("srlm_task_pack")]:
        del sys.modules[name]


def plan_counts(harness, *args: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    fresh_import()
    code, out, err = harness(*args)
    assert code == 0, err
    cached, todo = re.search(r"(\d+) cached, (\d+) to run", out).groups()  # type: ignore[union-attr]
    return int(cached), int(todo)


def test_changing_a_plugin_tasks_data_loader_declared_file_or_version_reruns_the_eval(
    pack: Path, tiny_model_dir: Path, tmp_path: Path, harness
) -> None:  # type: ignore[no-untyped-def]
    common = ("--store", str(tmp_path / "store"), "--plugin", "srlm_task_pack")
    flags = ("--model", str(tiny_model_dir), "--eval", "pack_add", "--limit", "2")
    fresh_import()
    code, _, err = harness(*common, "run", *flags)
    assert code == 0, err
    assert plan_counts(harness, *common, "plan", *flags) == (1, 0)

    edits = [
        (pack / "tasks" / "pack_add.jsonl", "4 + 4?", "4 + 5?"),  # data in the task folder
        (pack / "loader.py", "rows = [{**row", "rows = [{**row, 'x': 1"),  # loader elsewhere
        (pack / "extra" / "suffix.txt", "number only", "number"),  # declared in Task.files
        # plugin version; a new length, so a .pyc written in the same second is not reused
        (pack / "__init__.py", '__version__ = "1.0"', '__version__ = "1.0.1"'),
    ]
    for path, old, new in edits:
        original = path.read_text()
        path.write_text(original.replace(old, new))
        assert plan_counts(harness, *common, "plan", *flags) == (0, 1), path.name
        path.write_text(original)
        assert plan_counts(harness, *common, "plan", *flags) == (1, 0), path.name

    # The re-run really reads the changed data.
    data = pack / "tasks" / "pack_add.jsonl"
    data.write_text(data.read_text().replace('"8"', '"9"'))
    fresh_import()
    code, _, err = harness(*common, "run", *flags)
    assert code == 0, err
    golds = sorted(p.read_text().count('"gold": "9"')
                   for p in (tmp_path / "store" / "evals").glob("*/samples_pack_add.jsonl"))
    assert golds == [0, 1]  # the first evaluation, and the one on the changed data


class DataPlugin:
    """A third-party dataset and an inner/outer stage pair, at a given version."""

    def __init__(self, version: str, inner_version: str = "1") -> None:
        self.version, self.inner_version = version, inner_version

    @hookimpl
    def srlm_register_datasets(self, register):  # type: ignore[no-untyped-def]
        register(DatasetSource("third_data", lambda o, s: [], lambda o, s: "fixed-fingerprint"))

    @hookimpl
    def srlm_register_stages(self, register):  # type: ignore[no-untyped-def]
        from pydantic import BaseModel

        class Empty(BaseModel):
            pass

        def run(ctx):  # type: ignore[no-untyped-def]
            return StageResult()

        register(StageType("inner", Empty, run, version=self.inner_version))
        register(StageType("outer", Empty, run, uses={"inner": ""}))


def stage_keys(tiny_model_dir: Path, tmp_path: Path, version: str, inner: str = "1") -> list[str]:
    plugins = load_plugins()
    plugins.add("third", DataPlugin(version, inner), "inline", version)
    registry = Registry(plugins)
    stages = ("sft", "outer")
    pipeline = load_pipeline(registry, None, str(tiny_model_dir), stages,
                             overrides=["sft.dataset=third_data"])
    versions = {name: info.version for name, info in plugins.infos.items()}
    plan = make_plan(pipeline, registry, hardware.detect(), Store(tmp_path / "s"), versions)
    return [step.key for step in plan.stages]


def test_a_stage_key_holds_its_dataset_plugins_version_and_its_inner_stages_version(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    sft_1, outer_1 = stage_keys(tiny_model_dir, tmp_path, "1")
    sft_2, _ = stage_keys(tiny_model_dir, tmp_path, "2")
    assert sft_2 != sft_1  # same fingerprint, new release of the dataset's plugin
    # The outer stage's own plugin and config are unchanged, but the stage it runs is not.
    assert stage_keys(tiny_model_dir, tmp_path, "1", inner="2")[1] != outer_1
    assert stage_keys(tiny_model_dir, tmp_path, "1") == [sft_1, outer_1]
