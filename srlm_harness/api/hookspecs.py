"""The srlm-harness plugin API: every hook a plugin can implement.

A plugin is a module (or object) with functions named after these hooks, decorated with
``@hookimpl`` (any function whose name starts with ``srlm_`` is treated as a hook
implementation, so a misspelled hook name is reported at start-up instead of being
silently ignored). Publish it under the ``srlm_harness`` entry-point group::

    [project.entry-points.srlm_harness]
    my_plugin = "my_package.my_plugin"

The built-in plugins in ``plugins/`` are registered exactly this way and are the best
examples. Register-style hooks receive a ``register`` callable: call it once per object
(the core checks names and reports clashes naming both plugins). Objects are the
dataclasses of :mod:`srlm_harness.api`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    import click

    from srlm_harness.api import (
        DatasetSource,
        EvalResult,
        Evaluator,
        ModelSource,
        Publisher,
        Reward,
        RunInfo,
        StageResult,
        StageType,
        Task,
        Verifier,
    )
    from srlm_harness.pipeline.plan import EvalStep, StageStep

PROJECT = "srlm_harness"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------- registration


@hookspec
def srlm_register_stages(register: Callable[[StageType], None]) -> None:
    """Register training stages (strategies), e.g. ``register(StageType("sft", ...))``.

    Called once at start-up. A stage's name is what pipeline specs write under ``stages:``
    and what ``--stage NAME`` takes.
    """


@hookspec
def srlm_register_tasks(register: Callable[[Task], None]) -> None:
    """Register evaluation tasks, e.g. ``register(Task("gsm8k", include_path=dir))``.

    A task runs on the evaluator it names (``Task.evaluator``; empty: the default one) and
    may name the verifier that scores it (``Task.verifier``, checked when a spec is read).
    For the built-in lm-eval evaluator a task with an ``include_path`` adds a directory of
    task YAML files to lm-eval's task index (its built-in task names work without
    registration); everything in that folder, the modules its configs name with
    ``!function``, the files in ``Task.files`` and this plugin's version join the task's
    evaluation key.
    """


@hookspec
def srlm_register_verifiers(register: Callable[[Verifier], None]) -> None:
    """Register answer verifiers, e.g. ``register(Verifier("parity", verify=check))``.

    A verifier judges a response against a gold answer (``verify(response, gold, **info)
    -> Verdict``). Tasks name one in ``Task.verifier`` and dataset records in their
    ``verifier`` column; the ``accuracy`` reward and sampling strategies look it up with
    ``find_verifier(name)``, so one verifier means "correct" in training and evaluation.
    """


@hookspec
def srlm_register_rewards(register: Callable[[Reward], None]) -> None:
    """Register reward functions for RL stages, chosen by name in specs with a weight and
    options (``rewards: {NAME: 0.5}`` or ``{NAME: {weight: 0.5, ...options}}``).

    A reward function takes ``(prompts, completions, **kwargs)`` and returns one float per
    completion; dataset columns (those in ``Reward.columns`` must be present), the options
    validated by ``Reward.options`` and the trainer's extras arrive as keyword arguments.
    """


@hookspec
def srlm_register_datasets(register: Callable[[DatasetSource], None]) -> None:
    """Register dataset sources. Specs refer to them as ``dataset: NAME`` or
    ``dataset: {name: NAME, ...options}``; each resolves to standard records."""


@hookspec
def srlm_register_model_sources(register: Callable[[ModelSource], None]) -> None:
    """Register model sources: ways to turn a reference (hub id, path, GGUF file, ...) into
    a local Hugging Face model directory. Tried in priority order."""


@hookspec
def srlm_register_evaluators(register: Callable[[Evaluator], None]) -> None:
    """Register evaluation engines. Tasks name the evaluator that runs them; a task that
    names none runs on the evaluator registered with ``default=True``. An evaluator with
    ``accepts_unregistered_tasks=True`` takes task names nobody registered (its
    ``check_tasks`` rejects the ones it does not know)."""


@hookspec
def srlm_register_publishers(register: Callable[[Publisher], None]) -> None:
    """Register leaderboard publishers. A publisher with ``board=True`` writes into a
    leaderboard folder and gets the core's board handling (lock, duplicate check, sample
    logs, rendering) around its ``publish``; others get the target as given."""


@hookspec
def srlm_libraries() -> list[str]:
    """Return the names of installed distributions whose versions this plugin's results
    depend on (``["trl", "torch"]``). The core records their versions in every run's
    environment; a name that is not installed is left out."""
    return []


@hookspec
def srlm_register_commands(cli: click.Group) -> None:
    """Add commands to the ``srlm-harness`` CLI: decorate functions with ``@cli.command()``.

    Keep imports of heavy libraries inside the command functions so ``--help`` stays fast.
    """


# --------------------------------------------------------------------------- lifecycle


@hookspec
def srlm_pipeline_start(run: RunInfo) -> None:
    """Called once before the first step of a run (after the spec validated and the plan
    was made). ``run.plan`` lists every step with its cache key."""


@hookspec
def srlm_stage_start(run: RunInfo, stage: StageStep) -> None:
    """Called before a stage executes (not for cache hits). ``stage`` is the plan step
    (``stage.name``, ``stage.key``, ``stage.spec.config``)."""


@hookspec
def srlm_stage_end(
    run: RunInfo, stage: StageStep, result: StageResult | None, cached: bool
) -> None:
    """Called after a stage finished or was taken from the cache (``cached=True``)."""


@hookspec
def srlm_eval_start(run: RunInfo, step: EvalStep) -> None:
    """Called before an evaluation step executes (not for cache hits)."""


@hookspec
def srlm_eval_end(run: RunInfo, step: EvalStep, result: EvalResult, cached: bool) -> None:
    """Called after an evaluation step with its scores."""


@hookspec
def srlm_pipeline_end(run: RunInfo, status: str, summary: dict[str, Any]) -> None:
    """Called once when a run ends. ``status`` is ``"complete"`` or ``"failed"``;
    ``summary`` holds the manifest written for the run."""
