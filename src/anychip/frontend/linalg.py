"""Contractions: matmul and einsum (filled in by the linalg work)."""

from __future__ import annotations


class LinalgMixin:
    __slots__ = ()
