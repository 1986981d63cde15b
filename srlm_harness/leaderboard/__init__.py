"""Leaderboards: the entry schema, boards of entries with their sample logs, validation and
the rendered page."""
