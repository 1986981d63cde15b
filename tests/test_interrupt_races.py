"""An interrupt that lands inside a library's bookkeeping still ends as an interrupt."""

from __future__ import annotations

import io
import os
import signal

import pytest
from rich.console import Console

from srlm_harness.cli.console import RichReporter
from srlm_harness.pipeline.interrupt import stop_on_signal


def test_a_library_error_raised_after_a_signal_is_reported_as_the_interrupt() -> None:
    def library_that_turns_the_interrupt_into_its_own_error() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            signal.sigtimedwait([], 0)  # let the handler run here
            raise AssertionError("the handler did not run")
        except KeyboardInterrupt:
            [].pop()  # a half-updated stack, as rich's render hooks can be

    with pytest.raises(KeyboardInterrupt) as caught:
        with stop_on_signal(lambda: "interrupted"):
            library_that_turns_the_interrupt_into_its_own_error()
    assert isinstance(caught.value.__cause__, IndexError)


def test_without_a_signal_library_errors_pass_through() -> None:
    with pytest.raises(IndexError), stop_on_signal(lambda: "interrupted"):
        [].pop()


def test_stopping_a_display_that_an_interrupt_left_half_stopped_is_safe() -> None:
    reporter = RichReporter()
    reporter.out = Console(file=io.StringIO(), force_terminal=True)  # a live display

    class Step:
        kind, label, key = "eval", "base", "0" * 64

    reporter.step_start(Step, cached=False)
    reporter.progress(1, 4, "eval: generating answers")
    bar = reporter.progress_bar
    assert bar is not None
    original = bar.stop

    def interrupted_stop() -> None:
        original()
        raise KeyboardInterrupt  # landed after rich popped its hooks, before we noted it

    bar.stop = interrupted_stop  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        reporter.stop()
    reporter.stop()  # the run's interrupt handler stops the display again: no IndexError
    assert reporter.progress_bar is None
