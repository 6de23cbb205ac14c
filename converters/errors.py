"""The two kinds of failure the engine reports.

`UserInputError` means the request cannot be served as given (exit code 2): its message
says what was wrong and what to do. Anything else that goes wrong is our failure
(`ConversionError`, exit code 1).
"""


class UserInputError(Exception):
    """The user's input is wrong or unsupported; the message says what to do instead."""


class ConversionError(Exception):
    """The engine failed on input it accepted."""
