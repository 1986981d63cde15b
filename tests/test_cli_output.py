"""What a person (or a script) sees: piped output, --json, Ctrl-C, markup-safe messages."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

PLUGIN = ("--plugin", "demo_plugin")


@pytest.fixture
def env(fixture_plugins, store, tmp_path):  # type: ignore[no-untyped-def]
    return tmp_path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "srlm_harness", *PLUGIN, *args]


def run_piped(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """The CLI as a script or `| tee` sees it: stdout and stderr are pipes, not a terminal."""
    environment = {**os.environ, "COLUMNS": "80"}
    return subprocess.run(
        cli(*args), env=environment, capture_output=True, text=True, timeout=timeout
    )


def test_piped_run_is_plain_lines_without_library_noise(env, tiny_model_dir, store):
    deep = env / ("a-folder-with-a-long-name-" * 4) / "pipeline.yaml"
    deep.parent.mkdir(parents=True)
    deep.write_text(
        f"model: {tiny_model_dir}\n"
        "stages:\n  - scale: {factor: 1.5}\n  - steps: {steps: 8}\n"
        "evaluate: {tasks: [weights], after: [base, end]}\n"
    )
    done = run_piped("run", str(deep))
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr
    assert "\r" not in text
    assert "\x1b[" not in text  # no colour codes or cursor movement
    assert not re.search(r"\d+%\|", text)  # no tqdm bars
    assert "fatal:" not in text
    # Nothing folded at 80 columns: the full spec path and cache keys are on one line each.
    assert any(str(deep) in line for line in done.stdout.splitlines())
    assert max(len(line) for line in done.stdout.splitlines()) > 80
    # The library output went to the run's log, which the output names.
    [log] = (store / "logs").glob("*.log")
    assert str(log) in done.stdout
    # Paths of the model, results and sample logs are printed at the end.
    assert "outputs:" in done.stdout and "samples weights" in done.stdout
    assert "complete in" in done.stdout
    # Progress is a plain line at each quarter, not a bar.
    assert [line.strip() for line in done.stdout.splitlines() if "· steps " in line] == [
        f"· steps {n}/8" for n in (2, 4, 6, 8)
    ]


def test_json_listings_parse_and_match_the_tables(env, harness, tiny_model_dir, store):
    spec = env / "p.yaml"
    spec.write_text(
        f"model: {tiny_model_dir}\nstages:\n  - scale: {{factor: 2}}\n"
        "evaluate: {tasks: [weights], after: [base, end]}\n"
    )
    code, out, err = harness(*PLUGIN, "plan", spec, "--json")
    assert code == 0, err
    planned = json.loads(out)
    steps = [(s["kind"], s["label"]) for s in planned["steps"]]
    assert steps == [("eval", "base"), ("stage", "1:scale"), ("eval", "1:scale")]
    assert planned["to_run"] == 3
    code, table, _ = harness(*PLUGIN, "plan", spec)
    for step in planned["steps"]:
        assert step["key"][:12] in table

    assert harness(*PLUGIN, "run", spec)[0] == 0
    code, out, _ = harness(*PLUGIN, "runs", "list", "--json")
    [row] = json.loads(out)
    assert row["status"] == "complete" and row["final"] is True
    value = row["last_eval"]["scores"]["weights"]
    _, table, _ = harness(*PLUGIN, "runs", "list")
    assert f"weights {100 * value:.1f} (final)" in table

    code, out, _ = harness(*PLUGIN, "runs", "show", row["run_id"], "--json")
    shown = json.loads(out)
    assert shown["run_id"] == row["run_id"]
    paths = {(o["step"], o["what"]): o["path"] for o in shown["outputs"]}
    assert Path(paths[("stage 1:scale", "model")], "config.json").is_file()
    assert Path(paths[("eval 1:scale", "samples weights")]).is_file()
    _, table, _ = harness(*PLUGIN, "runs", "show", row["run_id"])
    assert paths[("eval 1:scale", "results")] in table

    for kind in ("stages", "tasks", "rewards", "datasets"):
        code, out, err = harness(*PLUGIN, kind, "--json")
        assert code == 0, err
        names = [r["name"] for r in json.loads(out)]
        _, table, _ = harness(*PLUGIN, kind)
        assert all(name in table for name in names)
    code, out, _ = harness(*PLUGIN, "stages", "steps", "--json")
    assert {o["key"] for o in json.loads(out)["options"]} == {
        "steps",
        "seconds_per_step",
        "fail_at",
    }
    code, out, _ = harness(*PLUGIN, "plugins", "--json")
    assert "demo_plugin" in {p["name"] for p in json.loads(out)}


def test_failed_runs_do_not_show_base_scores_as_final(env, harness, tiny_model_dir):
    spec = env / "p.yaml"
    spec.write_text(
        f"model: {tiny_model_dir}\nstages:\n  - steps: {{steps: 3, fail_at: 2}}\n"
        "evaluate: {tasks: [weights], after: [base, end]}\n"
    )
    assert harness(*PLUGIN, "run", spec)[0] == 1
    _, out, _ = harness(*PLUGIN, "runs", "list", "--json")
    [row] = json.loads(out)
    assert row["status"] == "failed" and row["final"] is False
    _, table, _ = harness(*PLUGIN, "runs", "list")
    assert "(eval base)" in table and "(final)" not in table


@pytest.mark.parametrize("name", ["pipe[/x].yaml", "x[bold]y.yaml"])
def test_user_text_is_never_read_as_markup(env, harness, name):
    code, _, err = harness(*PLUGIN, "run", env / name)
    assert code == 2
    assert "Traceback" not in err and "MarkupError" not in err
    assert name in err


def test_usage_errors_use_the_one_error_format(harness):
    code, _, err = harness("eval", "some-model")
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "error: srlm-harness eval: Missing option '--tasks' / '-t' (see srlm-harness eval --help)"
    )


def test_tasks_flag_with_commas_and_the_eval_alias(env, harness, tiny_model_dir):
    a = harness(*PLUGIN, "plan", "--model", tiny_model_dir, "--tasks", "weights", "--json")
    b = harness(*PLUGIN, "plan", "--model", tiny_model_dir, "--eval", "weights", "--json")
    assert a[0] == b[0] == 0
    assert json.loads(a[1])["steps"] == json.loads(b[1])["steps"]


def test_resolved_spec_is_yaml_that_plans_the_same(env, harness, tiny_model_dir):
    import yaml

    spec = env / "p.yaml"
    spec.write_text(f"model: {tiny_model_dir}\nstages:\n  - scale: {{factor: 2}}\n")
    code, out, err = harness(*PLUGIN, "config", spec, "-o", "seed=3")
    assert code == 0, err
    resolved = yaml.safe_load(out)
    assert resolved["seed"] == 3 and resolved["stages"][0]["scale"]["factor"] == 2
    again = env / "resolved.yaml"
    again.write_text(out)
    first = json.loads(harness(*PLUGIN, "plan", spec, "-o", "seed=3", "--json")[1])
    second = json.loads(harness(*PLUGIN, "plan", again, "--json")[1])
    assert [s["key"] for s in first["steps"]] == [s["key"] for s in second["steps"]]


# --------------------------------------------------------------------------- Ctrl-C, SIGTERM


def _spawn_in_pty(args: list[str]) -> tuple[int, int]:
    """Start the CLI on a pseudo-terminal, as in a shell: Ctrl-C is a byte the terminal turns
    into SIGINT for the foreground process."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes the command
        os.execvpe(args[0], args, {**os.environ, "COLUMNS": "120"})
    return pid, fd


def _read_until(fd: int, pattern: str, seconds: float, missing_ok: bool = False) -> str:
    text, deadline = "", time.time() + seconds
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            text += chunk.decode("utf-8", "replace")
            if re.search(pattern, text):
                return text
    if missing_ok:
        return text
    raise AssertionError(f"{pattern!r} not seen in {seconds}s; output so far:\n{text}")


def _checkpoints(store: Path, pattern: str, n: int = 1) -> Callable[[], bool]:
    return lambda: len(list(store.glob(f"work/*/checkpoints/{pattern}"))) >= n


def _ctrl_c_run(spec: Path, started: str, ready: Callable[[], bool]) -> tuple[int, str]:
    """Run ``spec`` on a terminal, press Ctrl-C once ``started`` is shown and ``ready()``
    is true; the exit code and what was printed. The terminal is read all along (a full
    terminal buffer would block the run). A run that has not stopped a minute after Ctrl-C
    fails the test (the bug was a first Ctrl-C with no effect for over a minute)."""
    pid, fd = _spawn_in_pty(cli("run", str(spec)))
    try:
        text = _read_until(fd, started, 120)
        deadline = time.time() + 300
        while not ready():
            assert time.time() < deadline, f"not ready after 300 s:\n{text}"
            text += _read_until(fd, r"(?!)", 0.2, missing_ok=True)  # never matches: just drain
        os.write(fd, b"\x03")
        text = _read_until(fd, r"again to resume", 60)
        deadline = time.time() + 60
        while time.time() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status), text
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"still running a minute after Ctrl-C:\n{text}")
    finally:
        os.close(fd)


def test_ctrl_c_during_training_says_what_was_kept_and_resumes(env, tiny_model_dir, store):
    spec = env / "slow.yaml"
    spec.write_text(
        f"model: {tiny_model_dir}\nstages:\n  - steps: {{steps: 40, seconds_per_step: 0.3}}\n"
        "evaluate: {tasks: [weights], after: [base, end]}\n"
    )
    code, text = _ctrl_c_run(spec, r"stage 1:steps", _checkpoints(store, "step-*", 3))
    assert code == 130, text
    assert "interrupted; kept: eval base, checkpoints of stage 1:steps" in text
    assert f"run `srlm-harness --plugin demo_plugin run {spec}` again to resume" in text

    done = run_piped("run", str(spec))
    assert done.returncode == 0, done.stderr
    [stage] = list((store / "stages").iterdir())
    metrics = json.loads((stage / "manifest.json").read_text())["metrics"]
    assert metrics["resumed_from"] >= 3


def test_ctrl_c_during_an_evaluation_stops_and_keeps_the_stage(env, tiny_model_dir, store):
    spec = env / "slow-eval.yaml"
    spec.write_text(
        f"model: {tiny_model_dir}\nstages:\n  - scale: {{factor: 2}}\n"
        "evaluate: {tasks: [weights], after: [end], options: {seconds_per_sample: 2}}\n"
    )
    started = time.time()
    code, text = _ctrl_c_run(spec, r"▶ eval 1:scale", lambda: time.time() > started + 0.5)
    assert code == 130, text
    assert "interrupted; kept: stage 1:scale" in text

    again = run_piped("run", str(spec), "-o", "evaluate.options.seconds_per_sample=0")
    assert again.returncode == 0, again.stderr
    assert "✓ stage 1:scale cached" in again.stdout


def test_sigterm_exits_130_with_the_message(env, tiny_model_dir, store):
    spec = env / "slow.yaml"
    spec.write_text(
        f"model: {tiny_model_dir}\nstages:\n  - steps: {{steps: 40, seconds_per_step: 0.3}}\n"
    )
    proc = subprocess.Popen(
        cli("run", str(spec)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not _checkpoints(store, "step-*")() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "interrupted; kept: checkpoints of stage 1:steps" in err
    assert "Traceback" not in err


def test_an_interrupt_that_a_library_swallows_still_stops_the_run(tmp_path):
    # Ctrl-C landing in a __del__: Python prints "Exception ignored" and carries on.
    code = (
        "import time\n"
        "from srlm_harness.pipeline.interrupt import stop_on_signal\n"
        "class Resource:\n"
        "    def __del__(self):\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(60)\n"
        "with stop_on_signal(lambda: 'stopped; kept: nothing'):\n"
        "    resource = Resource()\n"
        "    del resource\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Exception ignored" in err  # the interrupt was swallowed, as in the bug
    assert "error: stopped; kept: nothing" in err


def test_board_commands_take_paths_and_show_json(env, harness, tiny_model_dir, monkeypatch):
    spec = env / "p.yaml"
    spec.write_text(
        f"model: {tiny_model_dir}\nstages:\n  - scale: {{factor: 2}}\n"
        "evaluate: {tasks: [weights], after: [base, end]}\n"
    )
    assert harness(*PLUGIN, "run", spec, "--run-id", "r1")[0] == 0
    monkeypatch.chdir(env)
    board = env / "boards" / "mine"
    code, out, err = harness(*PLUGIN, "leaderboard", "publish", "r1", "--board", board)
    assert code == 0, err
    assert (board / "entries").is_dir()
    for argument in (str(board), "./boards/mine"):
        code, out, err = harness(*PLUGIN, "leaderboard", "show", argument, "--json")
        assert code == 0, err
        [row] = json.loads(out)["ranked"]
        assert row["pipeline"] and row["scores"]
        _, table, _ = harness(*PLUGIN, "leaderboard", "show", argument)
        assert row["run_id"] in table
    code, _, err = harness(*PLUGIN, "leaderboard", "show", "no/such/board")
    assert code == 2 and err.startswith("error: ")


def test_recipes_are_listed_and_a_copy_plans(env, harness, monkeypatch):
    code, out, err = harness("recipes", "--json")
    assert code == 0, err
    listed = {r["name"]: r["description"] for r in json.loads(out)}
    assert "smollm2-cpu/sft" in listed and listed["smollm2-cpu/sft"].startswith("SmolLM2")
    _, table, _ = harness("recipes")
    assert listed["smollm2-cpu/sft"] in table
    monkeypatch.chdir(env)
    code, out, err = harness("recipes", "copy", "smollm2-cpu/sft")
    assert code == 0, err
    copy = env / "sft.yaml"
    assert copy.is_file()
    code, out, err = harness("plan", str(copy), "--json")
    assert code == 0, err
    by_name = json.loads(harness("plan", "smollm2-cpu/sft", "--json")[1])
    assert [s["key"] for s in json.loads(out)["steps"]] == [s["key"] for s in by_name["steps"]]
    code, _, err = harness("recipes", "copy", "smollm2-cpu/sft")
    assert code == 2 and "already exists" in err


def test_a_hub_id_offline_names_hf_hub_offline_as_the_cause(env, harness):
    # conftest sets HF_HUB_OFFLINE=1, as a person working offline would.
    code, _, err = harness(
        *PLUGIN, "plan", "--model", "some-org/absent-model", "--tasks", "weights"
    )
    assert code == 2
    assert "looks like a Hub id, but HF_HUB_OFFLINE=1 is set" in err


def test_limit_takes_a_count_or_a_fraction(env, harness, tiny_model_dir):
    def limits(*flags: str) -> list[object]:
        code, out, err = harness(
            *PLUGIN, "plan", "--model", tiny_model_dir, "--tasks", "weights", "--json", *flags
        )
        assert code == 0, err
        return [s["limit"] for s in json.loads(out)["steps"]]

    assert limits("--limit", "0.25") == [0.25]
    assert limits("--limit", "20") == [20]
    assert limits("-o", "evaluate.limit=0.5") == [0.5]
    code, _, err = harness(*PLUGIN, "plan", "--model", tiny_model_dir, "--limit", "1.5")
    assert code == 2 and "fraction below 1" in err
    flags = ("plan", "--model", tiny_model_dir, "--tasks", "weights", "-o", "evaluate.limit=2.5")
    code, _, err = harness(*PLUGIN, *flags)
    assert code == 2 and "a whole number" in err and "evaluate.limit=2.5" in err


def test_listings_show_whole_descriptions_and_keys_when_piped():
    done = subprocess.run(
        [sys.executable, "-m", "srlm_harness", "rewards", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    accuracy = next(r for r in json.loads(done.stdout) if r["name"] == "accuracy")
    assert accuracy["description"].endswith(".")  # a sentence, not its first line
    table = run_piped("rewards").stdout
    line = next(line for line in table.splitlines() if "accuracy" in line)
    assert accuracy["description"].replace("``", "`") in line
    options = run_piped("stages", "sft").stdout
    assert "gradient_accumulation" in options and "…" not in options
