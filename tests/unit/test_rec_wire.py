"""rec.wire: model updates survive the round trip as bytes; bad bytes raise typed errors."""

from __future__ import annotations

import numpy as np
import pytest

import anychip as ac
from anychip.rec import wire


def _update() -> wire.Update:
    rng = np.random.default_rng(0)
    rows = wire.TableRows(
        np.array([3, -(2**63), 2**63 - 1], np.int64),
        rng.standard_normal((3, 4)).astype(np.float32),
        np.array([7], np.int64),
    )
    dense = {"over.0.weight": rng.standard_normal((2, 5)).astype(np.float32)}
    return wire.Update(
        5, 3, "delta", dense, {"embedding_bags.user_id": rows}, {"events_upto": "17-0"}
    )


def test_round_trip_keeps_every_value_and_version() -> None:
    u = _update()
    back = wire.decode(wire.encode(u))
    assert (back.version, back.base_version, back.kind) == (5, 3, "delta")
    assert back.info == {"events_upto": "17-0"}
    np.testing.assert_array_equal(back.dense["over.0.weight"], u.dense["over.0.weight"])
    t, t0 = back.tables["embedding_bags.user_id"], u.tables["embedding_bags.user_id"]
    np.testing.assert_array_equal(t.ids, t0.ids)
    np.testing.assert_array_equal(t.values, t0.values)
    np.testing.assert_array_equal(t.evicted, t0.evicted)


@pytest.mark.parametrize("data", [b"", b"garbage!garbage!", b"\xff" * 64])
def test_garbage_raises_argument_error(data: bytes) -> None:
    with pytest.raises(ac.ArgumentError, match=r"rec\.wire\.decode"):
        wire.decode(data)


def test_truncated_update_raises() -> None:
    data = wire.encode(_update())
    with pytest.raises(ac.ArgumentError):
        wire.decode(data[: len(data) - 10])


def test_versions_must_grow_and_shapes_match() -> None:
    with pytest.raises(ac.ArgumentError, match="above base_version"):
        wire.encode(wire.Update(3, 3))
    bad = wire.TableRows(np.zeros(2, np.int64), np.zeros((3, 4), np.float32))
    with pytest.raises(ac.ArgumentError, match="expected"):
        wire.encode(wire.Update(1, 0, tables={"t": bad}))
    with pytest.raises(ac.ArgumentError, match="kind"):
        wire.encode(wire.Update(1, 0, kind="partial"))
