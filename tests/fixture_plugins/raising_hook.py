"""A plugin whose registration hook raises."""

from srlm_harness.api.hookspecs import hookimpl


@hookimpl
def srlm_register_stages(register):  # type: ignore[no-untyped-def]
    raise RuntimeError("cannot register: config file missing")
