"""`F.pad`'s non-constant modes: reflect, replicate and circular, built from slices, flips
and concatenation along each padded axis (movement ops only, so gradients come free)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from anychip.errors import ModeNotImplemented, ShapeError, describe

if TYPE_CHECKING:
    from anychip.frontend.tensor import Tensor

MODES = ("constant", "reflect", "replicate", "circular")


def pad_mode(x: Tensor, pad: Sequence[int], mode: str) -> Tensor:
    """Pad `x` by (left, right) pairs from the last dimension backwards in `mode`.

    >>> import anychip as ac
    >>> pad_mode(ac.tensor([1.0, 2.0, 3.0]), (2, 1), "reflect").tolist()
    [3.0, 2.0, 1.0, 2.0, 3.0, 2.0]
    """
    from anychip.frontend.creation import cat

    if mode not in MODES:
        raise ModeNotImplemented(f"pad: mode must be one of {MODES}, got {mode!r} ({describe(x)})")
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ShapeError(
            f"pad: padding length {len(pad)} must be even and at most twice the number "
            f"of dimensions of a tensor of {describe(x)}"
        )
    for i in range(len(pad) // 2):
        d = x.ndim - 1 - i
        lo, hi, n = int(pad[2 * i]), int(pad[2 * i + 1]), x.shape[d]
        if min(lo, hi) < 0:
            raise ShapeError(f"pad: mode {mode!r} needs non-negative padding, got {tuple(pad)}")
        limit = n - 1 if mode == "reflect" else n
        if max(lo, hi) > limit or n == 0:
            raise ShapeError(
                f"pad: {mode} padding ({lo}, {hi}) must be at most {limit} for dimension "
                f"{d} of a tensor of {describe(x)}"
            )
        if not lo and not hi:
            continue
        if mode == "reflect":
            left = x.narrow(d, 1, lo).flip(d)
            right = x.narrow(d, n - 1 - hi, hi).flip(d)
        elif mode == "replicate":
            shp = list(x.shape)
            left = x.narrow(d, 0, 1).expand([lo if j == d else s for j, s in enumerate(shp)])
            right = x.narrow(d, n - 1, 1).expand([hi if j == d else s for j, s in enumerate(shp)])
        else:
            left, right = x.narrow(d, n - lo, lo), x.narrow(d, 0, hi)
        x = cat([left, x, right], d)
    return x
