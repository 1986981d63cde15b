"""The harness's ``gsm8k``: lm-eval's own ``gsm8k`` task, with data from local files.

The task config is read at run time from the installed lm-eval's ``gsm8k.yaml`` (so prompts,
few-shot examples, filters, metrics and version are exactly lm-eval's); only where the
documents come from changes: ``task_data.gsm8k`` reads ``<data dir>/gsm8k/*.jsonl`` when
present (the same problems, order and fields as the Hub's openai/gsm8k) and the Hub
otherwise. Registered in ``tasks/gsm8k.yaml`` through lm-eval's ``class:`` hook.

Another of lm-eval's gsm8k-folder tasks gets the same treatment with ``metadata: {builtin:
NAME}`` in its YAML (e.g. ``gsm8k-cot-zeroshot``; the fidelity benchmark uses this).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lm_eval.api.task import ConfigurableTask

from srlm_harness_plugins.lm_eval import task_data


def builtin_config_path(name: str = "gsm8k") -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent / "gsm8k" / f"{name}.yaml"


def builtin_config(name: str = "gsm8k") -> dict[str, Any]:
    """lm-eval's own config of ``name`` (functions resolved, includes merged)."""
    # The loader lm-eval's TaskFactory uses, so the config is what lm-eval would build.
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(builtin_config_path(name), resolve_func=True)


class Gsm8k(ConfigurableTask):
    def __init__(self, config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        ours = (config or {}).get("metadata") or {}
        cfg = builtin_config(ours.get("builtin", "gsm8k"))
        for key in ("tag", "group"):
            cfg.pop(key, None)
        # Keep lm-eval's metadata (its version) and add the factory's (config source, ...).
        extra = {k: v for k, v in ours.items() if k not in ("version", "builtin")}
        cfg["metadata"] = {**cfg.get("metadata", {}), **extra}
        cfg["custom_dataset"] = task_data.gsm8k
        super().__init__(config=cfg, **kwargs)
