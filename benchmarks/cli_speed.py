"""How fast the CLI answers: `srlm-harness --help` (target < 0.3 s), `plugins` (< 1 s),
`recipes` (< 1 s) and `plan` of a shipped recipe (< 1 s; hardware detection, model
identification and cache look-ups included).

Run by hand:  python benchmarks/cli_speed.py [--repeat 10]
Reports the median and best wall time of fresh processes, and checks that no command
imported torch, transformers, trl or lm_eval. `plan` runs against an empty temporary store.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HEAVY = ("torch", "transformers", "trl", "lm_eval", "peft", "datasets")


def wall(cmd: list[str], repeat: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of each run. On a shared, loaded machine the CPU
    time is the steadier number: wall time there includes waiting for a core."""
    times, cpu = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return times, cpu


def heavy_imports(args: list[str]) -> list[str]:
    probe = (
        "import sys\nfrom srlm_harness.cli.app import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("HEAVY:")][-1]
    return [m for m in line.removeprefix("HEAVY:").split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--recipe", default="smollm2-cpu/sft", help="recipe that `plan` plans")
    args = parser.parse_args()
    exe = shutil.which("srlm-harness") or sys.exit("srlm-harness is not on PATH")
    os.environ["SRLM_HARNESS_STORE"] = tempfile.mkdtemp(prefix="cli-speed-store-")
    commands = (
        (["--help"], 0.3),
        (["plugins"], 1.0),
        (["recipes"], 1.0),
        (["plan", args.recipe], 1.0),
    )
    for argv, target in commands:
        times, cpu = wall([exe, *argv], args.repeat)
        median = statistics.median(times)
        verdict = "OK" if median < target else "SLOW"
        print(
            f"srlm-harness {' '.join(argv):24s} median {median:.3f}s  best {min(times):.3f}s  "
            f"cpu {statistics.median(cpu):.3f}s  "
            f"target < {target}s  {verdict}  heavy imports: {heavy_imports(argv) or 'none'}"
        )


if __name__ == "__main__":
    main()
