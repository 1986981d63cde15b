"""The ``arith`` dataset and the ``arith_tiny`` task's data, as standard records."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

#: Test problems come from a different seed range, so train and test never share a stream.
TEST_SEED_OFFSET = 1_000_000
TASK_FILE = Path(__file__).resolve().parent / "tasks" / "arith_tiny.jsonl"


def problems(n: int, seed: int, split: str) -> list[dict[str, Any]]:
    """``n`` additions ``{"prompt", "answer", "solution"}``, the same for the same seed."""
    rng = random.Random(seed + (TEST_SEED_OFFSET if split == "test" else 0))
    records = []
    for _ in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        records.append({
            "prompt": f"What is {a} + {b}?",
            "answer": str(a + b),
            "solution": f"{a} + {b} = {a + b}.\n#### {a + b}",
        })
    return records


def arith_tiny(**kwargs: Any) -> Any:
    """lm-eval's ``custom_dataset`` hook for ``arith_tiny``: the shipped jsonl as a
    DatasetDict with one ``test`` split (lm-eval passes the task metadata as kwargs)."""
    from datasets import Dataset, DatasetDict

    rows = [json.loads(line) for line in TASK_FILE.read_text().splitlines() if line.strip()]
    return DatasetDict({"test": Dataset.from_list(rows)})
