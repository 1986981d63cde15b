"""Studies: a grid of pipelines and seeds, its statistics and its report."""
