"""Execute a plan: cache hits, stage and evaluation execution, manifests, lifecycle hooks.

A run writes ``runs/<run_id>/manifest.json`` at the start and after every step, so even an
interrupted run says how far it got. Finished stages and evaluations live in the store
under their keys; running the same plan again finds them and skips the work.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from srlm_harness.api import (
    EvalProvenance,
    EvalRequest,
    EvalResult,
    RunInfo,
    StageContext,
    StageResult,
    StageType,
    TaskScore,
    UserError,
    dataset_spec,
)
from srlm_harness.pipeline import library_errors, remote_code, tracking
from srlm_harness.pipeline.launch import InProcessLauncher as InProcessLauncher
from srlm_harness.pipeline.launch import make_launcher
from srlm_harness.pipeline.plan import EvalStep, Plan, StageStep
from srlm_harness.pipeline.session import Session
from srlm_harness.store.manifest import (
    RUN_SCHEMA,
    EntryManifest,
    ModelRecord,
    RunManifest,
    ScoreRecord,
    StepRecord,
)
from srlm_harness.store.store import Build
from srlm_harness.util.fs import atomic_write_text

__all__ = ["RUN_SCHEMA", "Runner", "StageFailed", "check_plan", "load_records"]


class StageFailed(Exception):
    """A stage or evaluation raised something other than a UserError."""

    def __init__(self, what: str, exc: BaseException, log: Path | None):
        self.what, self.exc, self.log = what, exc, log
        text = " ".join(str(exc).split())
        super().__init__(f"{what} failed: {type(exc).__name__}: {text}")


class Reporter(Protocol):
    """What the runner tells the person watching (the CLI's rich console implements it)."""

    def info(self, message: str) -> None: ...
    def step_start(self, step: StageStep | EvalStep, cached: bool) -> None: ...
    def progress(self, done: int, total: int, description: str) -> None: ...
    def step_end(
        self, step: StageStep | EvalStep, cached: bool, seconds: float, result: Any
    ) -> None: ...


class Launcher(Protocol):
    """Runs one stage or evaluation: in this process (``InProcessLauncher``, the default)
    or as several processes (``srlm_harness.pipeline.launch.AccelerateLauncher``)."""

    def launch(self, stage: StageType, ctx: StageContext) -> Any: ...
    def evaluate(self, evaluator: Any, request: EvalRequest) -> EvalResult: ...
    def describe(self) -> dict[str, Any]: ...


def load_records(registry: Any, value: Any) -> list[dict[str, Any]]:
    """The records of a dataset spec (a name or ``{name, split, limit, ...options}``)."""
    spec = dataset_spec(value)
    source = registry.datasets.get(spec["name"], where="dataset")
    options = {k: v for k, v in spec.items() if k not in ("name", "split", "limit")}
    limit = spec.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UserError(
            f"a dataset limit is a whole number >= 1, got {limit!r}",
            f"dataset {spec['name']}: limit",
        )
    records = source.load(options, spec["split"])
    return list(records[:limit] if limit else records)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    # Sortable to the millisecond, so `runs list` and "the latest run" follow start order.
    moment = dt.datetime.now(dt.timezone.utc)
    stamp = moment.strftime("%Y%m%dT%H%M%S") + f"{moment.microsecond // 1000:03d}"
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so temporary outputs are cleaned up either way."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def score_records(scores: list[TaskScore]) -> list[ScoreRecord]:
    return [
        ScoreRecord(task=s.task, metric=s.metric, value=s.value, stderr=s.stderr, n=s.n,
                    details=s.details)
        for s in scores
    ]


class Runner:
    def __init__(
        self, session: Session, plan: Plan, reporter: Reporter, launcher: Launcher | None = None
    ) -> None:
        self.session = session
        self.plan = plan
        self.reporter = reporter
        self.launcher = launcher or make_launcher(plan.pipeline.launch, session)
        self.store = session.store
        self.hook = session.plugins.hook
        self.model_dirs: dict[str, Path] = {}
        self.datasets: dict[str, list[dict[str, Any]]] = {}
        self.manifest = RunManifest()
        self.run_dir: Path | None = None
        self.info: RunInfo | None = None

    # ------------------------------------------------------------------ helpers

    def _save(self) -> None:
        assert self.run_dir is not None
        self.manifest.write(self.run_dir / "manifest.json")

    def model_dir(self, key: str) -> Path:
        """The HF directory for a model key: the base model, or a finished stage's output."""
        if key not in self.model_dirs:
            if key == self.plan.model.key:
                # A first use may download or convert (a GGUF) for a minute or more.
                self.reporter.info(f"resolving model {self.plan.model.ref} ...")
                resolved = self.session.resolve_model(self.plan.model.ref)
                model = self.manifest.model
                model.source = resolved.source
                model.path = str(resolved.path)
                model.details = resolved.details
                model.resolution = self.session.resolution_log.get(self.plan.model.ref, [])
                if resolved.identity != self.plan.model.identity:
                    model.identity_warning = (
                        f"planned {self.plan.model.identity}, resolved {resolved.identity}"
                    )
                tried = ", ".join(
                    f"{t['source']} ({t['result']})"
                    for t in self.session.resolution_log.get(self.plan.model.ref, [])
                )
                self.reporter.info(
                    f"model {self.plan.model.ref} <- {resolved.source} ({resolved.path}); "
                    f"sources tried in order: {tried}"
                )
                self.model_dirs[key] = resolved.path
            else:
                self.model_dirs[key] = self.store.path("stages", key) / "model"
        return self.model_dirs[key]

    def load_dataset(self, value: Any) -> list[dict[str, Any]]:
        spec = dataset_spec(value)
        memo = json.dumps(spec, sort_keys=True, default=str)
        if memo not in self.datasets:  # read once: by the preflight, then by the stage
            self.datasets[memo] = load_records(self.session.registry, spec)
        return [dict(r) for r in self.datasets[memo]]

    def stage_context(self, step: StageStep, input_model: Path, output_dir: Path) -> StageContext:
        work = self.store.work_dir(step.key)
        registry = self.session.registry
        return StageContext(
            input_model=input_model,
            output_dir=output_dir,
            config=step.spec.config,
            seed=self.plan.pipeline.seed,
            hardware=self.plan.hardware,
            checkpoint_dir=work / "checkpoints",
            work_dir=work / "scratch",
            load_dataset=self.load_dataset,
            resolve_model=lambda ref: self.session.resolve_model(ref).path,
            reward=lambda name: registry.rewards.get(name, where=f"stage {step.label}"),
            progress=self.reporter.progress,
            log=self.reporter.info,
            stage_name=step.name,
            index=step.index,
            input_key=step.input_key,
            cache_dir=self.store.root / "cache" / step.name,
            stage_type=step.spec.type,
            find_stage=lambda name: registry.stages.get(name, where=f"stage {step.label}"),
        )

    # ------------------------------------------------------------------ the run

    def new_manifest(self, run_id: str) -> RunManifest:
        """The run's manifest as it starts: what runs, on what, with which libraries."""
        pipeline = self.plan.pipeline
        source = Path(pipeline.source)
        return RunManifest(
            schema=RUN_SCHEMA,
            run_id=run_id,
            name=pipeline.name,
            status="running",
            spec=pipeline.as_dict(),
            spec_source=pipeline.source,
            # Absolute, so a later `leaderboard publish` finds the spec's project from anywhere.
            spec_path=str(source.resolve()) if source.is_file() else None,
            spec_hash=pipeline.spec_hash(),
            model=ModelRecord(
                ref=self.plan.model.ref,
                identity=self.plan.model.identity,
                identified_by=self.plan.model.source,
                key=self.plan.model.key,
            ),
            steps=[],
            environment=self.session.environment(),
            hardware=self.plan.hardware.as_dict(),
            launch=self.launcher.describe(),
            started=now(),
            finished=None,
            trust_remote_code=pipeline.trust_remote_code,
        )

    def execute(self, run_id: str | None = None) -> dict[str, Any]:
        """Run the plan under a new run id; return the final run manifest (as JSON)."""
        pipeline = self.plan.pipeline
        run_id = run_id or new_run_id()
        self.store.check_new_run_id(run_id)
        self.store.clean_tmp()
        self.manifest = self.new_manifest(run_id)
        with remote_code.allow(pipeline.trust_remote_code):
            self.preflight()  # before the run record: bad input leaves no trace in the store
        self.run_dir = self.store.new_run_dir(run_id)
        owner = self.store.own_run(self.run_dir)  # `runs list` tells a dead run by it
        self._save()
        if hasattr(self.launcher, "run_dir"):
            self.launcher.run_dir = self.run_dir  # per-rank logs go under the run folder
        if pipeline.trust_remote_code:
            self.reporter.info(
                "trust_remote_code: true — model directories may run their own Python code"
            )
        self.info = RunInfo(run_id, self.run_dir, pipeline, self.plan)
        status = "failed"
        try:
            with sigterm_as_interrupt(), remote_code.allow(pipeline.trust_remote_code):
                self.run_steps()
            status = "complete"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except (UserError, StageFailed) as exc:
            self.manifest.error = str(exc)
            raise
        finally:
            self.manifest.status = status
            self.manifest.finished = now()
            self._save()
            self.store.release_run(owner)
            self.hook.srlm_pipeline_end(
                run=self.info, status=status, summary=self.manifest.to_dict()
            )
        return self.manifest.to_dict()

    def run_steps(self) -> None:
        """Every step in order, the run manifest saved after each."""
        self.hook.srlm_pipeline_start(run=self.info)
        for step in self.plan.steps:
            if isinstance(step, StageStep):
                self.run_stage(step)
            else:
                self.run_eval(step)
            self._save()

    def preflight(self) -> None:
        """Let every stage check its inputs before anything trains (bad reward names, LoRA
        targets, tokenizer mismatches...). Stages whose input is not built yet are checked
        against the base model, which has the same tokenizer and architecture. The base
        model is resolved (a GGUF converted) and the datasets of stages to run are read here
        too, so that a bad model or data file is reported before the run record exists."""
        if any(not s.cached for s in self.plan.steps):
            self.model_dir(self.plan.model.key)
        for step in self.plan.stages:
            if not step.cached and step.spec.type.references is not None:
                for ref in step.spec.type.references(step.spec.config):
                    if ref.kind == "dataset" and ref.value is not None:
                        if not self.load_dataset(ref.value):
                            raise UserError(f"dataset {dataset_spec(ref.value)['name']} has "
                                            "no records", f"stage {step.label}")
        pending = [s for s in self.plan.stages if not s.cached and s.spec.type.preflight]
        for step in pending:
            input_key = step.input_key
            built = input_key == self.plan.model.key or self.store.manifest("stages", input_key)
            model = self.model_dir(input_key if built else self.plan.model.key)
            ctx = self.stage_context(step, model, Path(os.devnull))
            assert step.spec.type.preflight is not None
            step.spec.type.preflight(ctx)

    def _record(self, step: StageStep | EvalStep, **fields: Any) -> StepRecord:
        record = StepRecord.model_validate({**step.describe(), "status": "complete", **fields})
        self.manifest.steps.append(record)
        return record

    def run_stage(self, step: StageStep) -> None:
        """Build a stage's model into the store, or reuse the one built before."""
        with self.store.build("stages", step.key) as build:
            self.reporter.step_start(step, build.cached is not None)
            if build.cached is not None:
                cached = EntryManifest.from_dict(build.cached, self._entry_where(build))
                self._record(step, cached=True, seconds=cached.seconds, metrics=cached.metrics,
                             path=str(self.store.path("stages", step.key) / "model"))
                self.reporter.step_end(step, True, 0.0, cached.metrics)
                self.hook.srlm_stage_end(run=self.info, stage=step, result=None, cached=True)
                return
            result, seconds = self._train(step, build)
            build.commit(EntryManifest.model_validate({
                **step.describe(),
                "metrics": result.metrics,
                "seconds": seconds,
                "finished": now(),
                # Not part of the key: the global batch is the same on any process count.
                "launch": self.launcher.describe(),
                "environment": self.manifest.environment,
            }))
            # Checkpoints only serve resuming this stage; a full fine-tune's are gigabytes.
            self.store.discard(self.store.root / "work" / step.key)
        self._record(step, cached=False, seconds=seconds, metrics=result.metrics,
                     path=str(self.store.path("stages", step.key) / "model"))
        self.reporter.step_end(step, False, seconds, result.metrics)
        self.hook.srlm_stage_end(run=self.info, stage=step, result=result, cached=False)

    def _train(self, step: StageStep, build: Build) -> tuple[StageResult, float]:
        """Run a stage into ``build.tmp/model``: (its result, seconds it took)."""
        assert build.tmp is not None and self.info is not None
        input_model = self.model_dir(step.input_key)
        output = build.tmp / "model"
        output.mkdir()
        ctx = self.stage_context(step, input_model, output)
        ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        self.hook.srlm_stage_start(run=self.info, stage=step)
        started = time.perf_counter()
        try:
            with tracking.stage_environment(self.info.run_id, self.info.run_dir, step.label):
                result = self.launcher.launch(step.spec.type, ctx)
            if not isinstance(result, StageResult):
                result = StageResult(dict(result or {}))
            if not (output / "config.json").is_file():
                raise UserError(
                    f"stage '{step.name}' wrote no model (no config.json)", f"stage {step.label}"
                )
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise self._failure(f"stage {step.label}", exc, step) from exc
        return result, round(time.perf_counter() - started, 2)

    def run_eval(self, step: EvalStep) -> None:
        """Evaluate a model into the store, or reuse the evaluation made before."""
        evaluator = self.session.registry.evaluators.get(step.evaluator)
        with self.store.build("evals", step.key) as build:
            self.reporter.step_start(step, build.cached is not None)
            if build.cached is None:
                entry, seconds = self._evaluate(step, evaluator, build)
                build.commit(entry)
            else:
                entry = EntryManifest.from_dict(build.cached, self._entry_where(build))
                seconds = 0.0
        folder = self.store.path("evals", step.key)
        record = self._record(
            step, cached=build.cached is not None, seconds=entry.seconds, scores=entry.scores,
            provenance=entry.provenance, files=_absolute_files(entry.files, folder),
        )
        scores = [TaskScore(s.task, s.metric, s.value, s.stderr, s.n, s.details)
                  for s in record.scores]
        result = EvalResult(scores, EvalProvenance.from_dict(record.provenance), record.files)
        self.reporter.step_end(step, build.cached is not None, seconds, result)
        self.hook.srlm_eval_end(
            run=self.info, step=step, result=result, cached=build.cached is not None
        )

    def _evaluate(
        self, step: EvalStep, evaluator: Any, build: Build
    ) -> tuple[EntryManifest, float]:
        """Run an evaluation into ``build.tmp``: (the entry's manifest, seconds it took)."""
        assert build.tmp is not None
        model = self.model_dir(step.model_key)
        remote_code.check_model(model)
        request = EvalRequest(
            model, step.tasks, build.tmp, step.limit, step.seed, self.plan.hardware,
            dict(step.options), self.reporter.info, progress=self.reporter.progress,
        )
        self.hook.srlm_eval_start(run=self.info, step=step)
        started = time.perf_counter()
        try:
            result = self.launcher.evaluate(evaluator, request)
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise self._failure(f"evaluation '{step.label}'", exc, step) from exc
        seconds = round(time.perf_counter() - started, 2)
        entry = EntryManifest.model_validate({
            **step.describe(),
            "scores": score_records(result.scores),
            "provenance": result.provenance.to_dict(),
            "files": _relative_files(result.files, build.tmp),
            "seconds": seconds,
            "finished": now(),
            "launch": self.launcher.describe(),
        })
        return entry, seconds

    def _entry_where(self, build: Build) -> str:
        return str(self.store.path(build.kind, build.key) / "manifest.json")

    def _failure(self, what: str, exc: BaseException, step: Any = None) -> Exception:
        log = self.run_dir / "error.log" if self.run_dir else None
        if log is not None:
            atomic_write_text(log, "".join(traceback.format_exception(exc)))
        return library_errors.translate(exc, what, step) or StageFailed(what, exc, log)


class NullReporter:
    """A reporter that shows nothing (checks that run before a plan is shown)."""

    def info(self, message: str) -> None:
        pass

    def step_start(self, step: StageStep | EvalStep, cached: bool) -> None:
        pass

    def progress(self, done: int, total: int, description: str) -> None:
        pass

    def step_end(
        self, step: StageStep | EvalStep, cached: bool, seconds: float, result: Any
    ) -> None:
        pass


def check_plan(session: Session, plan: Plan) -> None:
    """The checks a run makes before its first step, without running anything: every
    pending stage's preflight (against the base model where its input is not built yet).
    ``plan`` and ``run --dry-run`` call it, so they never show "to run" for a spec that
    ``run`` would refuse."""
    runner = Runner(session, plan, NullReporter())
    runner.preflight()


def _relative_files(files: dict[str, Any], base: Path) -> dict[str, Any]:
    def rel(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rel(v) for k, v in value.items()}
        path = Path(value)
        try:
            return str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            return str(value)

    return {k: rel(v) for k, v in files.items()}


def _absolute_files(files: dict[str, Any], base: Path) -> dict[str, Any]:
    def absolute(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: absolute(v) for k, v in value.items()}
        path = Path(value)
        return str(path if path.is_absolute() else (base / path).resolve())

    return {k: absolute(v) for k, v in files.items()}


ProgressCallback = Callable[[int, int, str], None]
