"""A plugin with a misspelled hook name: caught at start-up, not silently ignored."""


def srlm_register_stage(register):  # type: ignore[no-untyped-def]
    pass
