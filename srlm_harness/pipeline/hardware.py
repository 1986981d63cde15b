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

Detection never imports torch (a second or more), so ``plan`` and listings stay fast: the
installed torch build is looked at on disk (does it ship its CUDA library?) and the GPU is
asked through ``nvidia-smi``; only when those cannot answer is torch imported.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from srlm_harness.errors import UserError


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


@dataclass
class Accelerator:
    device: str  # "cuda" or "mps"
    name: str
    memory_gib: float
    bf16: bool


def _torch_libraries() -> list[str]:
    """File names in the installed torch's ``lib`` folder, found without importing torch."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return [p.name for p in lib.iterdir()] if lib.is_dir() else []


def _nvidia_smi() -> list[tuple[str, float, bool]] | None:
    """(name, memory GiB, bf16) per NVIDIA GPU, or None when nvidia-smi cannot say."""
    query = "--query-gpu=name,memory.total,compute_cap"
    try:
        done = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        )
        gpus = []
        for line in done.stdout.strip().splitlines():
            name, memory, capability = (part.strip() for part in line.split(","))
            # bf16 needs compute capability 8.0 (Ampere) or newer, as torch checks it.
            gpus.append((name, float(memory) / 1024, float(capability) >= 8.0))
        return gpus or None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _accelerator_from_torch() -> Accelerator | None:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        memory = torch.cuda.get_device_properties(0).total_memory / 2**30
        return Accelerator("cuda", name, memory, torch.cuda.is_bf16_supported())
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return Accelerator("mps", "Apple GPU", _memory_gib(), False)
    return None


@functools.cache
def find_accelerator() -> Accelerator | None:
    """The GPU torch would use, or None for the CPU, from cheap probes where they suffice."""
    libraries = _torch_libraries()
    if not libraries:
        return None  # no torch installed: nothing can run on a GPU anyway
    if any(n.startswith(("libtorch_hip", "torch_hip")) for n in libraries):
        return _accelerator_from_torch()  # ROCm: no cheap probe, ask torch
    if any(n.startswith(("libtorch_cuda", "torch_cuda")) for n in libraries):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None and visible.strip() in ("", "-1"):
            return None
        gpus = _nvidia_smi()
        if gpus is None:
            return _accelerator_from_torch()
        first = visible.split(",")[0].strip() if visible else "0"
        index = int(first) if first.isdigit() and int(first) < len(gpus) else 0
        name, memory, bf16 = gpus[index]
        return Accelerator("cuda", name, memory, bf16)
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return Accelerator("mps", "Apple GPU", _memory_gib(), False)
    return None


_KEYS = {"device", "dtype", "threads", "gradient_checkpointing", "allocator"}
_DEVICES = ("cpu", "cuda", "mps")
_ALLOCATORS = ("caching", "system")
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
    overrides = dict(overrides or {})
    wanted = _wanted_device(overrides)
    found = None if wanted == "cpu" else find_accelerator()
    if wanted not in (None, "cpu") and (found is None or found.device != wanted):
        raise UserError(
            f"device {wanted!r} is not available on this machine",
            "hardware.device",
            f"this machine has {found.device if found else 'only the CPU'}; "
            "leave hardware.device out to use it",
        )
    reasons: dict[str, str] = {}
    if wanted is not None:
        reasons["device"] = "set in the spec"
    device, name, memory, dtype, reasons["dtype"] = _device_and_dtype(found)
    reasons["threads"] = "one per core"
    checkpointing, reasons["gradient_checkpointing"] = _checkpointing(model_params, memory)
    allocator, reasons["allocator"] = _allocator(device, checkpointing)
    hw = Hardware(
        device, dtype, os.cpu_count() or 1, checkpointing, allocator, name, round(memory, 1),
        reasons,
    )
    for key, value in overrides.items():
        setattr(hw, key, _override_value(key, value))
        hw.reasons[key] = "set in the spec"
    return hw


def _wanted_device(overrides: dict[str, Any]) -> str | None:
    """Check the ``hardware:`` keys; take out and return the device asked for, if any."""
    unknown = set(overrides) - _KEYS
    if unknown:
        raise UserError(
            f"unknown hardware option {sorted(unknown)[0]!r}",
            "hardware",
            f"known: {', '.join(sorted(_KEYS))}",
        )
    wanted = overrides.pop("device", None)
    if wanted is not None and wanted not in _DEVICES:
        raise UserError(
            f"unknown device {wanted!r}", "hardware.device", f"use {', '.join(_DEVICES)}"
        )
    return None if wanted is None else str(wanted)


def _device_and_dtype(found: Accelerator | None) -> tuple[str, str, float, str, str]:
    """(device, its name, memory GiB, dtype, why that dtype) for an accelerator or the CPU."""
    if found is not None and found.device == "cuda":
        dtype = "bfloat16" if found.bf16 else "float16"
        why = f"{found.name} {'supports' if found.bf16 else 'lacks'} bf16"
        return "cuda", found.name, found.memory_gib, dtype, why
    if found is not None:
        return "mps", found.name, found.memory_gib, "float32", "mps: fp32 is the reliable choice"
    isa = cpu_bf16_instructions()
    why = (
        f"CPU has {isa}: bf16 autocast (fp32 master weights) trains faster than fp32"
        if isa
        else "CPU without bf16 instructions: fp32 trains several times faster than bf16"
    )
    name = platform.processor() or platform.machine()
    return "cpu", name, _memory_gib(), "bfloat16" if isa else "float32", why


def _checkpointing(model_params: int | None, memory: float) -> tuple[bool, str]:
    """Gradient checkpointing on only when a full fine-tune would not fit comfortably."""
    # Full fine-tuning keeps weights, grads and two Adam moments: ~16 bytes per parameter,
    # plus activations. Checkpointing trades ~30% speed for memory; use it only when needed.
    need_gib = (model_params or 0) * 16 / 2**30 * 1.5
    why = f"model needs ~{need_gib:.1f} GiB of {memory:.0f} GiB" if model_params else (
        "memory is ample"
    )
    return bool(memory) and need_gib > 0.8 * memory, why


def _allocator(device: str, checkpointing: bool) -> tuple[str, str]:
    """``caching`` on glibc CPUs unless memory is tight, else ``system``; and why."""
    # Kept memory is not returned to the system until the process ends: not when memory is
    # tight (checkpointing on), where holding the peak could run out.
    if device != "cpu" or not _glibc_mallopt():
        return "system", "the platform's allocator is left as is"
    if checkpointing:
        return "system", "memory is tight: freed memory goes back to the system"
    return "caching", "glibc keeps freed tensors for reuse instead of page-faulting"


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _override_value(key: str, value: Any) -> Any:
    """A ``hardware:`` value checked and normalised (``bf16`` -> ``bfloat16``, ``"4"`` -> 4)."""
    if key == "dtype":
        if value not in _DTYPES:
            raise UserError(
                f"unknown dtype {value!r}", "hardware.dtype", "use float32, bfloat16 or float16"
            )
        return _DTYPES[value]
    if key == "threads":
        if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
            raise UserError(
                f"threads must be a whole number of at least 1, not {value!r}",
                "hardware.threads",
            )
        return int(value)
    if key == "allocator" and value not in _ALLOCATORS:
        raise UserError(
            f"unknown allocator {value!r}", "hardware.allocator", "use caching or system"
        )
    if key == "gradient_checkpointing" and not isinstance(value, bool):
        text = str(value).lower()
        if text not in (*_TRUE, *_FALSE):
            raise UserError(
                f"gradient_checkpointing must be true or false, not {value!r}",
                "hardware.gradient_checkpointing",
            )
        return text in _TRUE
    return value


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
