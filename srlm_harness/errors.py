"""Errors the harness reports to the person: imported by every layer, imports nothing."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix. The CLI prints it as one line and exits with code 2.

    ``where`` names the place (``file:line``, ``stage sft``, a path), ``hint`` what to do.
    """

    def __init__(self, message: str, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text} ({self.hint})" if self.hint else text
