"""The public plugin API: the types plugins register and receive, the hook markers, the
errors they raise. Import from here (``from srlm_harness.api import StageType, hookimpl``);
the submodules are ``types`` (data types) and ``hookspecs`` (the hooks, documented). The
file utilities (atomic writes with fsync, sha256) and ``did_you_mean`` are here too, so a
plugin writes its files with the same guarantees as the core; ``find_verifier`` looks up a
registered verifier, ``write_board_entry`` writes an entry into a leaderboard folder.
"""

from srlm_harness.api.hookspecs import hookimpl, hookspec
from srlm_harness.api.services import check_name, find_verifier, write_board_entry
from srlm_harness.api.types import (
    STORED_IDENTITY,
    DatasetSource,
    EvalProvenance,
    EvalRequest,
    EvalResult,
    Evaluator,
    ModelSource,
    Publisher,
    Reference,
    ResolvedModel,
    Reward,
    RewardFunction,
    RunInfo,
    StageContext,
    StageResult,
    StageType,
    Task,
    TaskProvenance,
    TaskScore,
    UserError,
    Verdict,
    Verifier,
    dataset_spec,
    reward_setting,
)
from srlm_harness.util.environment import cache_dir, data_dir, hub_offline, offline_variable
from srlm_harness.util.fs import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
    read_json,
)
from srlm_harness.util.suggestions import did_you_mean

__all__ = [
    "DatasetSource",
    "EvalProvenance",
    "EvalRequest",
    "EvalResult",
    "Evaluator",
    "ModelSource",
    "Publisher",
    "Reference",
    "ResolvedModel",
    "Reward",
    "RewardFunction",
    "RunInfo",
    "STORED_IDENTITY",
    "StageContext",
    "StageResult",
    "StageType",
    "Task",
    "TaskProvenance",
    "TaskScore",
    "UserError",
    "Verdict",
    "Verifier",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "cache_dir",
    "check_name",
    "data_dir",
    "dataset_spec",
    "did_you_mean",
    "file_sha256",
    "find_verifier",
    "hookimpl",
    "hookspec",
    "hub_offline",
    "offline_variable",
    "read_json",
    "reward_setting",
    "write_board_entry",
]
