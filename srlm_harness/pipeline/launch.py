"""Multi-process launching: a spec's ``launch:`` settings and the accelerate launcher.

By default every stage runs in the harness's own process. With ``launch: {engine:
accelerate, num_processes: N}`` (or ``--launcher accelerate --num-processes N``) each
training stage and evaluation runs as ``accelerate launch`` children (torchrun underneath:
DDP, or FSDP / DeepSpeed through an accelerate ``config_file``). The parent keeps the store
lock, commits the result and writes the manifests; rank 0 writes the model directory.

Children write their output to ``runs/<run_id>/logs/<step>/rank-<R>.log``; a failing rank is
reported in one line naming the rank and its log. The children are started in their own
process group and die with the parent (SIGINT, SIGTERM, or even SIGKILL of the parent:
each child asks the kernel for a signal when its parent dies).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from srlm_harness.api import EvalRequest, EvalResult, StageContext, StageType, UserError
from srlm_harness.util.fs import atomic_write_json
from srlm_harness.util.suggestions import did_you_mean

ENGINES = ("inprocess", "accelerate")
#: Seconds a child group gets to exit after SIGTERM before it is killed.
GRACE_S = 10.0


class LaunchSpec(BaseModel):
    """The ``launch:`` section of a spec."""

    model_config = ConfigDict(extra="forbid")

    engine: str = Field("inprocess", description="inprocess (default) or accelerate")
    num_processes: int | None = Field(
        None, description="processes in all (all machines); default: the config file's, else 1"
    )
    config_file: str | None = Field(
        None, description="an accelerate config file (FSDP, DeepSpeed...; see recipes/launch/)"
    )
    num_machines: int | None = Field(None, ge=1, description="machines (multi-node)")
    machine_rank: int | None = Field(None, ge=0, description="this machine's rank (multi-node)")
    main_process_ip: str | None = Field(None, description="rank 0's address (multi-node)")
    main_process_port: int | None = Field(None, ge=1, le=65535, description="rank 0's port")
    args: list[str] = Field(
        default_factory=list, description="more `accelerate launch` arguments, passed as given"
    )


@dataclass
class LaunchSettings:
    engine: str = "inprocess"
    num_processes: int | None = None
    config_file: str | None = None
    num_machines: int | None = None
    machine_rank: int | None = None
    main_process_ip: str | None = None
    main_process_port: int | None = None
    args: tuple[str, ...] = ()

    @property
    def multi_process(self) -> bool:
        return self.engine != "inprocess"

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if v not in (None, ())}


def parse_launch(raw: Any, where: str, base_dir: Path | None = None) -> LaunchSettings:
    """Validated launch settings; a bad value is a one-line UserError naming ``where``."""
    if raw is None:
        return LaunchSettings()
    if not isinstance(raw, dict):
        raise UserError("'launch' is a mapping (engine, num_processes, ...)", where)
    try:
        spec = LaunchSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            hint = did_you_mean(key, LaunchSpec.model_fields, n=1,
                                otherwise=f"known keys: {', '.join(LaunchSpec.model_fields)}")
            raise UserError(f"unknown key 'launch.{key}'", where, hint) from None
        raise UserError(f"key 'launch.{key}': {err['msg']}", where) from None
    if spec.engine not in ENGINES:
        hint = did_you_mean(spec.engine, ENGINES, n=1, otherwise=f"use {' or '.join(ENGINES)}")
        raise UserError(f"unknown launch engine '{spec.engine}'", f"{where}: launch.engine", hint)
    if spec.num_processes is not None and spec.num_processes < 1:
        raise UserError(f"num_processes must be at least 1 (got {spec.num_processes})",
                        f"{where}: launch.num_processes")
    config_file = None
    if spec.config_file is not None:
        path = Path(spec.config_file).expanduser()
        if not path.is_absolute() and not path.is_file() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise UserError(f"accelerate config file not found: {spec.config_file}",
                            f"{where}: launch.config_file")
        config_file = str(path.resolve())
    if spec.engine == "inprocess":
        multi = (spec.num_processes or 1) > 1 or config_file or (spec.num_machines or 1) > 1
        if multi:
            raise UserError("several processes, machines or a config file need "
                            "engine: accelerate", f"{where}: launch",
                            "set launch.engine=accelerate (or --launcher accelerate)")
    return LaunchSettings(spec.engine, spec.num_processes, config_file, spec.num_machines,
                          spec.machine_rank, spec.main_process_ip, spec.main_process_port,
                          tuple(spec.args))


# --------------------------------------------------------------------------- launchers


class InProcessLauncher:
    """Runs each stage and evaluation in the harness's own process (the default)."""

    processes = 1

    def launch(self, stage: StageType, ctx: StageContext) -> Any:
        return stage.run(ctx)

    def evaluate(self, evaluator: Any, request: EvalRequest) -> EvalResult:
        result: EvalResult = evaluator.evaluate(request)
        return result

    def describe(self) -> dict[str, Any]:
        return {"engine": "inprocess", "processes": 1}


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (PR_SET_PDEATHSIG);
    elsewhere nothing happens. Exits at once if the parent is already gone."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def accelerate_command(settings: LaunchSettings, device: str) -> list[str]:
    """The ``accelerate launch`` arguments (before the child module) for ``settings``."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if settings.config_file:
        cmd += ["--config_file", settings.config_file]
    n = settings.num_processes
    if n is not None:
        cmd += ["--num_processes", str(n)]
        if n > 1 and not settings.config_file:
            # DDP; on a machine without GPUs the children use gloo (see launch_child).
            cmd += ["--multi_gpu"]
    for flag, value in (("--num_machines", settings.num_machines),
                        ("--machine_rank", settings.machine_rank),
                        ("--main_process_ip", settings.main_process_ip),
                        ("--main_process_port", settings.main_process_port)):
        if value is not None:
            cmd += [flag, str(value)]
    if not settings.config_file:
        # Without a config file accelerate warns about every default it fills in.
        cmd += ["--dynamo_backend", "no", "--mixed_precision", "no"]
        if settings.num_machines is None:
            cmd += ["--num_machines", "1"]
    return [*cmd, *settings.args]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AccelerateLauncher:
    """Runs each stage (and evaluation) as ``accelerate launch`` children."""

    def __init__(self, settings: LaunchSettings, session: Any) -> None:
        self.settings = settings
        self.session = session
        self.run_dir: Path | None = None
        self.processes = settings.num_processes or 1

    def describe(self) -> dict[str, Any]:
        return {"engine": "accelerate", "processes": self.processes, **self.settings.as_dict()}

    # ------------------------------------------------------------------ the job file

    def _plugin_selection(self) -> dict[str, Any]:
        """What the children load: the same entry points (minus the ones the parent left
        out) and the same ``--plugin`` modules."""
        infos = self.session.plugins.infos
        names = {ep.name for ep in metadata.entry_points(group="srlm_harness")}
        return {
            "extra": [i.module for i in infos.values() if i.origin == "--plugin"],
            "disable": sorted(names - set(infos)),
            "store": str(self.session.store.root),
        }

    def _folder(self, label: str) -> Path:
        assert self.run_dir is not None, "the runner binds the launcher to its run folder"
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in label)
        folder = self.run_dir / "logs" / safe
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.json*"):
            old.unlink()
        return folder

    def launch(self, stage: StageType, ctx: StageContext) -> Any:
        from srlm_harness.api import StageResult

        folder = self._folder(f"stage-{ctx.index + 1}-{ctx.stage_name}")
        job = {
            "kind": "stage",
            "stage": stage.name,
            "config": ctx.config.model_dump(mode="json", context={"full": True}),
            "input_model": str(ctx.input_model),
            "output_dir": str(ctx.output_dir),
            "seed": ctx.seed,
            "hardware": ctx.hardware.as_dict(),
            "checkpoint_dir": str(ctx.checkpoint_dir),
            "work_dir": str(ctx.work_dir),
            "stage_name": ctx.stage_name,
            "index": ctx.index,
        }
        result = self._run(job, folder, ctx.progress, ctx.log, ctx.hardware.device)
        self.processes = int(result.get("processes", self.processes))
        return StageResult(result.get("metrics", {}))

    def evaluate(self, evaluator: Any, request: EvalRequest) -> EvalResult:
        from srlm_harness.api import TaskScore

        folder = self._folder(f"eval-{Path(request.output_dir).name}")
        job = {
            "kind": "eval",
            "evaluator": getattr(evaluator, "name", "lm-eval"),
            "model_dir": str(request.model_dir),
            "tasks": [t.name for t in request.tasks],
            "output_dir": str(request.output_dir),
            "limit": request.limit,
            "seed": request.seed,
            "hardware": request.hardware.as_dict(),
            "options": request.options,
        }
        result = self._run(job, folder, lambda *a: None, request.log, request.hardware.device)
        self.processes = int(result.get("processes", self.processes))
        return EvalResult([TaskScore(**s) for s in result["scores"]], result["provenance"],
                          result["files"])

    # ------------------------------------------------------------------ the children

    def _run(self, job: dict[str, Any], folder: Path, progress: Any, log: Any,
             device: str) -> dict[str, Any]:
        job.update(self._plugin_selection(), folder=str(folder))
        atomic_write_json(folder / "job.json", job, indent=1)
        settings = self.settings
        if settings.main_process_port is None and (settings.num_machines or 1) == 1:
            settings = LaunchSettings(**{**asdict(settings), "main_process_port": _free_port()})
        cmd = [*accelerate_command(settings, device),
               "--module", "srlm_harness.pipeline.launch_child", str(folder / "job.json")]
        env = dict(os.environ)
        if device == "cpu":
            env["ACCELERATE_USE_CPU"] = "true"
        events = folder / "events.jsonl"
        with open(folder / "launcher.log", "ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                preexec_fn=set_parent_death_signal,  # noqa: PLW1509 - before any thread
            )
            try:
                offset = 0
                while True:
                    code = proc.poll()
                    offset = _relay(events, offset, progress, log)
                    if code is not None:
                        break
                    time.sleep(0.2)
            except BaseException:
                stop_group(proc)
                raise
        return _outcome(folder, code)


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left after a grace time."""
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _relay(events: Path, offset: int, progress: Any, log: Any) -> int:
    """Pass rank 0's progress and log lines (appended to ``events``) on to the reporter."""
    if not events.is_file():
        return offset
    with open(events, encoding="utf-8") as f:
        f.seek(offset)
        for line in f:
            if not line.endswith("\n"):
                break
            offset += len(line.encode("utf-8"))
            event = json.loads(line)
            if event["type"] == "progress":
                progress(*event["args"])
            else:
                log(event["message"])
    return offset


def _outcome(folder: Path, code: int) -> dict[str, Any]:
    """Rank 0's result, or the first failure as one line naming the rank and its log."""
    errors = sorted(folder.glob("error-rank-*.json"),
                    key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    if errors:
        error = json.loads(errors[0].read_text(encoding="utf-8"))
        log = folder / f"rank-{error['rank']}.log"
        if error["kind"] == "user":
            raise UserError(error["message"], error.get("where") or f"rank {error['rank']}",
                            error.get("hint"))
        raise RankFailed(f"rank {error['rank']} failed: {error['message']} (log: {log})")
    result = folder / "result.json"
    if code == 0 and result.is_file():
        return dict(json.loads(result.read_text(encoding="utf-8")))
    raise RankFailed(f"accelerate launch exited with code {code} before any rank reported "
                     f"(logs: {folder / 'launcher.log'}, {folder}/rank-*.log)")


class RankFailed(RuntimeError):
    """A child process of a multi-process launch failed."""


def make_launcher(settings: LaunchSettings, session: Any) -> Any:
    if settings.engine == "accelerate":
        return AccelerateLauncher(settings, session)
    return InProcessLauncher()
