"""The ``lm-eval`` evaluator: runs tasks through lm-evaluation-harness's Python API.

``evaluate(request)`` loads the requested tasks (ours, third-party task folders, lm-eval
built-ins), loads the model once (HF backend, or vLLM with ``options.backend: vllm``), runs
``lm_eval.simple_evaluate`` (once per chat-template setting: our instruct tasks apply the
chat template, few-shot tasks like gsm8k do not), and writes ``results.json`` (lm-eval's
keys, as its CLI writes them), ``samples_<task>.jsonl`` and ``summary.json``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from srlm_harness.api import (
    EvalProvenance,
    EvalRequest,
    EvalResult,
    Task,
    TaskProvenance,
    UserError,
)
from srlm_harness_plugins.lm_eval import records
from srlm_harness_plugins.lm_eval.progress import request_progress
from srlm_harness_plugins.lm_eval.task_index import (
    include_paths,
    lm_eval_version,
    task_identity,
)

# 2: few-shot/numpy/torch seeds default to lm-eval's CLI defaults, not the spec's seed.
VERSION = "2"

#: The ``lm_eval`` CLI's default seeds (``--seed 0,1234,1234,1234``: python, numpy, torch,
#: few-shot). A plain ``lm_eval`` run samples its few-shot examples with 1234, so ours do too.
LM_EVAL_SEEDS = {"random_seed": 0, "numpy_random_seed": 1234, "torch_random_seed": 1234,
                 "fewshot_random_seed": 1234}

OPTIONS = {
    "backend": "hf (default) or vllm",
    "batch_size": "generation batch size (default: lm-eval's auto on GPU; on CPU the size "
                  "the machine sustains, probed once per model shape; outputs equal lm-eval's "
                  "batch 1, see tests)",
    "fewshot_seed": "seed of the few-shot example draw (default 1234, as the lm_eval CLI)",
    "num_fewshot": "override every task's number of few-shot examples",
    "apply_chat_template": "true/false forces the chat template on/off for every task",
    "fewshot_as_multiturn": "few-shot examples as chat turns (default: when chat is applied)",
    "system_instruction": "a system prompt for every task",
    "gen_kwargs": "generation settings merged into each task's (e.g. max_gen_toks)",
    "max_gen_toks": "shortcut for gen_kwargs.max_gen_toks",
    "model_args": "extra lm-eval model arguments (e.g. max_length)",
    "bootstrap_iters": "bootstrap iterations for stderr (lm-eval's default 100000)",
}
WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "*.gguf")


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UserError(f"unknown lm-eval option {unknown[0]!r}", "evaluate.options",
                        f"known: {', '.join(OPTIONS)}")
    options = dict(options)
    if options.get("backend", "hf") not in ("hf", "vllm"):
        raise UserError(f"unknown backend {options['backend']!r}", "evaluate.options.backend",
                        "use hf or vllm")
    shots = options.get("num_fewshot")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 0):
        raise UserError(f"num_fewshot is a whole number >= 0, got {shots!r}",
                        "evaluate.options.num_fewshot")
    gen_kwargs = dict(options.get("gen_kwargs") or {})
    if "max_gen_toks" in options:
        gen_kwargs["max_gen_toks"] = int(options.pop("max_gen_toks"))
    options["gen_kwargs"] = gen_kwargs or None
    if "fewshot_seed" in options:
        try:
            options["fewshot_seed"] = int(options["fewshot_seed"])
        except (TypeError, ValueError):
            raise UserError(f"fewshot_seed must be an integer, got {options['fewshot_seed']!r}",
                            "evaluate.options.fewshot_seed", "e.g. fewshot_seed: 1234") from None
    return options


def seeds(request_seed: int | None, options: Mapping[str, Any]) -> dict[str, int]:
    """simple_evaluate's seed arguments: lm-eval's CLI defaults, the spec's seed for Python's
    ``random`` (the CLI's 0 is also the spec's default) and ``fewshot_seed`` if chosen."""
    chosen = dict(LM_EVAL_SEEDS)
    if request_seed is not None:
        chosen["random_seed"] = int(request_seed)
    if options.get("fewshot_seed") is not None:
        chosen["fewshot_random_seed"] = int(options["fewshot_seed"])
    return chosen


def fingerprint(tasks: list[Task], options: Mapping[str, Any]) -> str:
    """Identifies task configs (+ their data), evaluator settings and the lm-eval version."""
    identity = {
        "evaluator": VERSION,
        "lm_eval": lm_eval_version(),
        "options": check_options(options),
        "tasks": [task_identity(t) for t in sorted(tasks, key=lambda t: t.name)],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def check_model_dir(model_dir: Path) -> None:
    where = str(model_dir)
    if not model_dir.is_dir():
        raise UserError("model directory not found", where, "check the path or the stage output")
    if not (model_dir / "config.json").is_file():
        raise UserError("not a Hugging Face model directory (no config.json)", where,
                        "point at a directory written by save_pretrained")
    if not any(any(model_dir.glob(pattern)) for pattern in WEIGHTS):
        raise UserError("model directory has no weights (*.safetensors or *.bin)", where,
                        "re-create the model (the stage output may be incomplete)")


def load_tasks(tasks: list[Task], log: Any) -> tuple[Any, dict[str, Any]]:
    """A TaskManager over just the folders these tasks need, and the loaded lm-eval tasks."""
    from lm_eval.tasks import TaskManager

    paths = include_paths(tasks, log)
    manager = TaskManager(include_path=[str(p) for p in paths], include_defaults=False)
    loaded: dict[str, Any] = {}
    for task in tasks:
        try:
            try:
                loaded.update(manager.load([task.name])["tasks"])
            except KeyError:
                if task.include_path is not None:
                    raise
                # A built-in group whose members live outside its folder: scan everything.
                manager = TaskManager(include_path=[str(p) for p in paths])
                loaded.update(manager.load([task.name])["tasks"])
        except UserError:
            raise
        except KeyError as error:
            raise UserError(f"unknown task '{task.name}'", "evaluate.tasks",
                            f"not defined in {task.include_path}") from error
        except Exception as error:  # lm-eval/datasets raise many kinds for missing data
            first = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
            raise UserError(
                f"could not load task '{task.name}': {first}", "evaluate.tasks",
                "its data may need the Hub; run online once, or set SRLM_HARNESS_DATA_DIR "
                "for tasks that read local files",
            ) from error
    return manager, loaded


def load_model(request: EvalRequest, options: dict[str, Any]) -> tuple[Any, str, dict]:
    """The lm-eval LM object, its registry name and model_args (as the CLI would record)."""
    import lm_eval.api.registry

    hw = request.hardware
    backend = options.get("backend", "hf")
    if backend == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise UserError("the vllm backend needs vLLM installed", "evaluate.options.backend",
                            "pip install 'srlm-harness[vllm]', or use backend: hf")
        args: dict[str, Any] = {"pretrained": str(request.model_dir), "dtype": hw.dtype,
                                "seed": request.seed, "gpu_memory_utilization": 0.85}
    else:
        args = {"pretrained": str(request.model_dir), "dtype": hw.dtype}
    args.update(options.get("model_args") or {})
    batch = options.get("batch_size") or ("auto" if hw.device == "cuda" else 8)
    extra = {"batch_size": batch, "device": hw.device if backend == "hf" else None}
    try:
        lm = lm_eval.api.registry.get_model(backend).create_from_arg_obj(args, extra)
    except Exception as error:  # transformers raises many kinds for a broken directory
        first = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise UserError(f"could not load the model: {first}", str(request.model_dir),
                        "check config.json and the weight files (re-run the stage)") from error
    if backend == "hf" and not options.get("batch_size") and hw.device != "cuda":
        from srlm_harness_plugins import generation

        # Greedy outputs do not depend on the batch size (tests/test_generation.py), so the
        # evaluation's cache key does not either.
        lm.batch_size_per_gpu = generation.sustained_batch_size(
            lm.model, generation.probe_cache(), request.log)
    share_requests(lm)
    return lm, backend, args


def share_requests(lm: Any) -> None:
    """Under ``accelerate launch`` with several processes each one evaluates its share of the
    requests (data parallel, one model copy per process). lm-eval's HF backend sets this up
    itself only when it sees several GPUs; on CPUs (gloo) it is set up the same way here."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or getattr(lm, "world_size", 1) > 1:
        return
    if not hasattr(lm, "_world_size"):
        return  # not the HF backend: vLLM splits work its own way
    from accelerate import Accelerator

    lm.accelerator = Accelerator()
    lm._rank = lm.accelerator.process_index
    lm._world_size = lm.accelerator.num_processes
    print(f"lm-eval: data parallel, process {lm._rank} of {lm._world_size}", flush=True)


def chat_setting(task_obj: Any, options: dict[str, Any]) -> bool:
    forced = options.get("apply_chat_template")
    if forced is not None:
        return bool(forced)
    metadata = task_obj.config.metadata or {}
    return bool(metadata.get("chat", False))


def run_lm_eval(lm: Any, backend: str, model_args: dict, manager: Any, task_objs: list[Any],
                chat: bool, request: EvalRequest, options: dict[str, Any]) -> tuple[dict, Any]:
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker

    tracker = EvaluationTracker()
    # As lm-eval's CLI: few-shot examples become chat turns when the template is applied.
    multiturn = options.get("fewshot_as_multiturn")
    multiturn = chat if multiturn is None else bool(multiturn) and chat
    results = simple_evaluate(
        model=lm, tasks=task_objs, task_manager=manager, limit=request.limit,
        num_fewshot=options.get("num_fewshot"), gen_kwargs=options.get("gen_kwargs"),
        apply_chat_template=chat, fewshot_as_multiturn=multiturn,
        system_instruction=options.get("system_instruction"), log_samples=True,
        evaluation_tracker=tracker, bootstrap_iters=options.get("bootstrap_iters", 100000),
        **seeds(request.seed, options),
    )
    if results is None:  # not rank 0 of a data-parallel run: rank 0 gathered everything
        return {}, None
    # As the CLI records it (simple_evaluate names a pre-built LM by its class).
    results["config"].update({"model": backend, "model_args": model_args,
                              "batch_size": getattr(lm, "batch_size_per_gpu", None)})
    tracker.general_config_tracker.log_experiment_args(
        model_source=backend, model_args=model_args,
        system_instruction=options.get("system_instruction"),
        chat_template=lm.chat_template(chat) if chat else None,
        fewshot_as_multiturn=multiturn,
    )
    tracker.general_config_tracker.log_end_time()
    return results, tracker.general_config_tracker


def merge(runs: list[tuple[dict, Any]]) -> tuple[dict, dict, dict[str, dict[str, Any]]]:
    """One lm-eval results dict (and samples) from runs over disjoint tasks, and each task's
    prompt settings (chat template sha, few-shot as multiturn, system instruction sha)."""
    merged: dict[str, Any] = {}
    samples: dict[str, Any] = {}
    settings: dict[str, dict[str, Any]] = {}
    for results, general in runs:
        run_samples = results.pop("samples")
        samples.update(run_samples)
        for key, value in results.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key].update(value)
            else:
                merged.setdefault(key, value)
        for task in run_samples:
            settings[task] = {"chat_template": general.chat_template_sha,
                              "fewshot_as_multiturn": general.fewshot_as_multiturn,
                              "system_instruction": general.system_instruction_sha}
    # The CLI's results file: task hashes, then the run settings (chat template last run
    # that used one).
    merged["task_hashes"] = {
        task: hashlib.sha256("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"]
                                     for s in rows).encode()).hexdigest()
        for task, rows in samples.items()
    }
    generals = [g for _, g in runs]
    chosen = next((g for g in generals if g.chat_template), generals[0])
    merged.update(asdict(chosen))
    return merged, samples, settings


def evaluate(request: EvalRequest) -> EvalResult:
    started = time.time()
    options = check_options(request.options)
    if not request.tasks:
        raise UserError("no tasks to evaluate", "evaluate.tasks", "name at least one task")
    model_dir = Path(request.model_dir)
    check_model_dir(model_dir)
    manager, loaded = load_tasks(request.tasks, request.log)

    from srlm_harness.api import apply_hardware

    apply_hardware(request.hardware)
    lm, backend, model_args = load_model(request, options)
    groups: dict[bool, list[Any]] = {}
    for task_obj in loaded.values():
        groups.setdefault(chat_setting(task_obj, options), []).append(task_obj)
    runs = []
    for chat, task_objs in sorted(groups.items()):
        request.log(f"lm-eval: {', '.join(t.task_name for t in task_objs)}"
                    f"{' (chat template)' if chat else ''}")
        with request_progress(getattr(request, "progress", None)):
            runs.append(run_lm_eval(lm, backend, model_args, manager, task_objs, chat, request,
                                    options))
    if getattr(lm, "rank", 0) != 0:
        return EvalResult(scores=[], files={})
    results, samples, settings = merge(runs)
    return write_outputs(request, results, samples, settings, loaded, options, backend,
                         time.time() - started)


def data_sources(loaded: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Where each task's documents came from: local files with their sha256 (our loaders,
    and reasoning-gym's generated files), else the Hub dataset and revision it names."""
    from srlm_harness_plugins.lm_eval import task_data

    sources = {}
    for name, task_obj in loaded.items():
        config = task_obj.config
        kwargs = config.dataset_kwargs or {}
        loader = config.custom_dataset
        loader_name = getattr(loader, "__name__", None)
        if getattr(loader, "__module__", None) == task_data.__name__ and (
                loader_name in task_data.SOURCES):
            sources[name] = task_data.describe(loader_name)
        elif "rg_task" in kwargs:
            # Generated from a seed into a jsonl cache: that file is the data.
            path = task_data.reasoning_gym_path(kwargs["rg_task"], int(kwargs["seed"]),
                                                int(kwargs["size"]), kwargs.get("config"))
            sources[name] = {"reasoning_gym": {k: kwargs.get(k) for k in
                                               ("rg_task", "seed", "size", "config")},
                             "local": {"test": str(path)},
                             "sha256": {"test": task_data.file_sha256(path)}}
        elif loader is not None:
            sources[name] = {"custom_dataset": f"{loader.__module__}.{loader_name}"}
        else:
            # An unpinned Hub dataset is recorded as such: its contents may change upstream.
            sources[name] = {"hub": config.dataset_path, "config": config.dataset_name,
                             "revision": kwargs.get("revision"),
                             "data_files": kwargs.get("data_files")}
    return sources


def write_outputs(request: EvalRequest, results: dict, samples: dict,
                  settings: dict[str, dict[str, Any]],
                  loaded: dict[str, Any], options: dict[str, Any], backend: str,
                  seconds: float) -> EvalResult:
    out = Path(request.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # lm-eval's configs name the Hub dataset even when our loader read local files.
    sources = data_sources(loaded)
    results["data_sources"] = sources
    records.write_json(out / "results.json", results)
    files: dict[str, Any] = {"results": "results.json", "samples": {}}
    scores, per_task = [], {}
    for task in sorted(samples):
        score = records.score_of(task, results)
        verifier = (loaded[task].config.metadata or {}).get("verifier")
        rows = records.sample_rows(samples[task], score.metric, verifier)
        records.write_jsonl(out / f"samples_{task}.jsonl", rows)
        files["samples"][task] = f"samples_{task}.jsonl"
        per_task[task] = task_provenance(task, results, rows, settings.get(task) or {},
                                         sources.get(task))
        per_task[task].extra["primary_metric"] = score.metric
        scores.append(score)
    provenance = eval_provenance(request, results, options, backend, per_task)
    summary = {
        "scores": {s.task: {"metric": s.metric, "value": s.value, "stderr": s.stderr, "n": s.n}
                   for s in scores},
        "model_dir": str(request.model_dir),
        "wall_time_s": round(seconds, 2),
        "files": files,
        "provenance": provenance.to_dict(),
    }
    records.write_json(out / "summary.json", summary)
    files["summary"] = "summary.json"
    return EvalResult(scores=scores, provenance=provenance, files=files)


def task_provenance(task: str, results: dict, rows: list[dict[str, Any]],
                    task_settings: dict[str, Any], source: Any) -> TaskProvenance:
    """One task's typed provenance: lm-eval's record of it plus the prompt settings used."""
    recorded = records.task_provenance(task, results, rows, task_settings.get("chat_template"))
    recorded["data"] = source
    recorded["settings"] = {
        "fewshot_seed": results["config"].get("fewshot_seed"),
        "batch_size": results["config"].get("batch_size"),
        "apply_chat_template": task_settings.get("chat_template") is not None,
        **task_settings,
    }
    return TaskProvenance.from_dict(recorded)


def eval_provenance(request: EvalRequest, results: dict, options: dict[str, Any],
                    backend: str, per_task: dict[str, TaskProvenance]) -> EvalProvenance:
    config = results["config"]
    return EvalProvenance(
        evaluator=f"lm-eval/{VERSION}",
        seed=request.seed,
        limit=request.limit,
        partial=any(p.extra["partial"] for p in per_task.values()),
        libraries={"lm_eval": lm_eval_version()},
        tasks=per_task,
        extra={
            "backend": backend,
            "model_args": config.get("model_args"),
            "hardware": {"device": request.hardware.device, "dtype": request.hardware.dtype},
            "seeds": {k: config.get(k) for k in
                      ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")},
            "options": options,
            "sample_count": sum(p.extra["samples"] for p in per_task.values()),
        },
    )
