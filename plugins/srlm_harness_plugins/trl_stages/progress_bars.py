"""Progress from inside the libraries, for the harness's one display.

Libraries count their own work with tqdm bars, which would print lines of their own under
the display (or into the run's log). ``bars_to_progress`` swaps a library module's ``tqdm``
for a counter that forwards (done, total, description) to a stage's or an evaluation's
progress callback and prints nothing: lm-eval's request loops, the datasets map that TRL
tokenises with. ``report_generation`` shows a GRPO step's generation, token by token,
where the step counter does not move.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from srlm_harness.api import StageContext

Progress = Callable[[int, int, str], None]

#: The module attributes through which ``datasets`` builds its map/filter bars.
DATASETS_BARS = (("datasets.arrow_dataset", "hf_tqdm"),)


class _Counter:
    """Enough of tqdm's interface for a library's loops: counts, reports, prints nothing."""

    def __init__(
        self,
        progress: Progress,
        describe: Callable[[str], str],
        iterable: Iterable[Any] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self.progress, self.iterable = progress, iterable
        total = kwargs.get("total")
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n = int(total or 0), int(kwargs.get("initial") or 0)
        self.what = describe(str(kwargs.get("desc") or ""))
        self.progress(self.n, self.total, self.what)

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def __enter__(self) -> _Counter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self.progress(self.n, self.total, self.what)

    def close(self) -> None:
        pass

    def set_description(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextmanager
def bars_to_progress(
    progress: Progress | None,
    targets: Iterable[tuple[str, str]],
    describe: Callable[[str], str],
) -> Iterator[None]:
    """Within the block, the tqdm bars made through ``targets`` ((module, attribute) pairs;
    modules not imported yet are left alone) report to ``progress`` instead of printing.
    ``describe`` turns a bar's ``desc`` into the display's description."""
    if progress is None:
        yield
        return
    patched = []
    for module_name, attribute in targets:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attribute):
            patched.append((module, attribute, getattr(module, attribute)))
            setattr(module, attribute, functools.partial(_Counter, progress, describe))
    try:
        yield
    finally:
        for module, attribute, original in patched:
            setattr(module, attribute, original)


def token_counter(trainer: Any, ctx: StageContext, max_new_tokens: int,
                  description: str) -> Any:
    """A streamer reporting one generation call's tokens to ``ctx.progress``, as
    :func:`report_generation` gives ``generate``."""
    return _TokenCounter(ctx, trainer, max_new_tokens, description)


class _TokenCounter:
    """A transformers streamer (``put``/``end``) that only counts."""

    def __init__(self, ctx: StageContext, trainer: Any, total: int, description: str) -> None:
        self.ctx, self.trainer, self.total, self.description = ctx, trainer, total, description
        self.calls, self.what = 0, description

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 1:  # the first call carries the prompts
            rows = int(value.shape[0]) if getattr(value, "ndim", 1) > 1 else 1
            self.what = f"{self.description}: generating {rows} completions (tokens)"
            self.ctx.progress(0, self.total, self.what)
            return
        self.ctx.progress(min(self.calls - 1, self.total), self.total, self.what)

    def end(self) -> None:
        state = self.trainer.state
        self.ctx.progress(state.global_step, state.max_steps, self.description)


def report_generation(
    trainer: Any, ctx: StageContext, max_new_tokens: int, description: str
) -> None:
    """Make ``trainer.model.generate`` report its tokens to ``ctx.progress``."""
    model = trainer.model
    generate = model.generate

    @functools.wraps(generate)
    def counted(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("streamer") is None:
            kwargs["streamer"] = _TokenCounter(ctx, trainer, max_new_tokens, description)
        return generate(*args, **kwargs)

    model.generate = counted
