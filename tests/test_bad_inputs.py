"""Every case of the bad-input corpus (tests/bad_inputs/corpus.py) is refused before any
work: a non-zero exit, one error line that names the file or key, no traceback, and nothing
written to the store or to a board."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_inputs.corpus import CASES, Case

from srlm_harness.testing import make_tiny_model

PLUGIN = ("--plugin", "demo_plugin")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("corpus") / "tiny")


def materialise(case: Case, folder: Path, model: Path) -> dict[str, str]:
    paths = {}
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            if getattr(content, "needs_model", False):
                content(path, model)
            else:
                path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.replace("{model}", str(model)).replace("{dir}", str(folder)))
        paths[name] = str(path)
    return paths


def fill(text: str, names: dict[str, str]) -> str:
    for name, value in names.items():
        text = text.replace("{" + name + "}", value)
    return text


def snapshot(*roots: Path) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes()
        for root in roots if root.exists()
        for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(
    case: Case, tmp_path: Path, model: Path, harness, fixture_plugins, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    store, boards = tmp_path / "store", tmp_path / "boards"
    monkeypatch.setenv("SRLM_HARNESS_STORE", str(store))
    monkeypatch.setenv("SRLM_HARNESS_LEADERBOARDS", str(boards))
    monkeypatch.setenv("SRLM_HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    names = {"model": str(model), "dir": str(tmp_path), "store": str(store),
             "boards": str(boards)}
    names.update(materialise(case, tmp_path, model))
    # Spec files name the other files of their case.
    for name, path in names.items():
        if name.endswith(".yaml") and Path(path).is_file():
            Path(path).write_text(fill(Path(path).read_text(errors="surrogateescape"), names),
                                  errors="surrogateescape")
    before = snapshot(store, boards)

    code, out, err = harness(*PLUGIN, *[fill(a, names) for a in case.argv])

    text = (err or out).strip()
    assert code != 0, f"accepted: {out}{err}"
    assert "Traceback" not in out + err
    assert "internal error" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert case.expect in lines[0], lines[0]
    assert snapshot(store, boards) == before, "something was written"
