"""The words a job's status is made of: its state and, when it failed, the kind of failure.

Both are `StrEnum`s: a member *is* its string ("failed" == JobState.FAILED), so the values
in Redis (job meta, written as JSON), in `api.status()` and in the UI stay exactly the
strings they were, and code that compares with plain strings keeps working.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is, as `api.status()` reports it (rq's own statuses folded into these)."""

    QUEUED = "queued"  # waiting for a worker (also rq's deferred/scheduled)
    RUNNING = "running"
    FINISHED = "finished"  # pushed
    FAILED = "failed"  # ended with an error (see ErrorKind); nothing pushed unless it failed mid-push
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # no such job (never existed, or expired)

    @property
    def active(self) -> bool:
        """Still waiting or running: it may change, and it holds a token."""
        return self in (JobState.QUEUED, JobState.RUNNING)

    @property
    def ended(self) -> bool:
        return self in (JobState.FINISHED, JobState.FAILED, JobState.CANCELLED)


class ErrorKind(StrEnum):
    """Why a job failed (meta["error_kind"]); the message always says what to do."""

    USER_INPUT = "user_input"  # the request cannot be served as given
    VALIDATION = "validation"  # converted, but the package does not compute what PyTorch does
    HUB_UNAVAILABLE = "hub_unavailable"  # transient: the Hub answered 5xx/429, timed out or was unreachable
    INTERNAL = "internal"  # our failure
    CANCELLED = "cancelled"

    @property
    def user_error(self) -> bool:
        """The user has to change the request (meta["user_error"])."""
        return self is ErrorKind.USER_INPUT
