"""Errors a user can act on: each names the thing that is wrong and what to do about it."""

from __future__ import annotations


class CsclError(Exception):
    """Base class. `str(err)` is the whole message shown to the user."""

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(f"{message}" + (f" — {hint}" if hint else ""))


class InputError(CsclError):
    """Bad user input: a malformed manifest, a missing column, an invalid value."""


class SlideError(CsclError):
    """A slide cannot be used: not a slide, corrupt, no tissue, no mpp."""


class StorageError(CsclError):
    """An object store or path problem: unreachable endpoint, missing bucket or key."""
