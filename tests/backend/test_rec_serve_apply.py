"""Model updates applied to a served model without a server: DynamicEmbedding.apply_delta
and rec.serve.apply against numpy bookkeeping of what each id should hold."""

from __future__ import annotations

import numpy as np
import pytest

import anychip as ac
from anychip.errors import ArgumentError, ShapeError
from anychip.rec import DynamicEmbedding, EmbeddingBagConfig, TableDelta, models, wire
from anychip.rec.serve import apply
from anychip.rec.train import DynamicBag

USERS, ITEMS = "ebc.embedding_bags.users.table", "ebc.embedding_bags.items"


def rows_of(table: DynamicEmbedding, ids: list[int]) -> np.ndarray:
    table.eval()
    with ac.no_grad():
        return table(ac.tensor(np.array(ids, np.int64), device="cpu")).numpy()


def test_apply_delta_overwrites_inserts_and_evicts() -> None:
    table = DynamicEmbedding(4, capacity=4, device="cpu")
    table.train()
    table(np.array([10, 20, 30]))  # admitted, rows from init
    before = rows_of(table, [30])
    rng = np.random.default_rng(0)
    new = rng.standard_normal((5, 4)).astype(np.float32)
    ids = [20, 40, 50, 60, 70]
    table.apply_delta(TableDelta(np.array(ids), new, np.array([10, 99]), 0))  # grows past 4
    assert len(table) == 6 and table.capacity >= 6
    got = rows_of(table, [10, 20, 30, 40, 50, 60, 70])
    np.testing.assert_array_equal(got[0], np.zeros(4))  # evicted: reads zeros
    np.testing.assert_array_equal(got[1], new[0])
    np.testing.assert_array_equal(got[2], before[0])  # untouched
    np.testing.assert_array_equal(got[3:], new[1:])
    assert set(table.delta(0).ids.tolist()) >= set(ids)  # a server's table reports them too
    with pytest.raises(ShapeError, match="distinct"):
        table.apply_delta(
            TableDelta(np.array([1, 1]), np.zeros((2, 4), np.float32), np.zeros(0), 0)
        )
    with pytest.raises(ShapeError, match="rows"):
        table.apply_delta(TableDelta(np.array([1]), np.zeros((1, 3), np.float32), np.zeros(0), 0))


def _model() -> tuple[ac.nn.Module, DynamicBag]:
    bag = DynamicBag(4, device="cpu")
    tables = [
        EmbeddingBagConfig("users", 4, 100, ["user"]),
        EmbeddingBagConfig("items", 4, 50, ["item"]),
    ]
    m = models.build("mf", tables, 0, device="cpu", sparse=False, modules={"users": bag})
    return m, bag


def test_prepare_changes_nothing_until_swap_and_full_updates_replace_the_id_set() -> None:
    model, bag = _model()
    bag.train()
    bag.table(np.array([1, 2, 3]))
    items = model.ebc.embedding_bags["items"].weight
    old_items = items.numpy().copy()
    row = np.full((1, 4), 7.0, np.float32)
    upd = wire.Update(1, 0, "delta", dense={"bias": np.array([0.5], np.float32)}, tables={
        ITEMS: wire.TableRows(np.array([3]), row),
        USERS: wire.TableRows(np.array([2, 9]), np.ones((2, 4), np.float32)),
    })  # fmt: skip
    ready = apply.prepare(model, upd)
    np.testing.assert_array_equal(items.numpy(), old_items)  # prepared aside
    assert model.bias.numpy().tolist() == [0.0] and len(bag.table) == 3
    ready.swap()
    want = old_items.copy()
    want[3] = 7.0
    np.testing.assert_array_equal(model.ebc.embedding_bags["items"].weight.numpy(), want)
    assert model.bias.numpy().tolist() == [0.5]
    np.testing.assert_array_equal(rows_of(bag.table, [2, 9]), np.ones((2, 4)))
    full = wire.Update(2, -1, "full", tables={
        USERS: wire.TableRows(np.array([9]), np.zeros((1, 4), np.float32)),
    })  # fmt: skip
    apply.prepare(model, full).swap()
    assert len(bag.table) == 1 and (bag.table.rows_of(np.array([1, 2, 3, 9])) >= 0).tolist() == [
        False, False, False, True,
    ]  # fmt: skip


def rows(ids: list[int], evicted: list[int] | None = None) -> wire.TableRows:
    return wire.TableRows(np.array(ids), np.zeros((len(ids), 4), np.float32),
                          np.array(evicted or [], np.int64))  # fmt: skip


@pytest.mark.parametrize(
    ("update", "words"),
    [
        (wire.Update(1, 0, dense={"nope": np.zeros(1, np.float32)}), "no parameter"),
        (wire.Update(1, 0, dense={"bias": np.zeros(2, np.float32)}), "parameter 'bias'"),
        (wire.Update(1, 0, tables={ITEMS: rows([50])}), "names rows 50..50"),
        (wire.Update(1, 0, tables={ITEMS: rows([1], [2])}), "evict"),
        (wire.Update(1, 0, tables={"ebc.nope": rows([1])}), "no table"),
        (wire.Update(1, 0, tables={USERS: rows([1, 1])}), "distinct"),
    ],
)
def test_updates_that_do_not_fit_are_refused_naming_what(update: wire.Update, words: str) -> None:
    model, _ = _model()
    with pytest.raises(ArgumentError, match=words):
        apply.prepare(model, update)


def test_catch_up_starts_at_the_newest_full_update_past_the_served_version() -> None:
    from anychip.rec.serve.follow import plan

    def entry(i: int, version: int, kind: str) -> tuple[bytes, dict[bytes, bytes]]:
        return f"{i}-0".encode(), {b"version": str(version).encode(), b"kind": kind.encode()}

    log = [entry(1, 2, "full"), entry(2, 3, "delta"), entry(3, 5, "full"), entry(4, 6, "delta"),
           entry(5, 7, "delta")]  # fmt: skip
    assert plan(log, 0) == [b"3-0", b"4-0", b"5-0"]
    assert plan(log, 6) == [b"5-0"]  # past the newest full: the deltas after the version
    assert plan(log, 7) == []
    assert plan(log[:2], 0) == [b"1-0", b"2-0"]
    assert plan([], 3) == []
