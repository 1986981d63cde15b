"""Evaluation progress from lm-eval's own request loops, for the harness's display.

lm-eval counts the requests it has answered with tqdm bars, which would print lines of their
own under the harness's display. While an evaluation runs, the model modules' ``tqdm`` is
replaced by a counter that forwards (done, total) to the run's progress callback and prints
nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

Progress = Callable[[int, int, str], None]
#: lm-eval modules that count requests with ``tqdm`` (the ones loaded are patched).
MODEL_MODULES = ("lm_eval.models.huggingface", "lm_eval.models.vllm_causallms")


def _what(desc: str | None) -> str:
    text = (desc or "").lower()
    if "generate" in text:
        return "eval: generating answers"
    if "loglikelihood" in text:
        return "eval: scoring choices"
    return "eval: requests"


class _Counter:
    """Enough of tqdm's interface for lm-eval's request loops."""

    def __init__(
        self, progress: Progress, iterable: Iterable[Any] | None = None, *args: Any, **kwargs: Any
    ) -> None:
        self.progress, self.iterable = progress, iterable
        total = kwargs.get("total")
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n, self.what = int(total or 0), 0, _what(kwargs.get("desc"))
        self.progress(0, self.total, self.what)

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
def request_progress(progress: Progress | None) -> Iterator[None]:
    """Within the block, lm-eval's request loops report to ``progress`` (if given)."""
    if progress is None:
        yield
        return
    patched = []
    for name in MODEL_MODULES:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "tqdm"):
            patched.append((module, module.tqdm))
            module.tqdm = lambda *a, **k: _Counter(progress, *a, **k)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module, original in patched:
            module.tqdm = original  # type: ignore[attr-defined]
