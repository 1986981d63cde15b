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
from srlm_harness.store.store import atomic_write_json

RUN_SCHEMA = "srlm-harness/run@1"


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


def score_dicts(scores: list[TaskScore]) -> list[dict[str, Any]]:
    return [
        {
            "task": s.task,
            "metric": s.metric,
            "value": s.value,
            "stderr": s.stderr,
            "n": s.n,
            "details": s.details,
        }
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
        self.manifest: dict[str, Any] = {}
        self.run_dir: Path | None = None
        self.info: RunInfo | None = None

    # ------------------------------------------------------------------ helpers

    def _save(self) -> None:
        assert self.run_dir is not None
        atomic_write_json(self.run_dir / "manifest.json", self.manifest)

    def model_dir(self, key: str) -> Path:
        """The HF directory for a model key: the base model, or a finished stage's output."""
        if key not in self.model_dirs:
            if key == self.plan.model.key:
                # A first use may download or convert (a GGUF) for a minute or more.
                self.reporter.info(f"resolving model {self.plan.model.ref} ...")
                resolved = self.session.resolve_model(self.plan.model.ref)
                self.manifest["model"].update(
                    source=resolved.source,
                    path=str(resolved.path),
                    details=resolved.details,
                    resolution=self.session.resolution_log.get(self.plan.model.ref, []),
                )
                if resolved.identity != self.plan.model.identity:
                    self.manifest["model"]["identity_warning"] = (
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

    def execute(self, run_id: str | None = None) -> dict[str, Any]:
        pipeline = self.plan.pipeline
        run_id = run_id or new_run_id()
        self.store.check_new_run_id(run_id)
        self.store.clean_tmp()
        self.manifest = {
            "schema": RUN_SCHEMA,
            "run_id": run_id,
            "name": pipeline.name,
            "status": "running",
            "spec": pipeline.as_dict(),
            "spec_source": pipeline.source,
            # Absolute, so a later `leaderboard publish` finds the spec's project from anywhere.
            "spec_path": str(Path(pipeline.source).resolve())
            if Path(pipeline.source).is_file() else None,
            "spec_hash": pipeline.spec_hash(),
            "model": {
                "ref": self.plan.model.ref,
                "identity": self.plan.model.identity,
                "identified_by": self.plan.model.source,
                "key": self.plan.model.key,
            },
            "steps": [],
            "environment": self.session.environment(),
            "hardware": self.plan.hardware.as_dict(),
            "launch": self.launcher.describe(),
            "started": now(),
            "finished": None,
            "trust_remote_code": pipeline.trust_remote_code,
        }
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
                self.hook.srlm_pipeline_start(run=self.info)
                for step in self.plan.steps:
                    if isinstance(step, StageStep):
                        self.run_stage(step)
                    else:
                        self.run_eval(step)
                    self._save()
            status = "complete"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except (UserError, StageFailed) as exc:
            self.manifest["error"] = str(exc)
            raise
        finally:
            self.manifest["status"] = status
            self.manifest["finished"] = now()
            self._save()
            self.store.release_run(owner)
            self.hook.srlm_pipeline_end(run=self.info, status=status, summary=self.manifest)
        return self.manifest

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

    def _record(self, entry: dict[str, Any]) -> None:
        self.manifest["steps"].append(entry)

    def run_stage(self, step: StageStep) -> None:
        stage_type = step.spec.type
        with self.store.lock(step.key):
            cached = self.store.manifest("stages", step.key)
            self.reporter.step_start(step, cached is not None)
            if cached is not None:
                self._record(
                    {
                        **step.describe(),
                        "cached": True,
                        "status": "complete",
                        "seconds": cached.get("seconds"),
                        "metrics": cached.get("metrics", {}),
                        "path": str(self.store.path("stages", step.key) / "model"),
                    }
                )
                self.reporter.step_end(step, True, 0.0, cached.get("metrics", {}))
                self.hook.srlm_stage_end(run=self.info, stage=step, result=None, cached=True)
                return
            input_model = self.model_dir(step.input_key)
            tmp = self.store.begin("stages")
            output = tmp / "model"
            output.mkdir()
            ctx = self.stage_context(step, input_model, output)
            ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            ctx.work_dir.mkdir(parents=True, exist_ok=True)
            self.hook.srlm_stage_start(run=self.info, stage=step)
            started = time.perf_counter()
            try:
                assert self.info is not None
                with tracking.stage_environment(self.info.run_id, self.info.run_dir, step.label):
                    result = self.launcher.launch(stage_type, ctx)
                if not isinstance(result, StageResult):
                    result = StageResult(dict(result or {}))
                if not (output / "config.json").is_file():
                    raise UserError(
                        f"stage '{step.name}' wrote no model (no config.json)",
                        f"stage {step.label}",
                    )
            except (UserError, KeyboardInterrupt):
                self.store.discard(tmp)
                raise
            except Exception as exc:
                self.store.discard(tmp)
                raise self._failure(f"stage {step.label}", exc, step) from exc
            seconds = round(time.perf_counter() - started, 2)
            manifest = {
                **step.describe(),
                "metrics": result.metrics,
                "seconds": seconds,
                "finished": now(),
                # Not part of the key: the global batch is the same on any process count.
                "launch": self.launcher.describe(),
                "environment": self.manifest["environment"],
            }
            self.store.commit("stages", step.key, tmp, manifest)
            # Checkpoints only serve resuming this stage; a full fine-tune's are gigabytes.
            self.store.discard(self.store.root / "work" / step.key)
        self._record(
            {
                **step.describe(),
                "cached": False,
                "status": "complete",
                "seconds": seconds,
                "metrics": result.metrics,
                "path": str(self.store.path("stages", step.key) / "model"),
            }
        )
        self.reporter.step_end(step, False, seconds, result.metrics)
        self.hook.srlm_stage_end(run=self.info, stage=step, result=result, cached=False)

    def run_eval(self, step: EvalStep) -> None:
        evaluator = self.session.registry.evaluators.get(step.evaluator)
        with self.store.lock(step.key):
            cached = self.store.manifest("evals", step.key)
            self.reporter.step_start(step, cached is not None)
            if cached is None:
                model = self.model_dir(step.model_key)
                remote_code.check_model(model)
                tmp = self.store.begin("evals")
                request = EvalRequest(
                    model,
                    step.tasks,
                    tmp,
                    step.limit,
                    step.seed,
                    self.plan.hardware,
                    dict(step.options),
                    self.reporter.info,
                    progress=self.reporter.progress,
                )
                self.hook.srlm_eval_start(run=self.info, step=step)
                started = time.perf_counter()
                try:
                    result = self.launcher.evaluate(evaluator, request)
                except (UserError, KeyboardInterrupt):
                    self.store.discard(tmp)
                    raise
                except Exception as exc:
                    self.store.discard(tmp)
                    raise self._failure(f"evaluation '{step.label}'", exc, step) from exc
                seconds = round(time.perf_counter() - started, 2)
                files = _relative_files(result.files, tmp)
                cached = {
                    **step.describe(),
                    "scores": score_dicts(result.scores),
                    "provenance": result.provenance.to_dict(),
                    "files": files,
                    "seconds": seconds,
                    "finished": now(),
                    "launch": self.launcher.describe(),
                }
                self.store.commit("evals", step.key, tmp, cached)
                was_cached = False
            else:
                seconds, was_cached = 0.0, True
        folder = self.store.path("evals", step.key)
        entry = {
            **step.describe(),
            "cached": was_cached,
            "status": "complete",
            "seconds": cached.get("seconds"),
            "scores": cached["scores"],
            "provenance": cached.get("provenance", {}),
            "files": _absolute_files(cached.get("files", {}), folder),
        }
        self._record(entry)
        result = EvalResult(
            [TaskScore(**s) for s in cached["scores"]], entry["provenance"], entry["files"]
        )
        self.reporter.step_end(step, was_cached, seconds, result)
        self.hook.srlm_eval_end(run=self.info, step=step, result=result, cached=was_cached)

    def _failure(self, what: str, exc: BaseException, step: Any = None) -> Exception:
        log = self.run_dir / "error.log" if self.run_dir else None
        if log is not None:
            log.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
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
    runner.manifest = {"model": {}}
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
