"""The one exception tree of bgrun; each error knows its command-line exit code."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """Exit codes shared by every `bgrun` command (fixed by SPEC.md)."""

    OK = 0
    JOB_FAILED = 1  # run/wait: the job failed or was cancelled
    USAGE = 2  # usage error or refused input
    NO_SUCH_JOB = 3  # no such job, or an action its state does not allow
    UNUSABLE = 4  # store, log folder, allowlist or a BGRUN_* setting unusable
    WAIT_TIMEOUT = 124  # wait timed out


class Failure(StrEnum):
    """The failures bgrun itself tells, as the first word of a job's error (`Kind: detail`).

    A job's own exception is told by its class name instead (`ValueError: ...`).
    """

    TIMEOUT = "Timeout"  #: ran longer than its timeout; its process tree was ended
    CRASHED = "Crashed"  #: the child died without a verdict (a signal, an exit code)
    RUNNER_LOST = "RunnerLost"  #: the runner supervising it died
    NOT_ALLOWED = "NotAllowed"  #: the allowlist no longer allows it (checked at run time)
    CANCELLED = "Cancelled"  #: a user cancelled it

    def says(self, detail: object) -> str:
        """The error text: this kind, then `detail`."""
        return f"{self.value}: {detail}"


class BgrunError(Exception):
    """Base of every error bgrun raises on purpose; its message is one line for a user."""

    exit_code: ExitCode = ExitCode.USAGE
    #: Type word written to the error log (`error=Type: message`).
    kind = "BgrunError"

    def __str__(self) -> str:
        # One line, always: a message may quote user input.
        return " ".join(super().__str__().split())


class RefusedError(BgrunError):
    """Raised when a request is refused before anything is stored."""

    kind = "Refused"


class NotAllowedError(RefusedError):
    """Raised when a target or method is not in the allowlist, character for character."""

    kind = Failure.NOT_ALLOWED.value


class BadNameError(NotAllowedError):
    """Raised when a target or method is not a well-formed dotted name (so never allowed)."""

    kind = "BadName"


class TargetNotFoundError(RefusedError):
    """Raised when an allow-listed class or module cannot be found."""

    kind = "NotFound"


class MethodNotFoundError(RefusedError):
    """Raised when an allow-listed class or module has no such method or function."""

    kind = "MethodNotFound"


class ImportFailedError(RefusedError):
    """Raised when the target's module exists but importing it fails."""

    kind = "ImportFailed"


class TargetNotUsableError(RefusedError):
    """Raised when an allow-listed class cannot be made without arguments (its __init__)."""

    kind = "NotUsable"


class BadParamsError(RefusedError):
    """Raised when params are not strict JSON data within the size and depth limits."""

    kind = "BadParams"


class BadQueueError(RefusedError):
    """Raised when a queue name does not match SPEC's rule (`[a-z0-9][a-z0-9_-]{0,63}`)."""

    kind = "BadQueue"


class ConfigError(BgrunError):
    """Raised when a BGRUN_* setting, the allowlist or the log folder is unusable."""

    exit_code = ExitCode.UNUSABLE
    kind = "ConfigError"


class AllowlistError(ConfigError):
    """Raised when the allowlist is missing or broken: nothing runs (fail closed)."""

    kind = "AllowlistError"


class StoreError(ConfigError):
    """Raised when the job store cannot be opened, read or written."""

    kind = "StoreError"


class StoreGoneError(StoreError):
    """Raised when the store file was deleted, moved or replaced under this process."""

    kind = "StoreGone"


class NoStoreError(StoreError):
    """Raised when a command that only reads finds no job store where it looks."""

    kind = "NoStore"


class NoSuchJobError(BgrunError):
    """Raised when no job has the given id."""

    exit_code = ExitCode.NO_SUCH_JOB
    kind = "NoSuchJob"


class InvalidStateError(BgrunError):
    """Raised when a job's state does not allow the action (retry a running job...)."""

    exit_code = ExitCode.NO_SUCH_JOB
    kind = "InvalidState"


class WaitTimeoutError(BgrunError):
    """Raised when waiting for a job took longer than the caller allowed."""

    exit_code = ExitCode.WAIT_TIMEOUT
    kind = "WaitTimeout"


class OutputGoneError(BgrunError):
    """Raised when a job that ran has no output file any more (deleted by hand, or pruned)."""

    exit_code = ExitCode.NO_SUCH_JOB
    kind = "OutputGone"
