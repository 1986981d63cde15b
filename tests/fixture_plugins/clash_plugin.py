"""Registers a stage named like the demo plugin's, to show clashes name both plugins."""

from pydantic import BaseModel

from srlm_harness.api import StageResult, StageType
from srlm_harness.api.hookspecs import hookimpl


class Config(BaseModel):
    pass


@hookimpl
def srlm_register_stages(register):  # type: ignore[no-untyped-def]
    register(StageType("scale", Config, lambda ctx: StageResult(), "a clashing stage"))
