"""The old import path of :func:`advise`, kept for ``tlcore.cli``: the facade lives in
:mod:`tlcore.guidelines.advice`."""

from tlcore.guidelines.advice import Advice, advise, situation_from_dataset

__all__ = ["Advice", "advise", "situation_from_dataset"]
