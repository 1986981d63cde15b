"""lm-eval's custom_dataset for pack_add: the folder's jsonl plus a suffix from extra/."""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pack_add(**kwargs):  # type: ignore[no-untyped-def]
    from datasets import Dataset, DatasetDict

    suffix = (HERE / "extra" / "suffix.txt").read_text().strip()
    lines = (HERE / "tasks" / "pack_add.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    rows = [{**row, "question": f"{row['question']} {suffix}"} for row in rows]
    return DatasetDict({"test": Dataset.from_list(rows)})
