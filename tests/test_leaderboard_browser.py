"""The HTML board in a real headless Chromium (Debian's ``chromium``, driven by Playwright):
sorting works from ``file://``, hostile model names stay inert, and a screenshot is saved.

Install the browser with ``.ci/install-browser.sh``; without it these tests skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from test_leaderboard import EVIL, make_run

from srlm_harness.leaderboard.board import publish_run

CHROMIUM = os.environ.get("SRLM_HARNESS_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                       reason=f"no Chromium at {CHROMIUM} (run .ci/install-browser.sh)"),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="python playwright not installed")
    profile = tempfile.mkdtemp(prefix="srlm-chromium-")
    with sync_api.sync_playwright() as pw:
        # A fresh profile each run; Playwright launches the system browser, never its own.
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True,
            args=[*FLAGS], viewport={"width": 1280, "height": 900})
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def board(tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SRLM_HARNESS_LEADERBOARDS", str(tmp_path / "leaderboards"))
    runs = [(0.62, "Qwen/Qwen2.5-0.5B-Instruct", ("grpo",), None),
            (0.55, "Qwen/Qwen2.5-0.5B-Instruct", ("sft", "grpo"), None),
            (0.38, "Qwen/Qwen2.5-0.5B", ("kd",), None),
            (0.48, "Qwen/Qwen2.5-0.5B", ("sft",), None),
            (0.70, EVIL, ("kd", "grpo"), 50)]
    for i, (accuracy, model, stages, limit) in enumerate(runs):
        manifest = make_run(store, f"run{i}", accuracy, base_accuracy=0.44, n=50, model=model,
                            stages=stages, limit=limit)
        publish_run(manifest, "gsm8k")
    return tmp_path / "leaderboards" / "gsm8k"


def _models(page) -> list[str]:
    return page.locator("#board-full tbody tr td:nth-child(2)").all_inner_texts()


def test_board_sorts_and_keeps_hostile_names_inert(browser, board: Path, tmp_path: Path) -> None:
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto((board / "index.html").as_uri())
    page.wait_for_load_state("load")

    ranked = _models(page)
    assert ranked == ["Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct",
                      "Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B"]
    scores = page.locator("#board-full tbody tr td:nth-child(4)").all_inner_texts()
    assert scores[0].startswith("62.0") and scores[-1].startswith("38.0")

    page.locator("#board-full thead th", has_text="gsm8k").click()  # ascending
    ascending = page.locator("#board-full tbody tr td:nth-child(4)").all_inner_texts()
    assert [s.split()[0] for s in ascending] == ["38.0", "48.0", "56.0", "62.0"]
    assert _models(page) != ranked
    page.locator("#board-full thead th", has_text="gsm8k").click()  # descending again
    assert _models(page) == ranked
    page.locator("#board-full thead th", has_text="Model").click()
    assert _models(page) == sorted(ranked)

    # The hostile name is shown as text, and nothing it carried ran.
    partial = page.locator("#board-partial tbody tr td:nth-child(2)").inner_text()
    assert partial == EVIL
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#board-partial img").count() == 0 and not dialogs
    assert page.locator("svg rect").count() == 5

    shot = Path(os.environ.get("SRLM_HARNESS_ARTIFACTS") or tmp_path) / "leaderboard.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"leaderboard screenshot: {shot}")
    page.close()


def _shot(page, tmp_path: Path, name: str) -> Path:
    shot = Path(os.environ.get("SRLM_HARNESS_ARTIFACTS") or tmp_path) / name
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    return shot


def test_board_fits_1280_pixels_with_full_labels(browser, board: Path, tmp_path: Path) -> None:
    from srlm_harness.leaderboard.render import pipeline_label

    page = browser.new_page()
    page.goto((board / "index.html").as_uri())
    page.wait_for_load_state("load")
    # No sideways scrolling of the page or the table at 1280 px.
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert page.evaluate(
        "Array.from(document.querySelectorAll('.scroll'))"
        ".every(d => d.scrollWidth <= d.clientWidth)"
    )
    # Every chart label is whole (wrapped, never cut) and inside the picture.
    labels = page.locator("svg text.label")
    shown = [" ".join(t.split()) for t in labels.all_text_contents()]
    import json

    data = json.loads(page.locator("#board-data").inner_text())
    for row in data:
        expected = row["model"] + row["pipeline"] + (" (partial)" if row["partial"] else "")
        assert any(text.replace(" ", "") == expected.replace(" ", "") for text in shown), row
    assert all(box["x"] >= 0 for box in (labels.nth(i).bounding_box() for i in range(len(shown))))
    assert "…" not in "".join(shown)
    assert pipeline_label  # labels come from the same function as the table's
    assert _shot(page, tmp_path, "leaderboard-1280.png").stat().st_size > 10_000
    page.close()


def test_an_empty_board_says_so(browser, tmp_path: Path) -> None:
    from srlm_harness.leaderboard.render import render_board

    empty = tmp_path / "leaderboards" / "empty"
    (empty / "entries").mkdir(parents=True)
    render_board(empty)
    page = browser.new_page()
    page.goto((empty / "index.html").as_uri())
    page.wait_for_load_state("load")
    assert page.locator("#board-full-empty").is_visible()
    assert "Publish a run to this board" in page.locator("#board-full-empty").inner_text()
    assert page.locator("#chart-empty").is_visible()
    assert page.locator("table").count() == 0
    _shot(page, tmp_path, "leaderboard-empty.png")
    page.close()


def test_study_plot_loads_in_the_browser(browser, tmp_path: Path) -> None:
    from srlm_harness.study.report import write_report

    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join('{"correct": %s}\n' % ("true" if i % 3 else "false")
                               for i in range(30)))
    results = [
        {"model": "/tmp/models/tiny", "pipeline": name, "run_id": f"r{i}",
         "final": {"gsm8k": value}, "base": {"gsm8k": 0.3}, "partial": False,
         "samples": {"gsm8k": str(samples)}}
        for i, (name, value) in enumerate([("base", 0.3), ("sft", 0.5), ("sft → grpo", 0.67)])
    ]
    counts = {"pipelines": 3, "unique_stages": 2, "executed": 2}
    files = write_report(tmp_path / "study", "demo-study", results, counts)
    page = browser.new_page()
    page.goto(files["plot"].as_uri())
    page.wait_for_load_state("load")
    assert page.evaluate("document.images[0].naturalWidth") > 500
    _shot(page, tmp_path, "study-plot.png")
    page.close()
