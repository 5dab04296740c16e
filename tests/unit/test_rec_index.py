"""rec.index: the vectorised id -> value hash map and the slot pool, against a Python dict."""

import numpy as np
import pytest

from anychip.rec.index import IdIndex, SlotPool


@pytest.mark.parametrize("kind", ["random", "strided", "dense"])
def test_index_matches_a_dict_through_inserts_deletes_and_rehashes(kind: str) -> None:
    rng = np.random.default_rng(1)
    if kind == "random":
        universe = rng.integers(-(2**63), 2**63 - 1, 6000, dtype=np.int64)
    elif kind == "strided":  # ids that differ only in high bits
        universe = np.arange(-3000, 3000, dtype=np.int64) << np.int64(32)
    else:
        universe = np.arange(6000, dtype=np.int64)
    universe = np.unique(np.concatenate([universe, [-(2**63), 2**63 - 1, 0, -1, 2**62]]))
    ix, ref = IdIndex(16), {}
    next_number = 0
    for step in range(30):
        batch = rng.choice(universe, 400)
        got = ix.lookup(batch)
        want = np.array([ref.get(int(k), -1) for k in batch])
        np.testing.assert_array_equal(got, want)
        new = np.unique(batch[got < 0])
        vals = rng.permutation(10**5)[: new.size] + next_number  # unused numbers
        next_number += 10**5
        ix.insert(new, vals)
        ref.update(zip(new.tolist(), vals.tolist(), strict=True))
        if step % 3 == 2:  # delete some present and some absent ids
            gone = rng.choice(universe, 300)
            old = ix.delete(gone)
            np.testing.assert_array_equal(old, [ref.get(int(k), -1) for k in gone])
            for k in gone.tolist():
                ref.pop(k, None)
        assert len(ix) == len(ref)
    keys, vals = ix.items()
    assert dict(zip(keys.tolist(), vals.tolist(), strict=True)) == ref


def test_ids_of_numbers_and_reuse_of_a_freed_number() -> None:
    ix = IdIndex(2)
    ix.insert(np.array([5, -9]), np.array([0, 1]))
    ix.delete(np.array([5]))
    ix.insert(np.array([2**63 - 1]), np.array([0]))  # number 0 goes to another id
    assert ix.lookup(np.array([5, -9, 2**63 - 1])).tolist() == [-1, 1, 0]
    assert ix.ids_of[:2].tolist() == [2**63 - 1, -9]


def test_pool_reuses_freed_numbers_before_new_ones() -> None:
    pool = SlotPool(2, growth=2.0)
    assert pool.take(3).tolist() == [0, 1, 2]
    assert pool.capacity == 4
    pool.give_back(np.array([2, 0]))
    assert sorted(pool.take(3).tolist()) == [0, 2, 3]
    assert pool.capacity == 4
