"""`anychip.utils`: helpers around models, as `torch.utils` (`data`: datasets and loaders)."""

from __future__ import annotations

from anychip.utils import data

__all__ = ["data"]
