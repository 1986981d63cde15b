"""Rich output: the run's story (model, hardware, steps with progress bars, score tables).

In a terminal, one live progress display with ETA. Piped or redirected, plain lines: no
colours, no carriage returns, and no wrapping or cutting of paths and keys (the console is
made wide enough that nothing is folded; each event is one line).

User text (paths, names, hints, messages) is never parsed as rich markup: ``esc`` it when it
goes into a markup string, or print it as ``Text``.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape as esc
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from srlm_harness.api import EvalResult

# Wide enough that no table cell or line is ever folded when the output is not a terminal.
PLAIN_WIDTH = 100_000


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    terminal = hasattr(stream, "isatty") and stream.isatty()
    return Console(
        stderr=stderr,
        highlight=False,
        soft_wrap=not terminal,
        width=None if terminal else PLAIN_WIDTH,
    )


console = _console()
err_console = _console(stderr=True)


def error(message: str) -> None:
    """The one error format: ``error: what is wrong (where): what to do``."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", str(message)), soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(Text.assemble(("warning:", "yellow"), " ", str(message)), soft_wrap=True)


def fmt_score(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def fmt_delta(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return ""
    delta = 100 * (value - base)
    colour = "green" if delta > 0 else "red" if delta < 0 else "dim"
    return f" [{colour}]({delta:+.1f})[/]"


class RichReporter:
    """Implements run.Reporter on a rich console."""

    def __init__(self, out: Console | None = None) -> None:
        self.out = out or console
        self.progress_bar: Progress | None = None
        self.task_id: Any = None
        self.scores: dict[str, dict[str, float]] = {}  # label -> task -> value
        self.labels: list[str] = []
        self.quarters: dict[str, int] = {}  # description -> quarters reported (piped output)

    def info(self, message: str) -> None:
        self._print(Text.assemble(("  · ", "dim"), message))

    def _print(self, text: str | Text) -> None:
        if self.progress_bar is not None:
            self.progress_bar.console.print(text, soft_wrap=True)
        else:
            self.out.print(text, soft_wrap=True)

    def step_start(self, step: Any, cached: bool) -> None:
        what = f"stage {step.label}" if step.kind == "stage" else f"eval {step.label}"
        if cached:
            return
        self.quarters = {}
        self.out.print(f"[bold]▶ {esc(what)}[/] [dim]{step.key[:12]}[/]")
        self.progress_bar = Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.out,
            transient=True,
            disable=not self.out.is_terminal,
            # Library output goes to the run's log, never through the live display.
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.progress_bar.start()
        self.task_id = self.progress_bar.add_task(what, total=None)

    def progress(self, done: int, total: int, description: str) -> None:
        if self.progress_bar is not None:
            self.progress_bar.update(
                self.task_id, completed=done, total=total or None, description=description
            )
        if not self.out.is_terminal and total > 0:
            # Piped: a plain line at each quarter, so a log shows the run is alive.
            quarter = 4 * min(done, total) // total
            if quarter > self.quarters.get(description, 0):
                self.quarters[description] = quarter
                self._print(Text.assemble(("  · ", "dim"), f"{description} {done}/{total}"))

    def stop(self) -> None:
        """Take the live display down (at the end of a step, or when the run is stopped)."""
        # Forget the display before stopping it: an interrupt landing inside rich's stop
        # must not make a second stop pop its render hooks again.
        bar, self.progress_bar = self.progress_bar, None
        if bar is not None:
            bar.stop()

    def step_end(self, step: Any, cached: bool, seconds: float, result: Any) -> None:
        self.stop()
        what = f"stage {step.label}" if step.kind == "stage" else f"eval {step.label}"
        how = "[cyan]cached[/]" if cached else f"[green]done[/] in {seconds:.1f}s"
        if step.kind == "stage":
            declared = getattr(getattr(step, "spec", None), "type", None)
            shown = _metric_summary(result or {}, getattr(declared, "summary", ()))
            self.out.print(f"[bold]✓ {esc(what)}[/] {how} [dim]{step.key[:12]}[/] {esc(shown)}")
            return
        assert isinstance(result, EvalResult)
        values = {s.task: s.value for s in result.scores}
        self.scores[step.label] = values
        if step.label not in self.labels:
            self.labels.append(step.label)
        base = self.scores.get("base", {})
        text = ", ".join(
            f"{esc(task)} {fmt_score(v)}"
            f"{fmt_delta(v, base.get(task)) if step.label != 'base' else ''}"
            for task, v in values.items()
        )
        partial = " [yellow](partial: limit)[/]" if result.provenance.partial else ""
        self.out.print(f"[bold]✓ {esc(what)}[/] {how}: {text}{partial}")

    def table(self, title: str = "Scores (% , change from base)") -> Table | None:
        if not self.scores:
            return None
        tasks: list[str] = []
        for values in self.scores.values():
            tasks += [t for t in values if t not in tasks]
        table = Table(title=title, title_justify="left")
        table.add_column("model")
        for task in tasks:
            table.add_column(esc(task), justify="right")
        base = self.scores.get("base", {})
        for label in self.labels:
            values = self.scores[label]
            cells = []
            for task in tasks:
                v = values.get(task)
                delta = fmt_delta(v, base.get(task)) if label != "base" else ""
                cells.append(f"{fmt_score(v)}{delta}")
            table.add_row(esc(label), *cells)
        return table


def _metric_summary(metrics: dict[str, Any], declared: tuple[str, ...] = ()) -> str:
    """The numbers a stage reported: those it declares (``StageType.summary``), else the
    usual loss/reward keys and then whatever other numbers it returned, four at most."""
    usual = ("train_loss", "loss", "reward", "reward_mean", "accuracy", "kl")
    order = list(declared) or [*usual, *(k for k in metrics if k not in usual)]
    keys = [
        k
        for k in order
        if isinstance(metrics.get(k), int | float) and not isinstance(metrics.get(k), bool)
    ]
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys[: len(declared) or 4])


def is_interactive() -> bool:
    return sys.stdout.isatty()
