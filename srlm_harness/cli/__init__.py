"""The command line: the click application, one module per command group, and the rich output."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """``srlm-harness``: see :func:`srlm_harness.cli.app.main`."""
    from srlm_harness.cli.app import main as run

    run(argv)
