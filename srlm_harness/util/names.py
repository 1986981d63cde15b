"""The one check for user-given names that become file or folder names: run ids, board
names, entry ids, task names in leaderboard entries and exports.

A safe name is a single path component: letters, digits, ``.``, ``_`` and ``-``, starting
with a letter or digit, at most 200 characters, without ``..``. So it can never reach
outside the folder it is joined to, never hides as a dot-file, and is the same on every OS.
"""

from __future__ import annotations

import re
from typing import Any

from srlm_harness.errors import UserError

#: No look-ahead (pydantic's regex engine has none): a '.' is followed by a non-'.' or the end.
SAFE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.[A-Za-z0-9_-])*\.?$")
MAX_LENGTH = 200
RULE = "use letters, digits, '.', '_' and '-' (one path component: no '/', no '..')"


def is_safe_name(value: Any) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= MAX_LENGTH
        and SAFE_NAME.fullmatch(value) is not None
    )


def check_name(value: Any, what: str, where: str | None = None) -> str:
    """``value`` if it is a safe name, else a UserError naming ``what`` and ``where``."""
    if not is_safe_name(value):
        raise UserError(f"invalid {what} {value!r}", where, RULE)
    return str(value)
