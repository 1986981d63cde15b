"""Running a pipeline: the spec, the plan with its cache keys, the runner and its launchers,
the hardware and the session."""
