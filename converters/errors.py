"""The failures the engine reports, each with the exit code the CLI gives it and whether
trying again unchanged can help (in the manner of huggingface_hub's errors.py: one class
per kind of failure, carrying what a caller needs to act on it).

- `UserInputError` (exit 2): the request cannot be served as given; the message says what
  was wrong and what to do instead. Subclasses carry the detail a caller may want:
  - `UnsupportedArchitecture`: the model's `model_type` belongs to no family we convert;
    `ArchitectureNotConvertible`: one outside the tested list that its family could not convert.
- `HubUnavailable` (exit 1, transient): the Hub answered 5xx/429, timed out, or could not
  be reached. Not the user's fault and not a reason to change the request: the same request
  may succeed later, so the worker retries it once and the message says to try again.
- `ConversionError` (exit 1): the engine failed on input it accepted (our failure).

Every class derives from `ConverterError`, so `except ConverterError` catches the failures
we name, and `error.exit_code` / `error.transient` say how to report them.
"""

from __future__ import annotations


class ConverterError(Exception):
    """Base of the failures the engine names (any other exception is a bug: exit 1)."""

    exit_code: int = 1
    transient: bool = False  # True: the same request may succeed if tried again later


class UserInputError(ConverterError):
    """The user's input is wrong or unsupported; the message says what to do instead."""

    exit_code = 2


class UnsupportedArchitecture(UserInputError):
    """No config class serves this `model_type` (config.json's architecture family)."""

    def __init__(self, model_type: str, message: str | None = None):
        self.model_type = model_type
        super().__init__(message or f"The architecture '{model_type}' is not supported yet.")


class ArchitectureNotConvertible(UnsupportedArchitecture):
    """An architecture outside the tested list whose family's wrappers could not convert it
    (converters/diagnose.py names the op or layer): a limit of this service for that model,
    not a fault in an architecture we promise, so the request is the one to change."""


class HubUnavailable(ConverterError):
    """The Hub could not serve a request that was fine: it answered a server error (5xx)
    or 429, timed out, or could not be reached at all. Transient: try again later.

    `status` is the HTTP status when the Hub answered (None for a timeout or no connection);
    `endpoint` the Hub it was (HF_ENDPOINT or https://huggingface.co).
    """

    transient = True

    def __init__(self, message: str, *, endpoint: str | None = None, status: int | None = None):
        self.endpoint = endpoint
        self.status = status
        super().__init__(message)


class ConversionError(ConverterError):
    """The engine failed on input it accepted."""


class UnsupportedOpError(Exception):
    """A backend's runner (validation's) cannot run some op types of a saved package: the
    package may be fine, but validation cannot vouch for it."""

    def __init__(self, op_types, detail: str = "", runner: str = "reference executor"):
        self.op_types = sorted(set(op_types))
        message = f"the {runner} cannot run op type(s): " + ", ".join(self.op_types)
        super().__init__(message + (f" ({detail})" if detail else ""))

