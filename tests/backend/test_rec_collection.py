"""anychip.rec's KeyedJaggedTensor and EmbeddingBagCollection against PyTorch's
nn.EmbeddingBag on the same tables and bags (forward and table gradients)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anychip as ac
from anychip.rec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from helpers import assert_close


def _batch(rng: np.random.Generator, keys: list[str], b: int, rows: int, max_len: int):
    lengths = rng.integers(0, max_len + 1, len(keys) * b)
    values = rng.integers(0, rows, int(lengths.sum()))
    return values, lengths


def test_kjt_accessors_follow_the_key_major_layout(device: str) -> None:
    # two samples; key "a" single-valued, key "g" multi-valued (genres), one bag empty
    kjt = KeyedJaggedTensor(
        ["a", "g"], np.array([4, 9, 1, 2, 3]), np.array([1, 1, 3, 0]), device=device
    )
    assert kjt.keys() == ["a", "g"] and kjt.stride() == 2
    assert kjt.offsets().tolist() == [0, 1, 2, 5, 5]
    assert kjt.length_per_key() == [2, 3] and kjt.offset_per_key() == [0, 2, 5]
    g = kjt["g"]
    assert g.values().tolist() == [1, 2, 3] and g.lengths().tolist() == [3, 0]
    assert g.offsets().tolist() == [0, 3, 3]
    assert kjt.to_dict()["a"].to_dense() == [[4], [9]]
    assert kjt.weights_or_none() is None
    same = KeyedJaggedTensor.from_offsets_sync(["a", "g"], kjt.values(), kjt.offsets())
    assert same.lengths().tolist() == [1, 1, 3, 0]
    assert kjt.to("ref")["g"].to_dense() == [[1, 2, 3], []]


def test_kjt_rejects_inconsistent_layouts() -> None:
    with pytest.raises(ac.ShapeError, match=r"sum to 3 but values has 2"):
        KeyedJaggedTensor(["a"], np.array([1, 2]), np.array([1, 2]))
    with pytest.raises(ac.ShapeError, match=r"lengths of shape \(3,\).*2 keys"):
        KeyedJaggedTensor(["a", "b"], np.array([1, 2, 3]), np.array([1, 1, 1]))
    with pytest.raises(ac.ArgumentError, match="non-negative"):
        KeyedJaggedTensor(["a"], np.array([1]), np.array([2, -1]))
    with pytest.raises(ac.DTypeError, match="integers"):
        KeyedJaggedTensor(["a"], np.array([1.5]), np.array([1]))
    with pytest.raises(ac.ShapeError, match=r"weights has shape \(1,\)"):
        KeyedJaggedTensor(["a"], np.array([1, 2]), np.array([2]), weights=np.ones(1, np.float32))
    with pytest.raises(ac.ArgumentError, match="no key 'z'"):
        KeyedJaggedTensor(["a"], np.array([1]), np.array([1]))["z"]


def _torch_tables(ebc: EmbeddingBagCollection) -> dict[str, torch.nn.EmbeddingBag]:
    out = {}
    for cfg in ebc.embedding_bag_configs():
        w = torch.from_numpy(ebc.embedding_bags[cfg.name].weight.numpy().copy())
        out[cfg.name] = torch.nn.EmbeddingBag.from_pretrained(
            w, freeze=False, mode=cfg.pooling, include_last_offset=True
        )
    return out


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_collection_matches_torch_embedding_bags(device: str, pooling: str) -> None:
    rng = np.random.default_rng(0)
    tables = [
        EmbeddingBagConfig("users", 4, 30, ["user"], pooling=pooling),
        EmbeddingBagConfig("items", 3, 20, ["item", "history"], pooling=pooling),  # shared
    ]
    ac.manual_seed(0)
    ebc = EmbeddingBagCollection(tables, device=device)
    keys, b = ["history", "item", "user"], 5  # the batch's key order differs from tables'
    values, lengths = _batch(rng, keys, b, 20, 4)
    kjt = KeyedJaggedTensor(keys, values, lengths, device=device)
    kt = ebc(kjt)
    assert kt.keys() == ["user", "item", "history"] and kt.length_per_key() == [4, 3, 3]
    (
        kt.values() * ac.tensor(rng.standard_normal((b, 10)).astype(np.float32), device=device)
    ).sum().backward()

    ref = _torch_tables(ebc)
    lens = lengths.reshape(3, b)
    starts = np.concatenate([[0], np.cumsum(lens.sum(1))])
    want = {}
    for i, k in enumerate(keys):
        ids = torch.from_numpy(values[starts[i] : starts[i + 1]])
        off = torch.from_numpy(np.concatenate([[0], np.cumsum(lens[i])]))
        want[k] = ref["users" if k == "user" else "items"](ids, off)
    for k in keys:
        assert_close(kt[k], want[k], 1e-6, 1e-6, f"{pooling} pooled {k}")
    rng = np.random.default_rng(0)  # the same weights for the loss
    _batch(rng, keys, b, 20, 4)
    g = torch.from_numpy(rng.standard_normal((b, 10)).astype(np.float32))
    (torch.cat([want["user"], want["item"], want["history"]], 1) * g).sum().backward()
    for name, t in ref.items():
        got = ebc.embedding_bags[name].weight.grad
        assert_close(
            got.to_dense() if hasattr(got, "to_dense") else got,
            t.weight.grad,
            1e-5,
            1e-5,
            f"grad of table {name}",
        )


def test_weighted_bags_scale_each_id(device: str) -> None:
    ebc = EmbeddingBagCollection([EmbeddingBagConfig("t", 2, 5, ["f"])], device=device)
    w = ebc.embedding_bags["t"].weight.numpy()
    kjt = KeyedJaggedTensor(
        ["f"],
        np.array([1, 3, 4]),
        np.array([2, 1]),
        weights=np.array([0.5, 2.0, -1.0], np.float32),
        device=device,
    )
    want = np.stack([0.5 * w[1] + 2.0 * w[3], -w[4]])
    np.testing.assert_allclose(ebc(kjt)["f"].numpy(), want, rtol=1e-6, atol=1e-7)


class _Counting(ac.nn.Module):
    """A stand-in override table: records what it is called with; each bag pools to its
    number of ids."""

    def pooled(self, ids, offsets, mode="sum", per_sample_weights=None):  # type: ignore[no-untyped-def]
        self.got = (ids.tolist(), offsets.tolist(), mode)
        o = offsets.numpy()
        return ac.tensor(np.diff(o).astype(np.float32)[:, None])


def test_override_module_gets_exact_ids_and_offsets() -> None:
    cfgs = [EmbeddingBagConfig("big", 1, 1, ["f"]), EmbeddingBagConfig("t", 2, 5, ["g"])]
    table = _Counting()
    ebc = EmbeddingBagCollection(cfgs, modules={"big": table})
    kjt = KeyedJaggedTensor(["f", "g"], np.array([10**12, 3, 5, 1]), np.array([2, 1, 0, 1]))
    assert ebc(kjt)["f"].tolist() == [[2.0], [1.0]]
    assert table.got == ([10**12, 3, 5], [0, 2, 3], "sum")
    assert ebc.embedding_bags["big"] is table
    with pytest.raises(ac.ArgumentError, match=r"modules \['nope'\] name no table"):
        EmbeddingBagCollection(cfgs, modules={"nope": _Counting()})
    with pytest.raises(ac.ArgumentError, match="lacks"):
        ebc(KeyedJaggedTensor(["f"], np.array([1]), np.array([1])))


def test_jitted_step_replays_on_batches_with_other_bag_lengths(device: str) -> None:
    tables = [EmbeddingBagConfig("t", 3, 40, ["a", "b"])]
    rng = np.random.default_rng(1)

    def step(ebc, opt, kjt):  # type: ignore[no-untyped-def]
        opt.zero_grad()
        loss = (ebc(kjt).values() ** 2).sum()
        loss.backward()
        opt.step()
        return loss

    # per key 3 or 4 ids: one size class (4), so later batches replay one capture
    lengths = [[1, 2, 2, 1], [2, 2, 2, 2], [2, 1, 2, 2], [1, 2, 1, 2]]
    batches = [(rng.integers(0, 40, sum(n)), np.array(n)) for n in lengths]
    losses = []
    for jit in (False, True):
        ac.manual_seed(0)
        ebc = EmbeddingBagCollection(tables, device=device)
        opt = ac.optim.SGD(ebc.parameters(), lr=0.1)
        fn = ac.jit(step) if jit else step
        got, captures = [], []
        for v, n in batches:
            got.append(fn(ebc, opt, KeyedJaggedTensor(["a", "b"], v, n, device=device)).item())
            captures.append(len(fn.captures) if jit else 0)
        losses.append(got)
        if jit:  # the first call has no gradients yet: a signature of its own
            assert captures[1:] == [captures[1]] * 3
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)


def test_exact_values_are_refused_inside_a_capture() -> None:
    kjt = KeyedJaggedTensor(["a"], np.array([1, 2, 3]), np.array([1, 2]))
    with pytest.raises(ac.JitError, match=r"values\(\).*bags"):
        ac.jit(lambda k: k.values() + 1)(kjt)
    assert (kjt.values() + 1).tolist() == [2, 3, 4]  # eagerly it is fine


def test_join_of_many_parts_matches_torch_cat(device: str) -> None:
    from anychip.rec.collection import join

    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((3, 1 + i % 3)).astype(np.float32) for i in range(20)]
    parts = [ac.tensor(a, device=device, requires_grad=True) for a in arrays]
    tparts = [torch.from_numpy(a).requires_grad_(True) for a in arrays]
    got, want = join(parts, 1), torch.cat(tparts, 1)
    assert_close(got, want, 0, 0, "join")
    g = rng.standard_normal(want.shape).astype(np.float32)
    (got * ac.tensor(g, device=device)).sum().backward()
    (want * torch.from_numpy(g)).sum().backward()
    for p, t in zip(parts, tparts):
        assert_close(p.grad, t.grad, 0, 0, "join grad")


def test_kjt_from_jagged_tensors_keeps_weights(device: str) -> None:
    from anychip.rec import JaggedTensor

    a = JaggedTensor(np.array([1, 2, 3]), lengths=np.array([2, 1]), weights=np.ones(3, np.float32))
    b = JaggedTensor(
        np.array([9]), offsets=np.array([0, 0, 1]), weights=np.full(1, 0.5, np.float32)
    )
    kjt = KeyedJaggedTensor.from_jt_dict({"a": a, "b": b}).to(device)
    assert kjt.device() == device and kjt.lengths().tolist() == [2, 1, 0, 1]
    assert kjt.values().tolist() == [1, 2, 3, 9]
    assert kjt.weights().tolist() == [1.0, 1.0, 1.0, 0.5]
    assert kjt["b"].weights().tolist() == [0.5] and kjt["b"].to_dense() == [[], [9]]
    with pytest.raises(ac.ShapeError, match="offsets must start at 0"):
        JaggedTensor(np.array([1]), offsets=np.array([1, 1]))
