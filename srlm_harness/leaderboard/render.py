"""Ranking a board's entries and rendering them: ``README.md`` (GitHub Markdown) and a single
static ``index.html`` (sortable tables, an inline SVG chart; works from ``file://``).

Every string from an entry is untrusted: HTML-escaped in both outputs, Markdown-escaped in
the README, and the JSON embedded in the page cannot close its ``<script>`` element. The page
also carries a Content-Security-Policy that allows only its own script (by hash).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srlm_harness.api import UserError
from srlm_harness.leaderboard.board import board_entries, board_lock
from srlm_harness.util.fs import atomic_write_text

# --------------------------------------------------------------------------- ranking


@dataclass
class Row:
    rank: int
    entry: dict[str, Any]
    scores: dict[str, float]
    deltas: dict[str, float | None]


@dataclass
class Ranking:
    """Rows ranked by the ``primary`` column (``task|metric``); partial entries apart."""

    columns: list[str]
    primary: str | None
    full: list[Row] = field(default_factory=list)
    partial: list[Row] = field(default_factory=list)


_PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def pipeline_label(entry: dict[str, Any]) -> str:
    """The pipeline as a row shows it: its stages, and the precision it ran in (the same
    pipeline in fp32 and in bf16 are two results)."""
    dtype = (entry.get("hardware") or {}).get("dtype")
    label = entry["pipeline"]["label"]
    return f"{label} ({_PRECISION.get(dtype, dtype)})" if dtype else label


def column_key(score: dict[str, Any]) -> str:
    return f"{score['task']}|{score['metric']}"


def rank_entries(entries: list[dict[str, Any]], by: str | None = None) -> Ranking:
    """Rank by ``by`` (a task name or ``task|metric``), else the column most entries have;
    entries without that score go last. Partial (limited) evaluations rank separately."""
    counts: dict[str, int] = {}
    for entry in entries:
        for score in entry["final"]["scores"]:
            counts[column_key(score)] = counts.get(column_key(score), 0) + 1
    columns = sorted(counts, key=lambda c: (-counts[c], c))
    primary = columns[0] if columns else None
    if by:
        matches = [c for c in columns if c == by or c.split("|")[0] == by]
        if not matches:
            raise UserError(
                f"no entry has scores for {by!r}", "--by", f"known: {', '.join(columns) or 'none'}"
            )
        primary = matches[0]
    ranking = Ranking(columns, primary)
    for group, rows in ((False, ranking.full), (True, ranking.partial)):
        for entry in (e for e in entries if e["partial"] == group):
            scores = {column_key(s): s["value"] for s in entry["final"]["scores"]}
            base = {column_key(s): s["value"] for s in (entry["base"] or {}).get("scores", [])}
            deltas = {c: v - base[c] if c in base else None for c, v in scores.items()}
            rows.append(Row(0, entry, scores, deltas))
        rows.sort(
            key=lambda r: (
                primary not in r.scores,
                -r.scores.get(primary or "", 0.0),
                r.entry["model"]["ref"],
                r.entry["id"],
            )
        )
        for i, row in enumerate(rows, 1):
            row.rank = i
    return ranking


# --------------------------------------------------------------------------- formatting


def column_title(key: str) -> str:
    """``gsm8k|exact_match,flexible-extract`` -> ``gsm8k exact_match (flexible-extract)``;
    lm-eval's ``none`` filter (no filter at all) is left out: ``acc,none`` -> ``acc``."""
    task, _, metric = key.partition("|")
    name, _, filt = metric.partition(",")
    return f"{task} {name}" + (f" ({filt})" if filt and filt != "none" else "")


def percent_columns(ranking: Ranking) -> set[str]:
    # Accuracy-like columns (every value within [0, 1]) read better as percentages.
    rows = ranking.full + ranking.partial
    return {
        c for c in ranking.columns if all(0.0 <= r.scores[c] <= 1.0 for r in rows if c in r.scores)
    }


def format_score(value: float | None, stderr: float | None, percent: bool) -> str:
    if value is None:
        return "—"
    scale, digits = (100.0, 1) if percent else (1.0, 4)
    text = f"{value * scale:.{digits}f}"
    return text + (f" ± {stderr * scale:.{digits}f}" if stderr is not None else "")


def format_delta(delta: float | None, percent: bool) -> str:
    if delta is None:
        return "—"
    return f"{delta * 100:+.1f} pp" if percent else f"{delta:+.4f}"


def score_stderr(entry: dict[str, Any], key: str) -> float | None:
    return next((s["stderr"] for s in entry["final"]["scores"] if column_key(s) == key), None)


def _n(entry: dict[str, Any], key: str | None) -> int | None:
    return next((s["n"] for s in entry["final"]["scores"] if column_key(s) == key), None)


def _md(text: Any) -> str:
    # HTML-escape (GitHub renders inline HTML), then neutralise Markdown syntax and newlines.
    escaped = html.escape(" ".join(str(text).split()), quote=True)
    return re.sub(r"([\\`*_\[\]|#!~])", r"\\\1", escaped)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def script_json(data: Any) -> str:
    """JSON safe inside ``<script>``: no ``</``, ``<!--`` or line separators survive."""
    text = json.dumps(data, ensure_ascii=False, sort_keys=True)
    for char, code in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, code)
    return text


# --------------------------------------------------------------------------- Markdown


_EMPTY = (
    "No complete evaluations yet. Publish a run to this board: "
    "`srlm-harness leaderboard publish RUN_ID --board BOARD`."
)
_EMPTY_PARTIAL = (
    "No complete evaluations yet. The entries below evaluated a limited number of samples; "
    "they are ranked separately, under Partial evaluations."
)


def render_markdown(name: str, ranking: Ranking) -> str:
    percent = percent_columns(ranking)
    lines = [
        f"# Leaderboard: {_md(name)}",
        "",
        "Rendered by srlm-harness from `entries/`; do not edit by hand (run "
        f"`srlm-harness leaderboard render {_md(name)}`). Scores carry their standard "
        "error; Δ is the change from the same model before training.",
        "",
    ]
    for title, rows in (
        ("Ranked", ranking.full),
        ("Partial evaluations (limited samples, ranked separately)", ranking.partial),
    ):
        if not rows and title != "Ranked":
            continue
        if not rows:
            lines += [f"## {title}", "", _EMPTY_PARTIAL if ranking.partial else _EMPTY, ""]
            continue
        header = ["#", "Model", "Pipeline"]
        for c in ranking.columns:
            header += [_md(column_title(c)), "Δ"]
        header += ["n", "Run", "Date"]
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            entry = row.entry
            cells = [str(row.rank), _md(entry["model"]["ref"]), _md(pipeline_label(entry))]
            for c in ranking.columns:
                cells += [
                    format_score(row.scores.get(c), score_stderr(entry, c), c in percent),
                    format_delta(row.deltas.get(c), c in percent),
                ]
            cells += [
                str(_n(entry, ranking.primary) or "—"),
                _md(entry["run_id"]),
                _md((entry["finished"] or entry["created"])[:10]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- HTML

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1240px;padding:0 1em;
color:#1b1f24}
table{border-collapse:collapse;width:100%;margin:1em 0}
th,td{border-bottom:1px solid #d0d7de;padding:.35em .5em;text-align:left;white-space:nowrap}
th{white-space:normal;vertical-align:bottom}
td.muted{white-space:normal;overflow-wrap:anywhere;max-width:11em;font-size:12px}
.empty{padding:1em;background:#f6f8fa;border:1px dashed #d0d7de;border-radius:6px}
svg{max-width:100%;height:auto}
th{cursor:pointer;background:#f6f8fa;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.name{white-space:normal;overflow-wrap:anywhere;min-width:12em;max-width:24em}
.scroll{overflow-x:auto}
.up{color:#1a7f37}.down{color:#cf222e}.muted{color:#57606a}
""".strip()

# Sorts a table when its header is clicked; numbers use data-sort, empty cells stay last.
_SCRIPT = """
document.querySelectorAll("table.board").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var numeric = th.dataset.type === "num";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var d = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return asc ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
""".strip()


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    return (
        f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
        "img-src data:"
    )


def _td(text: str, sort: Any, numeric: bool = False, css: str = "") -> str:
    classes = " ".join(c for c in ("num" if numeric else "", css) if c)
    attr = f' class="{classes}"' if classes else ""
    return f'<td data-sort="{_e("" if sort is None else sort)}"{attr}>{_e(text)}</td>'


def _table(ranking: Ranking, rows: list[Row], table_id: str, percent: set[str]) -> str:
    if not rows:
        text = _e(_EMPTY_PARTIAL if ranking.partial else _EMPTY)
        return f'<p class="empty" id="{table_id}-empty">{text}</p>'
    heads = [("Rank", "num"), ("Model", "text"), ("Pipeline", "text")]
    for c in ranking.columns:
        heads += [(column_title(c), "num"), ("Δ vs base", "num")]
    heads += [("n", "num"), ("Params", "num"), ("Run", "text"), ("Date", "text")]
    out = [f'<div class="scroll"><table class="board" id="{table_id}"><thead><tr>']
    out += [f'<th data-type="{kind}" tabindex="0">{_e(title)}</th>' for title, kind in heads]
    out.append("</tr></thead><tbody>")
    for row in rows:
        entry = row.entry
        model, label = entry["model"]["ref"], pipeline_label(entry)
        cells = [
            _td(str(row.rank), row.rank, True),
            _td(model, model, css="name"),
            _td(label, label, css="name"),
        ]
        for c in ranking.columns:
            value, delta = row.scores.get(c), row.deltas.get(c)
            css = "" if delta is None or delta == 0 else ("up" if delta > 0 else "down")
            cells += [
                _td(format_score(value, score_stderr(entry, c), c in percent), value, True),
                _td(format_delta(delta, c in percent), delta, True, css),
            ]
        params = entry["model"]["parameters"]
        date = (entry["finished"] or entry["created"])[:10]
        cells += [
            _td(str(_n(entry, ranking.primary) or "—"), _n(entry, ranking.primary), True),
            _td(f"{params / 1e6:.0f}M" if params else "—", params, True),
            _td(entry["run_id"], entry["run_id"], css="muted"),
            _td(date, date),
        ]
        out.append(f'<tr data-entry="{_e(entry["id"])}">' + "".join(cells) + "</tr>")
    return "".join(out) + "</tbody></table></div>"


#: Chart geometry: label column width, bar area width, bar height, label line height.
_LEFT, _WIDTH, _BAR_H, _LINE_H = 420, 420, 18, 14


def _chart_row(row: Any, lines: list[str], y: int, key: str, top: float, percent: bool) -> str:
    """One entry's bar: its wrapped label, the bar with its score, the base model's tick."""
    left, width, bar_h, line_h = _LEFT, _WIDTH, _BAR_H, _LINE_H
    label = " · ".join(lines)
    w = max(0.0, row.scores[key]) / top * width
    fill = "#bf8700" if row.entry["partial"] else "#0969da"
    muted = ' fill="#57606a"'
    spans = "".join(
        f'<tspan x="{left - 8}" dy="{0 if i == 0 else line_h}"{muted if i else ""}>'
        f"{_e(text)}</tspan>"
        for i, text in enumerate(lines)
    )
    svg = (
        f'<text class="label" x="{left - 8}" y="{y + 13}" text-anchor="end" '
        f'font-size="12">{spans}</text>'
        f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{fill}">'
        f"<title>{_e(label)}</title></rect>"
        f'<text x="{left + w + 4:.1f}" y="{y + 13}" font-size="12">'
        f"{_e(format_score(row.scores[key], None, percent))}</text>"
    )
    delta = row.deltas.get(key)
    if delta is not None:
        bx = left + max(0.0, row.scores[key] - delta) / top * width
        svg += (
            f'<line x1="{bx:.1f}" x2="{bx:.1f}" y1="{y - 2}" y2="{y + bar_h + 2}" '
            'stroke="#1b1f24" stroke-width="2"><title>base model</title></line>'
        )
    return svg


def _chart(ranking: Ranking, percent: set[str]) -> str:
    """Horizontal bars of the primary score per entry, with the base model's score marked."""
    key = ranking.primary
    rows = [r for r in ranking.full + ranking.partial if key in r.scores]
    if key is None or not rows:
        return '<p class="empty" id="chart-empty">No scores to chart yet.</p>'
    bases = [r.scores[key] - d for r in rows if (d := r.deltas.get(key)) is not None]
    values = [r.scores[key] for r in rows] + bases
    top = max(1.0 if key in percent else 0.0, max(values)) or 1.0
    left, width, bar_h, gap, line_h = _LEFT, _WIDTH, _BAR_H, 10, _LINE_H
    # Labels are never cut (the difference may be at the end: "... (fp32)" vs "(bf16)"):
    # the model, then the pipeline, each wrapped onto as many lines as it needs.
    labels = []
    for row in rows:
        pipeline = pipeline_label(row.entry) + (" (partial)" if row.entry["partial"] else "")
        labels.append([*_wrap(row.entry["model"]["ref"], 56), *_wrap(pipeline, 56)])
    heights = [max(bar_h, len(lines) * line_h) + gap for lines in labels]
    height = sum(heights) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{left + width + 90}" '
        f'height="{height}" viewBox="0 0 {left + width + 90} {height}" '
        f'aria-label="{_e(column_title(key))} by pipeline">'
    ]
    y = 10
    for row, lines, row_h in zip(rows, labels, heights, strict=True):
        parts.append(_chart_row(row, lines, y, key, top, key in percent))
        y += row_h
    parts.append(
        f'<text x="{left}" y="{height - 4}" font-size="11" fill="#57606a">'
        f"{_e(column_title(key))}; black tick: base model before training</text></svg>"
    )
    return "".join(parts)


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken at spaces where possible."""
    lines: list[str] = []
    for word in text.split(" "):
        while len(word) > width:
            lines.append(word[:width])
            word = word[width:]
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def render_html(name: str, ranking: Ranking) -> str:
    percent = percent_columns(ranking)
    data = [
        {
            "id": r.entry["id"],
            "model": r.entry["model"]["ref"],
            "pipeline": pipeline_label(r.entry),
            "partial": r.entry["partial"],
            "run_id": r.entry["run_id"],
            "scores": r.scores,
        }
        for r in ranking.full + ranking.partial
    ]
    body = [
        f"<h1>Leaderboard: {_e(name)}</h1>",
        f'<p class="muted">{len(data)} entries. Click a column header to sort. Δ is the '
        "change from the same model before training; partial entries (limited samples) "
        "are ranked separately.</p>",
        f"<figure>{_chart(ranking, percent)}</figure>",
        "<h2>Ranked</h2>",
        _table(ranking, ranking.full, "board-full", percent),
    ]
    if ranking.partial:
        body += [
            "<h2>Partial evaluations (limited samples)</h2>",
            _table(ranking, ranking.partial, "board-partial", percent),
        ]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_csp()}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Leaderboard: {_e(name)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(body)
        + f'\n<script type="application/json" id="board-data">{script_json(data)}</script>'
        + f"\n<script>{_SCRIPT}</script></body></html>\n"
    )


# --------------------------------------------------------------------------- the board


def render_board(board_dir: Path, by: str | None = None) -> list[str]:
    """Write the board's README.md and index.html from its valid entries; return one
    problem line per entry file that was skipped as invalid."""
    with board_lock(board_dir):
        found, problems = board_entries(board_dir)
        ranking = rank_entries([data for _, data in found], by)
        atomic_write_text(board_dir / "README.md", render_markdown(board_dir.name, ranking))
        atomic_write_text(board_dir / "index.html", render_html(board_dir.name, ranking))
    return problems
