"""The right defaults for the machine at hand: device, precision, threads, checkpointing,
memory allocator.

On a CPU without bf16 instructions (most laptops and older servers) bf16 is emulated and
training in fp32 is several times faster than TRL's default bf16; a CPU with AVX512-BF16
or AMX runs bf16 autocast (fp32 master weights) faster than fp32. Gradient checkpointing is
turned on only when memory needs it. On Linux CPUs, glibc's allocator is told to keep freed
memory for reuse: by default every large tensor is a fresh ``mmap`` that the kernel zeroes
page by page, which on a 2-core machine costs about a quarter of a training step.

The choices are printed, recorded in every manifest, and each can be overridden in a spec's
``hardware:`` section or with ``-o hardware.KEY=VALUE``.
"""

from __future__ import annotations

import ctypes
import functools
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
    allocator: str = "system"  # "caching": keep freed memory for reuse; "system": as is
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
            f"gradient checkpointing {ckpt}, {self.allocator} allocator"
        )


# oneDNN ISA caps (``ONEDNN_MAX_CPU_ISA``) below its first bf16 level: torch then emulates bf16.
_ISA_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"}


def cpu_bf16_instructions(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """``"AMX-BF16"`` or ``"AVX512-BF16"`` when the CPU computes bf16 natively, else None
    (bf16 is then emulated and several times slower than fp32). A ``ONEDNN_MAX_CPU_ISA``
    cap below bf16 hides the instructions from torch, so it counts as their absence."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ISA_WITHOUT_BF16:
        return None
    try:
        with open(cpuinfo) as f:
            flags = set(f.read().split())
    except OSError:
        return None
    if "amx_bf16" in flags:
        return "AMX-BF16"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return None


@functools.cache
def _glibc_mallopt() -> Any:
    """glibc's ``mallopt``, or None on other C libraries and platforms."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 0.0


_KEYS = {"device", "dtype", "threads", "gradient_checkpointing", "allocator"}
_ALLOCATORS = ("caching", "system")
_DEVICES = ("cpu", "cuda", "mps")
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
        isa = cpu_bf16_instructions()
        dtype = "bfloat16" if isa else "float32"
        reasons["dtype"] = (
            f"CPU has {isa}: bf16 autocast (fp32 master weights) trains faster than fp32"
            if isa
            else "CPU without bf16 instructions: fp32 trains several times faster than bf16"
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
    # Kept memory is not returned to the system until the process ends: not when memory is
    # tight (checkpointing on), where holding the peak could run out.
    allocator = "system"
    if device != "cpu" or not _glibc_mallopt():
        reasons["allocator"] = "the platform's allocator is left as is"
    elif checkpointing:
        reasons["allocator"] = "memory is tight: freed memory goes back to the system"
    else:
        allocator = "caching"
        reasons["allocator"] = "glibc keeps freed tensors for reuse instead of page-faulting"
    hw = Hardware(device, dtype, threads, checkpointing, allocator, name, round(memory, 1), reasons)
    for key, value in overrides.items():
        if key == "dtype":
            if value not in _DTYPES:
                raise UserError(
                    f"unknown dtype {value!r}", "hardware.dtype", "use float32, bfloat16 or float16"
                )
            value = _DTYPES[value]
        if key == "threads":
            if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
                raise UserError(f"threads must be a whole number of at least 1, got {value!r}",
                                "hardware.threads")
            value = int(value)
        if key == "device" and value not in _DEVICES:
            raise UserError(f"unknown device {value!r}", "hardware.device",
                            f"use {', '.join(_DEVICES)}")
        if key == "allocator" and value not in _ALLOCATORS:
            raise UserError(
                f"unknown allocator {value!r}", "hardware.allocator", "use caching or system"
            )
        if key == "gradient_checkpointing":
            words = {"1": True, "true": True, "yes": True, "on": True,
                     "0": False, "false": False, "no": False, "off": False}
            if not isinstance(value, bool) and str(value).lower() not in words:
                raise UserError(f"gradient_checkpointing is true or false, got {value!r}",
                                "hardware.gradient_checkpointing")
            value = value if isinstance(value, bool) else words[str(value).lower()]
        setattr(hw, key, value)
        hw.reasons[key] = "set in the spec"
    return hw


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def apply_hardware(hw: Hardware) -> None:
    """Put ``hw``'s process-wide settings into effect before training or evaluating: every
    core for intra-op parallelism (torch defaults to physical cores only) and, with the
    ``caching`` allocator, glibc thresholds that keep freed memory in the process (no
    ``mmap`` for blocks under 1 GiB, or 32 MiB where glibc caps the threshold there; no
    trimming below 1 GiB free), so the next step's tensors reuse pages that are already
    mapped. The setting is process-wide and stays: memory is returned to the system when
    the process ends rather than after each step."""
    import torch

    if hw.device == "cpu" and torch.get_num_threads() != hw.threads:
        torch.set_num_threads(hw.threads)
    mallopt = _glibc_mallopt() if hw.allocator == "caching" else None
    if mallopt is not None:
        # glibc caps the mmap threshold on some builds; 32 MiB is accepted everywhere.
        if not mallopt(_M_MMAP_THRESHOLD, 1 << 30):
            mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        mallopt(_M_TRIM_THRESHOLD, 1 << 30)
