"""Resuming an interrupted training stage is bit-for-bit: the same weights and the same
recorded losses as a run that was never interrupted, wherever the interruption fell (mid
epoch or on an epoch boundary), and a checkpoint broken by a crash is skipped, not fatal."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from srlm_harness.testing import arithmetic_records
from srlm_harness.testing import make_stage_context as make_ctx
from srlm_harness_plugins.trl_stages import common as training
from srlm_harness_plugins.trl_stages import sft

# 24 records in batches of 8: three optimizer steps per epoch, nine in all.
RECORDS = arithmetic_records(24, seed=3)


def config() -> sft.SftConfig:
    return sft.SftConfig(epochs=3, save_steps=1, batch_size=8, lr=3e-3, logging_steps=2)


def weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def crash_after(step: int):  # type: ignore[no-untyped-def]
    def progress(done: int, total: int, what: str) -> None:
        if done == step + 1:  # checkpoint-<step> is on disk; die in the middle of the next step
            raise KeyboardInterrupt

    return progress


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("uninterrupted")
    ctx = make_ctx(tmp, tiny_model_dir, config(), RECORDS)
    metrics = sft.run(ctx).metrics
    assert metrics["steps"] == 9
    return weights(ctx.output_dir), metrics


# 2 and 4: mid epoch (4 is the second epoch's first step); 3 and 6: on an epoch boundary.
@pytest.mark.parametrize("killed_after", [2, 3, 4, 6])
def test_resume_is_bit_for_bit(
    tmp_path: Path, tiny_model_dir: Path, uninterrupted, killed_after: int  # type: ignore[no-untyped-def]
) -> None:
    import torch

    expected, expected_metrics = uninterrupted
    crash = crash_after(killed_after)
    first = make_ctx(tmp_path, tiny_model_dir, config(), RECORDS, progress=crash)
    with pytest.raises(KeyboardInterrupt):
        sft.run(first)
    assert training.latest_checkpoint(first.checkpoint_dir).endswith(f"checkpoint-{killed_after}")

    second = make_ctx(tmp_path, tiny_model_dir, config(), RECORDS)
    metrics = sft.run(second).metrics
    assert metrics["resumed_from_step"] == killed_after
    got = weights(second.output_dir)
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
    for key in ("train_loss", "first_loss", "final_loss", "loss_curve", "steps"):
        assert metrics[key] == expected_metrics[key], key


@pytest.mark.parametrize("damage", ["empty", "truncated", "missing weights"])
def test_a_broken_newest_checkpoint_falls_back_to_the_one_before(
    tmp_path: Path, tiny_model_dir: Path, uninterrupted, damage: str  # type: ignore[no-untyped-def]
) -> None:
    import torch

    expected, _ = uninterrupted
    first = make_ctx(tmp_path, tiny_model_dir, config(), RECORDS, progress=crash_after(4))
    with pytest.raises(KeyboardInterrupt):
        sft.run(first)
    # The crash hit while checkpoint-5 was being saved: checkpoint-4 is still complete.
    good = first.checkpoint_dir / "checkpoint-4"
    broken = first.checkpoint_dir / "checkpoint-5"
    shutil.copytree(good, broken)
    state = broken / "trainer_state.json"
    if damage == "empty":
        state.write_text("")
    elif damage == "truncated":
        state.write_text(state.read_text()[:40])
    else:
        for path in broken.glob("*.safetensors"):
            path.unlink()

    said: list[str] = []
    second = make_ctx(tmp_path, tiny_model_dir, config(), RECORDS, log=said.append)
    metrics = sft.run(second).metrics
    assert metrics["resumed_from_step"] == 4
    assert any("checkpoint-5 is incomplete" in line for line in said), said
    got = weights(second.output_dir)
    assert all(torch.equal(t, got[n]) for n, t in expected.items())


def test_no_complete_checkpoint_starts_over_and_says_so(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    broken = tmp_path / "checkpoints" / "checkpoint-3"
    broken.mkdir(parents=True)
    (broken / "trainer_state.json").write_text("")
    said: list[str] = []
    config = sft.SftConfig(max_steps=2, batch_size=8)
    ctx = make_ctx(tmp_path, tiny_model_dir, config, log=said.append)
    metrics = sft.run(ctx).metrics
    assert metrics["steps"] == 2 and "resumed_from_step" not in metrics
    assert any("training starts over" in line for line in said), said
