"""rec.DynamicEmbedding's saved state (ac.save, safetensors, nested in a model, with its
optimizer) and its delta versions for serving."""

from pathlib import Path

import numpy as np
import pytest

import anychip as ac
from anychip.nn import StateDictError
from anychip.rec import DynamicEmbedding


def _init(rows: ac.Tensor) -> ac.Tensor:  # the same for every new row of every table
    return ac.nn.init.constant_(rows, 0.25)


def _trained(admit_after: int = 1) -> tuple[DynamicEmbedding, ac.optim.Adagrad]:
    table = DynamicEmbedding(
        3, admit_after=admit_after, ttl=2, capacity=4, sparse=False, init=_init
    )
    opt = ac.optim.Adagrad(table.parameters(), lr=0.1)
    for ids in ([1, 2, 3], [2, 2**62], [2, -7, 9, 9], [2, 10, 11]):
        opt.zero_grad()
        (table(np.array(ids)) ** 2).sum().backward()
        opt.step()
    table.evict()  # frees what was last seen at step 1
    return table, opt


def _step(table: DynamicEmbedding, opt: ac.optim.Optimizer, ids: list[int]) -> np.ndarray:
    opt.zero_grad()
    (table(np.array(ids)) * ac.tensor([1.0, -2.0, 0.5])).sum().backward()
    opt.step()
    table.eval()
    out = table(np.array(ids)).numpy()
    table.train()
    return out


def test_save_and_load_keep_ids_rows_counts_and_optimizer_state(tmp_path: Path) -> None:
    table, opt = _trained(admit_after=2)
    path = tmp_path / "ckpt.safetensors"
    ac.save({"table": table.state_dict(), "opt": opt.state_dict()}, path)
    state = table.state_dict()
    assert state["rows"].shape == (len(table), 3)  # used rows only
    assert state["ids"].shape == (len(table),)

    loaded = DynamicEmbedding(3, admit_after=2, ttl=2, sparse=False, init=_init)
    opt2 = ac.optim.Adagrad(loaded.parameters(), lr=0.1)
    ckpt = ac.load(path)
    loaded.load_state_dict(ckpt["table"])
    opt2.load_state_dict(ckpt["opt"])
    assert len(loaded) == len(table) and loaded.version == table.version
    ids = np.array([2, 9, 10, 11, 2**62, -7, 1, 3])
    np.testing.assert_array_equal(loaded.rows_of(ids), table.rows_of(ids))
    # both go on identically: pending counts (2**62 and -7 were seen once), free rows,
    # optimizer sums
    for batch in ([2**62, 5, 2], [-7, 5, 12, 13, 14]):
        np.testing.assert_allclose(_step(loaded, opt2, batch), _step(table, opt, batch))
    assert loaded.evict() == table.evict()
    np.testing.assert_array_equal(loaded.rows_of(ids), table.rows_of(ids))


def test_safetensors_file_of_a_model_holding_a_table(tmp_path: Path) -> None:
    model = ac.nn.ModuleDict({"emb": DynamicEmbedding(2), "head": ac.nn.Linear(2, 1)})
    model["emb"](np.array([4, 8, 15]))
    path = tmp_path / "model.safetensors"
    ac.save_file(model.state_dict(), path)
    keys = set(ac.load_file(path))
    assert {"emb.ids", "emb.rows", "head.weight"} <= keys and "emb.weight" not in keys
    other = ac.nn.ModuleDict({"emb": DynamicEmbedding(2), "head": ac.nn.Linear(2, 1)})
    other.load_state_dict(ac.load_file(path))
    other.eval(), model.eval()
    ids = np.array([15, 4, 8, 16])
    np.testing.assert_array_equal(other["emb"](ids).numpy(), model["emb"](ids).numpy())


def test_load_rejects_missing_keys_and_wrong_dim() -> None:
    table, _ = _trained()
    state = table.state_dict()
    with pytest.raises(StateDictError, match=r"Missing key.*counts"):
        DynamicEmbedding(3).load_state_dict({k: v for k, v in state.items() if k != "counts"})
    fresh = DynamicEmbedding(3)
    result = fresh.load_state_dict({k: v for k, v in state.items() if k != "counts"}, False)
    assert result.missing_keys == ["counts"] and len(fresh) == 0  # left as it was
    with pytest.raises(ac.errors.ShapeError, match="dim 4"):
        DynamicEmbedding(4).load_state_dict(state)


def test_delta_sends_changed_rows_and_evictions() -> None:
    table = DynamicEmbedding(2, ttl=1, sparse=False)
    opt = ac.optim.SGD(table.parameters(), lr=0.5)
    serving: dict[int, np.ndarray] = {}
    version = 0

    def sync() -> None:
        nonlocal version
        d = table.delta(version)
        for i in d.evicted.tolist():
            serving.pop(i)
        serving.update(zip(d.ids.tolist(), d.rows, strict=True))
        version = d.version

    def truth() -> dict[int, np.ndarray]:
        state = table.state_dict()
        return dict(zip(state["ids"].tolist(), state["rows"].numpy(), strict=True))

    for i, ids in enumerate(([1, 2], [2, 3], [3], [3, 1], [4])):
        opt.zero_grad()
        table(np.array(ids)).sum().backward()
        if i == 1:
            sync()  # between a forward and its step: the step still reaches serving
        if i == 2:
            table.evict()  # an eviction (a new version) and a sync before the step
            sync()
        opt.step()
        if i != 2:
            table.evict()
        sync()
        want = truth()
        assert serving.keys() == want.keys()
        for k, v in want.items():
            np.testing.assert_array_equal(serving[k], v)
    d = table.delta(version)
    assert d.ids.size == 1 and d.evicted.size == 0  # only what the last call looked up


def test_delta_evicted_leaves_out_readmitted_ids() -> None:
    table = DynamicEmbedding(2, ttl=1)
    table(np.array([1]))
    table(np.array([2]))
    table(np.array([2]))
    assert table.evict() == 1
    v = table.delta(0).version
    assert table.delta(0).evicted.tolist() == [1]
    table(np.array([1]))
    d = table.delta(v - 1)
    assert d.evicted.tolist() == [] and 1 in d.ids.tolist()
    table.forget_evictions(table.version)
    table(np.array([1]))
    assert table.evict() == 1
    assert table.delta(0).evicted.tolist() == [2]
