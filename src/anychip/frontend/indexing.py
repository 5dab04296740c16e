"""Indexing and data-dependent ops (filled in by the indexing work)."""

from __future__ import annotations


class IndexingMixin:
    __slots__ = ()
