"""One child process of a multi-process launch:
``python -m srlm_harness.pipeline.launch_child JOB``.

``accelerate launch`` starts one of these per rank. Each loads the same plugins as the
parent, rebuilds the stage context (or evaluation request) from ``JOB`` (written by
``srlm_harness.pipeline.launch.AccelerateLauncher``), joins the process group and runs the stage.
Its stdout and stderr go to ``rank-<R>.log`` next to ``JOB``; the first process of each
machine (rank 0 on one machine) also appends progress and log lines to ``events.jsonl`` (the
parent relays them) and writes ``result.json``. A rank that fails writes
``error-rank-<R>.json`` with a one-line message.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from srlm_harness.pipeline.launch import set_parent_death_signal
from srlm_harness.util.fs import atomic_write_json


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def writer() -> bool:
    """Whether this process writes the outputs: the first process on each machine (rank 0 on
    one machine; with several machines each writes into its own machine's store)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def _redirect_output(log: Path) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


class Events:
    """Rank 0's progress and log lines, appended for the parent to relay."""

    def __init__(self, path: Path, active: bool) -> None:
        self.path, self.active = path, active

    def _emit(self, event: dict[str, Any]) -> None:
        if self.active:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(event) + "\n")

    def progress(self, done: int, total: int, description: str) -> None:
        self._emit({"type": "progress", "args": [done, total, description]})

    def log(self, message: str) -> None:
        print(message, flush=True)
        self._emit({"type": "log", "message": message})


def hardware_for_rank(data: dict[str, Any]) -> Any:
    """The parent's hardware settings, with a CPU's threads shared among local ranks."""
    from srlm_harness.pipeline.hardware import Hardware

    hw = Hardware(**data)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if hw.device == "cpu" and local > 1:
        hw.threads = max(1, hw.threads // local)
    return hw


def run_stage(job: dict[str, Any], session: Any, events: Events, folder: Path) -> dict:
    from srlm_harness.api import StageContext, StageResult
    from srlm_harness.pipeline.runner import load_records

    registry = session.registry
    stage = registry.stages.get(job["stage"], where="launch job")
    output = Path(job["output_dir"]) if writer() else folder / f"rank-{rank()}-output"
    output.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(
        input_model=Path(job["input_model"]),
        output_dir=output,
        config=stage.config.model_validate(job["config"]),
        seed=job["seed"],
        hardware=hardware_for_rank(job["hardware"]),
        checkpoint_dir=Path(job["checkpoint_dir"]),
        work_dir=Path(job["work_dir"]),
        load_dataset=lambda value: load_records(registry, value),
        resolve_model=lambda ref: session.resolve_model(ref).path,
        reward=lambda name: registry.rewards.get(name, where=f"stage {job['stage_name']}"),
        progress=events.progress,
        log=events.log,
        stage_name=job["stage_name"],
        index=job["index"],
    )
    result = stage.run(ctx)
    metrics = result.metrics if isinstance(result, StageResult) else dict(result or {})
    return {"metrics": metrics}


def run_eval(job: dict[str, Any], session: Any, events: Events, folder: Path) -> dict:
    from srlm_harness.api import EvalRequest
    from srlm_harness.pipeline.runner import score_records
    from srlm_harness.pipeline.spec import resolve_tasks

    registry = session.registry
    evaluator = registry.evaluators.get(job["evaluator"], where="launch job")
    output = Path(job["output_dir"]) if writer() else folder / f"rank-{rank()}-output"
    request = EvalRequest(
        Path(job["model_dir"]),
        resolve_tasks(job["tasks"], registry, "launch job"),
        output,
        job["limit"],
        job["seed"],
        hardware_for_rank(job["hardware"]),
        job["options"],
        events.log,
    )
    result = evaluator.evaluate(request)
    scores = [s.to_dict() for s in score_records(result.scores)]
    return {"scores": scores, "provenance": result.provenance.to_dict(),
            "files": result.files}


def main(argv: list[str]) -> int:
    set_parent_death_signal()
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text(encoding="utf-8"))
    folder = Path(job["folder"])
    me = rank()
    _redirect_output(folder / f"rank-{me}.log")
    try:
        from accelerate import PartialState

        from srlm_harness.pipeline.session import Session

        # Join the process group first (gloo on CPUs), so every rank agrees on the backend.
        # Generous timeout: the other ranks wait while rank 0 writes KD teacher traces.
        state = PartialState(cpu=job["hardware"]["device"] == "cpu",
                             timeout=datetime.timedelta(hours=12))
        session = Session.load(job["extra"], job["disable"], job["store"])
        events = Events(folder / "events.jsonl", writer())
        runner = run_stage if job["kind"] == "stage" else run_eval
        result = runner(job, session, events, folder)
        if writer():
            atomic_write_json(folder / "result.json", {**result, "processes": state.num_processes},
                              indent=None)
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure is reported to the parent
        from srlm_harness.api import UserError

        traceback.print_exc()
        sys.stderr.flush()
        if isinstance(exc, UserError):
            error = {"kind": "user", "message": exc.message, "where": exc.where,
                     "hint": exc.hint}
        else:
            text = " ".join(str(exc).split())[:300]
            error = {"kind": "exception", "message": f"{type(exc).__name__}: {text}"}
        atomic_write_json(folder / f"error-rank-{me}.json", {"rank": me, **error}, indent=None)
        return 2 if error["kind"] == "user" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
