"""Framework integrations: one callback each for Lightning, Keras 3 and Hugging Face ``Trainer``.

Each lives in its own module and imports its framework only when that module is imported, so
``import trainmedic`` never pulls Lightning, Keras or transformers in::

    from trainmedic.integrations.lightning import TrainmedicCallback   # pip install "trainmedic[lightning]"
    from trainmedic.integrations.keras import TrainmedicCallback       # pip install "trainmedic[keras]"
    from trainmedic.integrations.hf import TrainmedicCallback          # pip install "trainmedic[hf]"

See ``docs/integrations.md`` for what each one records.
"""

from __future__ import annotations

from ..errors import TrainmedicError

__all__ = ["MissingExtraError", "missing_extra"]


class MissingExtraError(TrainmedicError, ImportError):
    """An integration's framework is not installed (an ``ImportError`` too, so ``importorskip`` works)."""


def missing_extra(module: str, extra: str, minimum: str, error: ImportError) -> MissingExtraError:
    """The one-line error for a framework that could not be imported, naming the extra to install."""
    return MissingExtraError(
        f"`trainmedic.integrations.{extra}` needs {module} >= {minimum}, which could not be imported "
        f'({error}); install it with pip install "trainmedic[{extra}]"'
    )
