"""The right defaults for the machine at hand: device, precision, threads, checkpointing.

On a CPU without fast bf16 (most of them) training in fp32 is ~10x faster than TRL's
default bf16, and gradient checkpointing only costs time when memory is plentiful. The
choices are printed, recorded in every manifest, and each can be overridden in a spec's
``hardware:`` section or with ``-o hardware.KEY=VALUE``.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from srlm_harness.api import UserError


@dataclass
class Hardware:
    device: str  # "cpu", "cuda", "mps"
    dtype: str  # "float32", "bfloat16", "float16"
    threads: int
    gradient_checkpointing: bool
    device_name: str = ""
    memory_gib: float = 0.0
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def bf16(self) -> bool:
        return self.dtype == "bfloat16"

    @property
    def fp16(self) -> bool:
        return self.dtype == "float16"

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        ckpt = "on" if self.gradient_checkpointing else "off"
        name = f" ({self.device_name})" if self.device_name else ""
        return (
            f"{self.device}{name}, {self.dtype}, {self.threads} threads, "
            f"gradient checkpointing {ckpt}"
        )


def _cpu_has_fast_bf16() -> bool:
    """Only AMX tiles make CPU bf16 training clearly faster than fp32. AVX512-BF16 speeds up
    bare matmuls, but mixed-precision training (autocast, casts, fp32 master weights) still
    runs slower than plain fp32 on such CPUs, so it does not count."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 0.0


_KEYS = {"device", "dtype", "threads", "gradient_checkpointing"}
_DTYPES = {
    "float32": "float32",
    "bfloat16": "bfloat16",
    "float16": "float16",
    "fp32": "float32",
    "bf16": "bfloat16",
    "fp16": "float16",
}


def detect(overrides: dict[str, Any] | None = None, model_params: int | None = None) -> Hardware:
    """Pick device, dtype, threads and checkpointing; ``overrides`` (spec ``hardware:``) win.

    ``model_params`` (if known) lets us turn gradient checkpointing on only when a full
    fine-tune would not fit comfortably in memory.
    """
    import torch

    overrides = dict(overrides or {})
    unknown = set(overrides) - _KEYS
    if unknown:
        raise UserError(
            f"unknown hardware option {sorted(unknown)[0]!r}",
            "hardware",
            f"known: {', '.join(sorted(_KEYS))}",
        )
    reasons: dict[str, str] = {}
    if torch.cuda.is_available():
        device, name = "cuda", torch.cuda.get_device_name(0)
        memory = torch.cuda.get_device_properties(0).total_memory / 2**30
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        reasons["dtype"] = f"{name} {'supports' if dtype == 'bfloat16' else 'lacks'} bf16"
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        device, name, memory, dtype = "mps", "Apple GPU", _memory_gib(), "float32"
        reasons["dtype"] = "mps: fp32 is the reliable choice"
    else:
        device, name, memory = "cpu", platform.processor() or platform.machine(), _memory_gib()
        fast = _cpu_has_fast_bf16()
        dtype = "bfloat16" if fast else "float32"
        reasons["dtype"] = (
            "CPU has AMX bf16 tiles"
            if fast
            else "CPU without AMX: fp32 trains several times faster than bf16 autocast"
        )
    threads = os.cpu_count() or 1
    reasons["threads"] = "one per core"
    # Full fine-tuning keeps weights, grads and two Adam moments: ~16 bytes per parameter,
    # plus activations. Checkpointing trades ~30% speed for memory; use it only when needed.
    need_gib = (model_params or 0) * 16 / 2**30 * 1.5
    checkpointing = bool(memory) and need_gib > 0.8 * memory
    reasons["gradient_checkpointing"] = (
        f"model needs ~{need_gib:.1f} GiB of {memory:.0f} GiB"
        if model_params
        else "memory is ample"
    )
    hw = Hardware(device, dtype, threads, checkpointing, name, round(memory, 1), reasons)
    for key, value in overrides.items():
        if key == "dtype":
            if value not in _DTYPES:
                raise UserError(
                    f"unknown dtype {value!r}", "hardware.dtype", "use float32, bfloat16 or float16"
                )
            value = _DTYPES[value]
        if key == "threads":
            value = int(value)
        if key == "gradient_checkpointing":
            value = (
                value
                if isinstance(value, bool)
                else str(value).lower() in ("1", "true", "yes", "on")
            )
        setattr(hw, key, value)
        hw.reasons[key] = "set in the spec"
    return hw


def apply_threads(hw: Hardware) -> None:
    """Use every core for intra-op parallelism (torch defaults to physical cores only)."""
    import torch

    if hw.device == "cpu" and torch.get_num_threads() != hw.threads:
        torch.set_num_threads(hw.threads)
