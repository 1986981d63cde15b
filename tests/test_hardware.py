"""Hardware defaults: the precision rule, overrides, and the allocator setting's real effect."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from srlm_harness.api import UserError
from srlm_harness.pipeline import hardware

FLAGS = "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw{extra} xsave\n"


def cpuinfo(tmp_path: Path, extra: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\n" + FLAGS.format(extra=extra))
    return str(path)


@pytest.mark.parametrize(
    ("extra", "want"),
    [("", None), (" avx512_bf16", "AVX512-BF16"), (" avx512_bf16 amx_tile amx_bf16", "AMX-BF16"),
     (" avx512_bf16x", None)],  # a longer flag is not the flag
)
def test_bf16_instructions_come_from_the_cpu_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str, want: str | None
) -> None:
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert hardware.cpu_bf16_instructions(cpuinfo(tmp_path, extra)) == want


def test_an_isa_cap_below_bf16_hides_the_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = cpuinfo(tmp_path, " avx512_bf16")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert hardware.cpu_bf16_instructions(info) is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert hardware.cpu_bf16_instructions(info) == "AVX512-BF16"
    assert hardware.cpu_bf16_instructions(str(tmp_path / "absent")) is None


@pytest.mark.parametrize(("isa", "dtype"), [(None, "float32"), ("AVX512-BF16", "bfloat16")])
def test_cpu_precision_follows_the_instructions(
    monkeypatch: pytest.MonkeyPatch, isa: str | None, dtype: str
) -> None:
    monkeypatch.setattr(hardware, "find_accelerator", lambda: None)
    monkeypatch.setattr(hardware, "cpu_bf16_instructions", lambda: isa)
    hw = hardware.detect()
    assert (hw.device, hw.dtype) == ("cpu", dtype)
    assert (isa or "without bf16") in hw.reasons["dtype"]
    assert dtype in hw.summary()


def test_caching_allocator_only_when_memory_is_ample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "find_accelerator", lambda: None)
    monkeypatch.setattr(hardware, "_glibc_mallopt", lambda: print)
    monkeypatch.setattr(hardware, "_memory_gib", lambda: 16.0)
    assert hardware.detect(model_params=10**8).allocator == "caching"  # ~2 GiB needed
    tight = hardware.detect(model_params=10**9)  # ~22 GiB needed: checkpointing, memory back
    assert tight.gradient_checkpointing and tight.allocator == "system"
    assert "memory is tight" in tight.reasons["allocator"]
    monkeypatch.setattr(hardware, "_glibc_mallopt", lambda: None)  # not glibc
    assert hardware.detect(model_params=10**8).allocator == "system"


def test_overrides_win_and_bad_ones_name_the_key() -> None:
    hw = hardware.detect({"dtype": "fp32", "allocator": "system", "threads": "1",
                          "gradient_checkpointing": "yes"})
    assert (hw.dtype, hw.allocator, hw.threads, hw.gradient_checkpointing) == (
        "float32", "system", 1, True)
    assert hw.reasons["allocator"] == "set in the spec"
    with pytest.raises(UserError, match="unknown allocator 'jemalloc'") as err:
        hardware.detect({"allocator": "jemalloc"})
    assert err.value.where == "hardware.allocator"
    with pytest.raises(UserError, match="unknown hardware option 'precision'"):
        hardware.detect({"precision": "bf16"})
    for key, value, message in (
        ("device", "gpu", "unknown device 'gpu'"),
        ("threads", "abc", "threads must be a whole number"),
        ("threads", 0, "threads must be a whole number"),
        ("gradient_checkpointing", "maybe", "must be true or false"),
    ):
        with pytest.raises(UserError, match=message) as err:
            hardware.detect({key: value})
        assert err.value.where == f"hardware.{key}"


def test_a_device_this_machine_lacks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "find_accelerator", lambda: None)
    with pytest.raises(UserError, match="'cuda' is not available on this machine"):
        hardware.detect({"device": "cuda"})
    gpu = hardware.Accelerator("cuda", "Some GPU", 80.0, True)
    monkeypatch.setattr(hardware, "find_accelerator", lambda: gpu)
    assert (hardware.detect().device, hardware.detect().dtype) == ("cuda", "bfloat16")
    on_cpu = hardware.detect({"device": "cpu"})  # the CPU's own precision rule, not the GPU's
    assert on_cpu.device == "cpu" and "CPU" in on_cpu.reasons["dtype"]


def test_detection_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from srlm_harness.pipeline import hardware\n"
        "hardware.detect()\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_trainable_models_keep_fp32_master_weights(tiny_model_dir: Path) -> None:
    import torch

    from srlm_harness_plugins.trl_stages.common import load_model

    hw = hardware.detect({"device": "cpu", "dtype": "bfloat16"})
    student, _ = load_model(tiny_model_dir, hw)
    teacher, _ = load_model(tiny_model_dir, hw, trainable=False)
    assert {p.dtype for p in student.parameters()} == {torch.float32}
    assert {p.dtype for p in teacher.parameters()} == {torch.bfloat16}


PAGE_FAULTS = """
import json, resource, sys
import torch
from srlm_harness.pipeline.hardware import apply_hardware, detect
apply_hardware(detect({"allocator": sys.argv[1]}))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):  # warm up: the heap settles into its steady layout
    torch.empty(64 << 18).fill_(1.0)
before = faults()
for _ in range(20):
    torch.empty(64 << 18).fill_(1.0)  # a fresh 64 MiB tensor, freed at once
# Older glibc caps the mmap threshold at 32 MiB: 64 MiB tensors are then mmapped anyway.
big = bool(__import__("ctypes").CDLL(None).mallopt(-3, 1 << 30))
print(json.dumps([faults() - before, big]))
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_caching_allocator_reuses_freed_memory_instead_of_faulting_fresh_pages() -> None:
    def faults(allocator: str) -> int:
        out = subprocess.run([sys.executable, "-c", PAGE_FAULTS, allocator],
                             capture_output=True, text=True, check=True).stdout
        count, big = json.loads(out)
        if not big:
            pytest.skip("this glibc caps the mmap threshold below the 64 MiB test tensors")
        return int(count)

    # The kernel's proactive reclaim (DAMON, where it runs) may page out retained memory
    # now and then, which only adds faults: the fewest of three runs is the allocator's.
    system, caching = faults("system"), min(faults("caching") for _ in range(3))
    # Each fresh 64 MiB mapping faults in 16,384 pages: 20 of them is ~330k faults.
    assert system > 20 * 10_000, (system, caching)
    assert caching < system / 10, (system, caching)


def test_a_cuda_build_and_nvidia_smi_find_the_gpu_without_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H200, 143771, 9.0'\necho 'Tesla T4, 15360, 7.5'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(hardware, "_torch_libraries", lambda: ["libtorch_cuda.so", "libc10.so"])

    def found(visible: str | None) -> hardware.Accelerator | None:
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        hardware.find_accelerator.cache_clear()
        try:
            return hardware.find_accelerator()
        finally:
            hardware.find_accelerator.cache_clear()

    assert found(None) == hardware.Accelerator("cuda", "NVIDIA H200", 143771 / 1024, True)
    t4 = found("1")
    assert t4 is not None and (t4.name, t4.bf16) == ("Tesla T4", False)
    assert found("") is None  # no GPU visible: the CPU
    monkeypatch.setattr(hardware, "find_accelerator", lambda: t4)
    assert (hardware.detect().device, hardware.detect().dtype) == ("cuda", "float16")
