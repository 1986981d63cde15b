"""The public plugin API: the types plugins register and receive, the hook markers, the
errors they raise. Import from here (``from srlm_harness.api import StageType, hookimpl``);
the submodules are ``types`` (data types) and ``hookspecs`` (the hooks, documented).
"""

from srlm_harness.api.hookspecs import hookimpl, hookspec
from srlm_harness.api.types import (
    STORED_IDENTITY,
    DatasetSource,
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
    TaskScore,
    UserError,
    dataset_spec,
    reward_setting,
)

__all__ = [
    "DatasetSource",
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
    "TaskScore",
    "UserError",
    "dataset_spec",
    "hookimpl",
    "hookspec",
    "reward_setting",
]
