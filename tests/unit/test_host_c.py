"""The C routine of the embedding bag layout (runtime/host_c.py) against a float-free
reference written here from the layout's definition: ids padded with zeros, each position's
bag, one past the bags for positions after the last bag and for padding ids; and its
refusal of every invalid input, so the numpy path reports it."""

from __future__ import annotations

import numpy as np
import pytest

from anychip.backends.cpu import compiler
from anychip.frontend.embedding import _Layout, size_class
from anychip.runtime import host_c

pytestmark = pytest.mark.skipif(compiler.find_compiler() is None, reason="no C compiler")


def _reference(ids: np.ndarray, off: np.ndarray, last: bool, pad: int | None) -> np.ndarray:
    n, size = ids.size, size_class(ids.size)
    nb = off.size - 1 if last else off.size
    out = np.zeros((2, size), np.int64)
    out[0, :n] = ids
    out[1, :] = nb
    for b in range(nb):
        stop = off[b + 1] if b + 1 < off.size else n
        for p in range(off[b], stop):
            out[1, p] = nb if ids[p] == pad else b
    return out


@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("pad", [None, 3])
def test_layout_matches_its_definition(last: bool, pad: int | None) -> None:
    rng = np.random.default_rng(7)
    for trial in range(40):
        lengths = rng.integers(0, 5, int(rng.integers(0, 9)))
        total = int(lengths.sum())
        n = total + int(rng.integers(0, 4)) * (not last or trial % 2)  # ids past the bags
        ids = rng.integers(0, 8, n).astype(np.int64)
        off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if not last:
            off = off[:-1]
        want = _reference(ids, off, last, pad)
        out = np.full(2 * size_class(n), -7, np.int64)
        assert host_c.bag_layout(ids, off, last, 8, pad, out) == 0
        np.testing.assert_array_equal(out.reshape(2, -1), want)
        # and the layout step (C where built) gives the same
        layout = _Layout(8, n, last, pad, False, "test")
        layout.n_off = off.size
        np.testing.assert_array_equal(layout(ids, off), want)


@pytest.mark.parametrize(
    ("ids", "off", "code"),
    [
        ([1, 2], [1, 2], 1),  # offsets[0] != 0
        ([1, 2, 3], [0, 2, 1], 2),  # decreasing
        ([1, 2], [0, 3], 3),  # past the ids (include_last_offset)
        ([1, -1], [0, 1], 4),  # negative id
        ([1, 8], [0, 1], 4),  # id past the table
    ],
)
def test_invalid_input_is_refused(ids: list[int], off: list[int], code: int) -> None:
    a, o = np.array(ids, np.int64), np.array(off, np.int64)
    out = np.empty(2 * size_class(a.size), np.int64)
    assert host_c.bag_layout(a, o, True, 8, None, out) == code


@pytest.mark.parametrize("last", [False, True])
def test_direct_layout_writes_what_the_step_returns(last: bool) -> None:
    # a replayed layout step on the cpu writes straight into its buffer: the same values
    # as the step's own result; invalid input and another size class are left to it
    from anychip import dtypes
    from anychip.runtime.device import get_backend

    cpu = get_backend("cpu")
    rng = np.random.default_rng(11)
    lengths = rng.integers(0, 4, 9)
    ids = rng.integers(0, 8, int(lengths.sum()) + 2).astype(np.int64)
    off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if not last:
        off = off[:-1]
    size = size_class(ids.size)

    def buffer(a: np.ndarray) -> tuple[object, tuple[int, int, object]]:
        h = cpu.allocate(a.size, dtypes.int64)
        cpu.copyin(h, a)
        return h, (cpu.host_address(h), a.size, dtypes.int64)

    kept = []  # the handles: their memory lives while they do
    (h_ids, at_ids), (h_off, at_off) = buffer(ids), buffer(off)
    out, at_out = buffer(np.full(2 * size, -7, np.int64))
    kept += [h_ids, h_off]
    layout = _Layout(8, ids.size, last, 3, False, "test")
    layout.n_off = off.size
    assert layout.direct([at_ids, at_off], at_out)
    np.testing.assert_array_equal(
        cpu.copyout(out, 2 * size, dtypes.int64), layout(ids, off).reshape(-1)
    )
    h_small, small = buffer(np.zeros(size, np.int64))  # another size class: the guard's
    assert not layout.direct([at_ids, at_off], small)
    h_bad, at_bad = buffer(np.array([9] * ids.size, np.int64))  # ids past the table
    assert not layout.direct([at_bad, at_off], at_out)
    kept += [h_small, h_bad]
