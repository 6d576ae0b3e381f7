"""Errors a user can act on: each names the thing that is wrong and what to do about it.

Every error carries a `kind` (what went wrong, in words a host can act on) so code that must react
differently — a server choosing an HTTP status, a batch job deciding to retry — reads
`err.kind` instead of searching the message. Each class has a default kind; a raise site that
knows better passes `kind=` (e.g. a StorageError for a missing object is `NOT_FOUND`).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """What went wrong, independent of any protocol (serving maps kinds to HTTP statuses)."""

    MALFORMED = "malformed"  # the request itself is wrong: bad JSON, unknown field, bad scheme
    INPUT = "input"  # well-formed, but the data cannot be used: wrong features, corrupt slide
    NOT_FOUND = "not_found"  # a named file, object or bucket does not exist
    FORBIDDEN = "forbidden"  # not allowed: outside the allowed locations, access denied
    TOO_LARGE = "too_large"  # above a size limit
    UNAVAILABLE = "unavailable"  # a service we depend on failed (object store down, S3 error)
    INTERNAL = "internal"  # not the caller's fault: a bug or an unclassified failure


class CsclError(Exception):
    """Base class. `str(err)` is the whole message shown to the user."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, *, hint: str | None = None, kind: ErrorKind | None = None):
        self.message = message
        self.hint = hint
        if kind is not None:
            self.kind = ErrorKind(kind)
        super().__init__(f"{message}" + (f" — {hint}" if hint else ""))

    def naming(self, old: str, new: str) -> CsclError:
        """The same error (class, kind, hint) with `old` replaced by `new` in its message.

        Why: errors raised on a private temporary copy must name what the client sent.
        """
        err = type(self).__new__(type(self))
        err.__dict__.update(self.__dict__)
        err.message = self.message.replace(old, new)
        Exception.__init__(err, err.message + (f" — {err.hint}" if err.hint else ""))
        return err


class InputError(CsclError):
    """Bad user input: a malformed manifest, a missing column, an invalid value."""

    kind = ErrorKind.INPUT


class TooFewCases(InputError):
    """An analysis needs more cases than the data has (k-fold with a class smaller than the
    folds, survival with too few events). Callers that run many analyses skip it with a note."""


class SlideError(CsclError):
    """A slide cannot be used: not a slide, corrupt, no tissue, no mpp."""

    kind = ErrorKind.INPUT


class StorageError(CsclError):
    """An object store or path problem: unreachable endpoint, missing bucket or key."""

    kind = ErrorKind.UNAVAILABLE
