"""Queries over the archive index, shared by C-FIND (PS3.4 C.4.1) and QIDO-RS (PS3.18 10.6).

- :mod:`~imagebank.query.model` -- query levels and which index column answers which attribute.
- :mod:`~imagebank.query.matching` -- the PS3.4 C.2.2.2 matching rules as SQL conditions (pure).
- :func:`~imagebank.query.engine.find` -- run a query, return one attribute dict per match.
"""

from imagebank.query.engine import InvalidQuery, find
from imagebank.query.model import Level

__all__ = ["InvalidQuery", "Level", "find"]
