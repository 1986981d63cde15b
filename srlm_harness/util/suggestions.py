"""Did-you-mean hints for unknown names (keys, plugins, tasks, engines), one wording everywhere."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(name: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """Up to ``n`` of ``choices`` that look like ``name``, best first."""
    return difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=cutoff)


def did_you_mean(name: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6,
                 otherwise: str | None = None) -> str | None:
    """``"did you mean 'a', 'b'?"`` for the choices close to ``name``; else ``otherwise``
    (for instance ``"known: a, b, c"``), which may be None."""
    close = close_matches(name, choices, n=n, cutoff=cutoff)
    if close:
        return f"did you mean {', '.join(repr(c) for c in close)}?"
    return otherwise
