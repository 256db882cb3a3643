"""One error style for the whole package.

Every error that reaches a user is a single line that names the argument, says what was expected, what was
received and, when there is one, the way out::

    `targets` must be class indices of shape (N,); got shape (N, 3)
"""

from __future__ import annotations


class TrainmedicError(ValueError):
    """A problem with what the user gave trainmedic (bad input, misuse of the API, a broken run directory)."""


class RunDirError(TrainmedicError):
    """The run directory is missing, not a directory, already in use, or not a readable trainmedic run."""


def describe_shape(x: object) -> str:
    """Return a short human description of a tensor/array shape for error messages."""
    shape = getattr(x, "shape", None)
    if shape is None:
        return type(x).__name__
    return "(" + ", ".join(str(int(s)) for s in shape) + ")" if len(shape) != 1 else f"({int(shape[0])},)"
