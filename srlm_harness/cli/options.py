"""Options and argument types that several commands share: ``--json``, ``--limit`` (a count
or a fraction), ``--tasks`` lists, ``--report-to``, ``-o``, and a SPEC (a file or a shipped
recipe's name, completed in the shell)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of tables."
)


def override_option(help_text: str) -> Any:
    """``-o/--override PATH=VALUE`` (repeatable), as every command that builds a plan takes."""
    return click.option(
        "-o", "--override", "overrides", multiple=True, metavar="PATH=VALUE", help=help_text
    )


def split_names(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--tasks a,b --tasks c`` -> ``("a", "b", "c")``, as lm_eval takes them."""
    return tuple(t.strip() for item in values for t in item.split(",") if t.strip())


def trackers(report_to: tuple[str, ...]) -> list[str]:
    """``--report-to`` and ``$SRLM_HARNESS_REPORT_TO``, checked before anything runs."""
    from srlm_harness.pipeline import tracking
    return tracking.check(list(dict.fromkeys([*split_names(report_to), *tracking.requested()])))


report_option = click.option(
    "--report-to",
    "report_to",
    multiple=True,
    metavar="TRACKER",
    help="Log training to tensorboard, wandb, mlflow, trackio... (transformers' report_to; "
    "env SRLM_HARNESS_REPORT_TO). TensorBoard logs go into the run's folder.",
)


def spec_file(spec: str | None) -> str | None:
    """A spec path as given, or the file of a shipped recipe named so (``smollm2-cpu/sft``)."""
    if spec is None or Path(spec).exists():
        return spec
    from srlm_harness import recipes
    if spec.removesuffix(".yaml") in recipes.names():
        return str(recipes.path(spec))
    return spec


def complete_spec(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    """Shell completion of a SPEC argument: shipped recipe names, then files."""
    from click.shell_completion import CompletionItem

    from srlm_harness import recipes
    names = [CompletionItem(n) for n in recipes.names() if n.startswith(incomplete)]
    return [*names, CompletionItem(incomplete, type="file")]


class SampleLimit(click.ParamType):
    """``--limit 100`` (samples per task) or ``--limit 0.1`` (a fraction, as lm_eval takes)."""

    name = "N|FRACTION"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of samples or a fraction", param, ctx)
        if number <= 0 or (number >= 1 and not number.is_integer()):
            self.fail(
                f"{value!r}: give a whole number of samples or a fraction below 1", param, ctx
            )
        return int(number) if number >= 1 else number


limit_option = click.option(
    "--limit",
    type=SampleLimit(),
    help="Evaluate on the first N samples per task, or a fraction of each (0.1).",
)
