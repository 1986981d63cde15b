"""The lm-eval evaluator end to end on a tiny real model, and its one-line errors.

The model is a 1-layer Qwen2 whose weights make it a bigram machine that answers "18" to
any prompt (attention and MLP outputs are zeroed, embeddings and head wired by hand), so
scores are real, non-trivial and predictable from the data alone.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from srlm_harness.api import EvalRequest, Task, UserError
from srlm_harness.pipeline.hardware import detect
from srlm_harness_plugins.lm_eval import TASKS, TASKS_DIR
from srlm_harness_plugins.lm_eval.evaluator import evaluate, fingerprint

ANSWER = "18"


def make_answering_model(path: Path, answer: str = ANSWER) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from srlm_harness.testing import make_tokenizer

    tok = make_tokenizer()
    chain = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert len(set(chain)) == len(chain)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
        tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        # Residual stream = the current token's embedding: dimension 0 for "any other token",
        # dimension i+1 for the i-th answer token; the head maps each to the next token.
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        embed.zero_()
        embed[:, 0] = 1.0
        head.zero_()
        head[chain[0], 0] = 10.0
        for i, token in enumerate(chain[:-1]):
            embed[token].zero_()
            embed[token, i + 1] = 1.0
            head[chain[i + 1], i + 1] = 10.0
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def answer_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_answering_model(tmp_path_factory.mktemp("models") / "answers-18")


@pytest.fixture
def rg_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SRLM_HARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def request(model: Path, names: list[str], out: Path, limit: int | None = 5,
            **options) -> EvalRequest:
    tasks = [Task(n, include_path=TASKS_DIR if n in TASKS else None) for n in names]
    return EvalRequest(model_dir=model, tasks=tasks, output_dir=out, limit=limit, seed=0,
                       hardware=detect({"dtype": "float32"}), options=options, log=lambda m: None)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_reasoning_gym_task_scores_through_the_verifier(answer_model, rg_cache, tmp_path):
    import reasoning_gym

    result = evaluate(request(answer_model, ["rg_basic_arithmetic"], tmp_path / "out", limit=8,
                              batch_size=4))
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    for key in ("results", "configs", "versions", "n-shot", "n-samples", "config", "task_hashes"):
        assert key in results
    rows = read_jsonl(out / "samples_rg_basic_arithmetic.jsonl")
    [score] = result.scores
    assert (score.task, score.metric, score.n) == ("rg_basic_arithmetic", "acc,none", 8)
    assert len(rows) == 8
    assert score.value == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
    assert score.value == results["results"]["rg_basic_arithmetic"]["acc,none"]
    # Held-out problems from the jsonl cache, judged by reasoning-gym's own scorer.
    cached = read_jsonl(next(rg_cache.glob("reasoning_gym/basic_arithmetic-seed424242-*.jsonl")))
    scorer = reasoning_gym.get_score_answer_fn("basic_arithmetic")
    for row, doc in zip(rows, cached, strict=False):
        assert (row["response"], row["extracted"], row["gold"]) == (ANSWER, ANSWER, doc["answer"])
        assert row["correct"] == (scorer(ANSWER, doc) == 1.0)
        assert row["prompt"].startswith("<|im_start|>user\n" + doc["question"])
        assert row["prompt_hash"] == hashlib.sha256(row["prompt"].encode()).hexdigest()
    prov = result.provenance
    assert prov.partial is True and prov.extra["sample_count"] == 8 and prov.seed == 0
    assert prov.libraries["lm_eval"] and prov.limit == 8
    task = prov.tasks["rg_basic_arithmetic"]
    assert task.chat_template and task.n_shot == 0 and task.extra["documents"] == 500
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scores"]["rg_basic_arithmetic"]["value"] == score.value
    assert result.files["samples"] == {"rg_basic_arithmetic": "samples_rg_basic_arithmetic.jsonl"}


@pytest.mark.gsm8k
def test_gsm8k_and_chat_variant_end_to_end(answer_model, gsm8k_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SRLM_HARNESS_DATA_DIR", str(gsm8k_dir.parent))
    golds = [json.loads(line)["answer"].split("####")[-1].strip()
             for line in (gsm8k_dir / "test.jsonl").read_text().splitlines()[:5]]
    expected = sum(g == ANSWER for g in golds) / 5
    assert 0 < expected < 1
    result = evaluate(request(answer_model, ["gsm8k", "gsm8k_cot_chat"], tmp_path, limit=5))
    scores = {s.task: s for s in result.scores}
    assert scores["gsm8k"].metric == "exact_match,flexible-extract"
    assert scores["gsm8k_cot_chat"].metric == "acc,none"
    for task in ("gsm8k", "gsm8k_cot_chat"):
        rows = read_jsonl(tmp_path / f"samples_{task}.jsonl")
        assert [r["doc_id"] for r in rows] == list(range(5))
        assert scores[task].value == pytest.approx(expected)
        assert sum(r["correct"] for r in rows) / 5 == pytest.approx(scores[task].value)
    plain = read_jsonl(tmp_path / "samples_gsm8k.jsonl")[0]["prompt"]
    chat = read_jsonl(tmp_path / "samples_gsm8k_cot_chat.jsonl")[0]["prompt"]
    assert plain.count("Question:") == 6 and "<|im_start|>" not in plain  # 5-shot, no template
    assert chat.startswith("<|im_start|>user\n")
    prov = result.provenance.tasks
    assert prov["gsm8k"].n_shot == 5 and prov["gsm8k"].version == 3.0
    assert prov["gsm8k"].chat_template is None
    assert prov["gsm8k_cot_chat"].chat_template
    # The documents came from the local files, recorded with their checksums (lm-eval's own
    # config still names the Hub dataset it would have used).
    test_sha = hashlib.sha256((gsm8k_dir / "test.jsonl").read_bytes()).hexdigest()
    for task in ("gsm8k", "gsm8k_cot_chat"):
        assert prov[task].data["local"]["test"] == str(gsm8k_dir / "test.jsonl")
        assert prov[task].data["sha256"]["test"] == test_sha
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["data_sources"]["gsm8k"] == prov["gsm8k"].data
    assert results["configs"]["gsm8k"]["dataset_path"] == "openai/gsm8k"


def lm_evals_own_gsm8k(gsm8k_dir: Path):  # type: ignore[no-untyped-def]
    """lm-eval's built-in gsm8k task, unchanged except that it reads the local files."""
    import lm_eval.tasks as builtin
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(Path(builtin.__file__).parent / "gsm8k" / "gsm8k.yaml")
    config.pop("tag")
    config.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": {
        "train": str(gsm8k_dir / "train.jsonl"), "test": str(gsm8k_dir / "test.jsonl")}})
    return ConfigurableTask(config=config)


@pytest.mark.gsm8k
def test_gsm8k_defaults_reproduce_a_plain_lm_eval_run(gsm8k_dir, tmp_path, monkeypatch):
    """With no options, the harness's gsm8k gives what lm-eval gives with its own defaults
    (few-shot seed 1234, batch size 1): the same prompts, generations, filtered answers and
    metrics, on a random model whose generations depend on every number in the prompt,
    while the harness generates at the batch size its probe chose (here 4 of the 6)."""
    from lm_eval import simple_evaluate

    from srlm_harness.testing import make_tiny_model
    from srlm_harness_plugins import generation

    monkeypatch.setattr(generation, "probe_cache", lambda: tmp_path / "probe.json")
    monkeypatch.setattr(generation, "probe_rates",
                        lambda model, sizes=(): {1: 10.0, 2: 18.0, 4: 30.0, 8: 31.0})

    # A wide initialisation: greedy generations that vary with the prompt (and with any
    # numerical difference batching might cause).
    model = make_tiny_model(tmp_path / "tiny", max_position_embeddings=4096, initializer_range=0.2)
    monkeypatch.setenv("SRLM_HARNESS_DATA_DIR", str(gsm8k_dir.parent))
    result = evaluate(request(model, ["gsm8k"], tmp_path / "out", limit=6, max_gen_toks=12))
    plain = simple_evaluate(model="hf", model_args=f"pretrained={model},dtype=float32",
                            tasks=[lm_evals_own_gsm8k(gsm8k_dir)], limit=6, device="cpu",
                            gen_kwargs={"max_gen_toks": 12}, log_samples=True)
    theirs = plain["samples"]["gsm8k"]
    ours = read_jsonl(tmp_path / "out" / "samples_gsm8k.jsonl")
    assert plain["config"]["fewshot_seed"] == 1234 and plain["config"]["batch_size"] is None
    settings = result.provenance.tasks["gsm8k"].settings
    assert settings["fewshot_seed"] == 1234 and settings["batch_size"] == 4
    assert len({r["response"] for r in ours}) > 1  # the generations differ between documents
    for row in ours:
        both = [s for s in theirs if s["doc_id"] == row["doc_id"]]
        assert {s["filter"] for s in both} == {"strict-match", "flexible-extract"}
        for sample in both:
            assert sample["arguments"][0][0] == row["prompt"]
            assert sample["resps"][0][0] == row["response"]
            key = f"exact_match,{sample['filter']}"
            assert row["metrics"][key] == sample["exact_match"]
        flexible = next(s for s in both if s["filter"] == "flexible-extract")
        assert flexible["filtered_resps"][0] == row["extracted"]
    assert result.scores[0].value == plain["results"]["gsm8k"]["exact_match,flexible-extract"]
    # A spec may still choose its own draw; it changes the few-shot examples, and is recorded.
    chosen = evaluate(request(model, ["gsm8k"], tmp_path / "o2", limit=2, max_gen_toks=1,
                              fewshot_seed=7))
    assert chosen.provenance.tasks["gsm8k"].settings["fewshot_seed"] == 7
    assert read_jsonl(tmp_path / "o2" / "samples_gsm8k.jsonl")[0]["prompt"] != ours[0]["prompt"]


@pytest.mark.gsm8k
def test_harness_gsm8k_renders_the_same_prompts_as_lm_evals_own(gsm8k_dir, monkeypatch):
    """lm-eval's built-in gsm8k YAML, pointed at the same local files, and our gsm8k build
    identical contexts (few-shot examples included) for the same documents and seed."""
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("SRLM_HARNESS_DATA_DIR", str(gsm8k_dir.parent))
    theirs = lm_evals_own_gsm8k(gsm8k_dir)
    ours = TaskManager(include_path=str(TASKS_DIR), include_defaults=False).load(["gsm8k"])
    ours = ours["tasks"]["gsm8k"]

    def prompt_hashes(task) -> list[str]:
        task.set_fewshot_seed(1234)
        task.build_all_requests(limit=25)
        return [hashlib.sha256(i.arguments[0].encode()).hexdigest() for i in task.instances]

    assert prompt_hashes(ours) == prompt_hashes(theirs)
    assert len(set(prompt_hashes(ours))) == 25
    for key in ("generation_kwargs", "filter_list", "metric_list", "num_fewshot", "metadata"):
        if key == "metadata":
            assert ours.config.metadata["version"] == theirs.config.metadata["version"]
        else:
            assert getattr(ours.config, key) == getattr(theirs.config, key)


def test_math500_reads_local_files_and_scores_equivalent_forms(answer_model, tmp_path,
                                                             monkeypatch):
    golds = ["18", "\\frac{36}{2}", "\\frac{1}{2}", "18.0", "\\sqrt{18}"]
    (tmp_path / "data" / "math500").mkdir(parents=True)
    (tmp_path / "data" / "math500" / "test.jsonl").write_text("".join(
        json.dumps({"problem": f"Problem {i}: compute it.", "answer": gold,
                    "solution": f"\\boxed{{{gold}}}", "subject": "Algebra", "level": 1,
                    "unique_id": f"test/{i}.json"}) + "\n"
        for i, gold in enumerate(golds)))
    monkeypatch.setenv("SRLM_HARNESS_DATA_DIR", str(tmp_path / "data"))
    result = evaluate(request(answer_model, ["math500"], tmp_path / "out", limit=None))
    rows = read_jsonl(tmp_path / "out" / "samples_math500.jsonl")
    # "18" equals 18, 36/2 and 18.0 according to math-verify, not 1/2 or sqrt(18).
    assert [r["correct"] for r in rows] == [True, True, False, True, False]
    assert [r["extracted"] for r in rows] == ["18"] * 5
    assert result.scores[0].value == pytest.approx(3 / 5)
    assert result.provenance.partial is False


def test_fingerprint_follows_data_options_and_tasks(tmp_path, monkeypatch):
    def data(text: str) -> Path:
        root = tmp_path / text
        (root / "gsm8k").mkdir(parents=True)
        for split in ("train", "test"):
            (root / "gsm8k" / f"{split}.jsonl").write_text(
                json.dumps({"question": text, "answer": "#### 1"}) + "\n")
        return root

    gsm8k = [Task("gsm8k", include_path=TASKS_DIR)]
    monkeypatch.setenv("SRLM_HARNESS_DATA_DIR", str(data("a")))
    first = fingerprint(gsm8k, {})
    assert fingerprint(gsm8k, {}) == first
    assert fingerprint(gsm8k, {"num_fewshot": 3}) != first
    assert fingerprint([Task("hellaswag")], {}) != first
    monkeypatch.setenv("SRLM_HARNESS_DATA_DIR", str(data("b")))
    assert fingerprint(gsm8k, {}) != first


def test_unknown_task_names_get_suggestions():
    from srlm_harness_plugins.lm_eval.task_index import check_tasks

    check_tasks(["gsm8k", "hellaswag", "gsm8k_cot"], list(TASKS))  # registered and built-in
    with pytest.raises(UserError, match="unknown task 'gsm8kk'.*did you mean 'gsm8k'"):
        check_tasks(["gsm8kk"], list(TASKS), "evaluate.tasks")
    with pytest.raises(UserError, match="did you mean .*'hellaswag'"):
        check_tasks(["helaswag"], list(TASKS))


def test_missing_data_says_where_it_looked(answer_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SRLM_HARNESS_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(UserError) as error:
        evaluate(request(answer_model, ["math500"], tmp_path / "out"))
    text = str(error.value)
    assert str(tmp_path / "data" / "math500") in text and "HuggingFaceH4/MATH-500" in text
    assert "SRLM_HARNESS_DATA_DIR" in text and "\n" not in text
    # lm-eval's own tasks read the Hub, unreachable here: a one-line error, before the model.
    with pytest.raises(UserError, match="could not load task 'hellaswag'"):
        evaluate(request(answer_model, ["hellaswag"], tmp_path / "out"))
    with pytest.raises(UserError, match="unknown task 'helaswag'.*did you mean"):
        evaluate(request(answer_model, ["helaswag"], tmp_path / "out"))


def test_missing_or_corrupt_model_directory(answer_model, rg_cache, tmp_path):
    with pytest.raises(UserError, match="model directory not found"):
        evaluate(request(tmp_path / "nowhere", ["rg_chain_sum"], tmp_path / "o1"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        evaluate(request(tmp_path / "empty", ["rg_chain_sum"], tmp_path / "o2"))
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in answer_model.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="could not load the model") as error:
        evaluate(request(broken, ["rg_chain_sum"], tmp_path / "o3"))
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="unknown lm-eval option 'beam'"):
        evaluate(request(answer_model, ["rg_chain_sum"], tmp_path / "o4", beam=2))
    with pytest.raises(UserError, match="fewshot_seed must be an integer, got 'soon'") as error:
        evaluate(request(answer_model, ["rg_chain_sum"], tmp_path / "o5", fewshot_seed="soon"))
    assert "evaluate.options.fewshot_seed" in str(error.value) and "\n" not in str(error.value)


def test_plugin_registers_cheaply():
    code = ("import sys, srlm_harness_plugins.lm_eval as p; "
            "assert not {'torch', 'lm_eval', 'datasets', 'transformers'} & set(sys.modules); "
            "seen = []; p.srlm_register_tasks(seen.append); "
            "p.srlm_register_evaluators(seen.append); "
            "print(' '.join(o.name for o in seen))")
    names = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.split()
    assert names == [*TASKS, "lm-eval"]
