"""anychip.utils.data against torch.utils.data: batches, drop_last, shuffling with a seeded
generator, and default_collate of tuples, dicts, numbers and strings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import anychip as ac
from anychip.utils.data import (
    BatchSampler,
    ConcatDataset,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    TensorDataset,
    default_collate,
    random_split,
)


def _plain(x: Any) -> Any:
    """Batches of either library as plain Python values and dtype names, to compare."""
    if isinstance(x, (ac.Tensor, torch.Tensor)):
        return (str(x.dtype).split(".")[-1], x.tolist())
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x).__name__, [_plain(v) for v in x]
    return x


@pytest.mark.parametrize(
    ("batch_size", "drop_last"), [(1, False), (4, False), (4, True), (10, True), (16, False)]
)
def test_tensor_dataset_batches(batch_size: int, drop_last: bool) -> None:
    x, y = np.arange(20.0, dtype=np.float32).reshape(10, 2), np.arange(10)
    ours = DataLoader(
        TensorDataset(ac.tensor(x), ac.tensor(y)), batch_size=batch_size, drop_last=drop_last
    )
    theirs = tud.DataLoader(
        tud.TensorDataset(torch.tensor(x), torch.tensor(y)),
        batch_size=batch_size,
        drop_last=drop_last,
    )
    assert len(ours) == len(theirs)
    assert [_plain(b) for b in ours] == [_plain(b) for b in theirs]


class Samples(Dataset[Any]):
    def __init__(self, lib: Any) -> None:
        self.lib = lib

    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int) -> Any:
        m = self.lib
        return {
            "x": m.ones(2) * i,
            "label": i,
            "w": i * 0.5,
            "flag": i % 2 == 0,
            "name": f"s{i}",
            "pair": (m.tensor([i, i]), i),
        }


class TorchSamples(Samples, tud.Dataset[Any]):
    pass


def test_collate_dicts_tuples_numbers_strings() -> None:
    ours = [_plain(b) for b in DataLoader(Samples(ac), batch_size=2)]
    theirs = [_plain(b) for b in tud.DataLoader(TorchSamples(torch), batch_size=2)]
    assert ours == theirs
    assert _plain(default_collate([(1, "a"), (2, "b")])) == _plain(
        tud.default_collate([(1, "a"), (2, "b")])
    )


def test_shuffle_is_a_seeded_permutation() -> None:
    ds = TensorDataset(ac.arange(10))

    def epoch(seed: int) -> list[int]:
        g = ac.Generator().manual_seed(seed)
        return [
            v
            for (b,) in DataLoader(ds, batch_size=3, shuffle=True, generator=g)
            for v in b.tolist()
        ]

    assert sorted(epoch(0)) == list(range(10)) and epoch(0) == epoch(0) and epoch(0) != epoch(1)
    ac.manual_seed(5)
    a = [b.tolist() for (b,) in DataLoader(ds, batch_size=10, shuffle=True)]
    ac.manual_seed(5)
    assert a == [b.tolist() for (b,) in DataLoader(ds, batch_size=10, shuffle=True)]
    loader = DataLoader(ds, batch_size=10, shuffle=True)
    assert [b.tolist() for (b,) in loader] != [b.tolist() for (b,) in loader]  # new order per epoch


def test_random_split_and_errors() -> None:
    ds = TensorDataset(ac.arange(10))
    parts = random_split(ds, [0.7, 0.3], generator=ac.Generator().manual_seed(0))
    assert [len(p) for p in parts] == [len(p) for p in tud.random_split(range(10), [0.7, 0.3])]
    got = sorted(int(p[i][0].item()) for p in parts for i in range(len(p)))
    assert got == list(range(10))
    with pytest.raises(ValueError):
        random_split(ds, [3, 3])
    with pytest.raises(RuntimeError):
        TensorDataset(ac.ones(3), ac.ones(4))
    with pytest.raises(ValueError):
        DataLoader(ds, batch_size=0)


def test_trains_a_model_from_a_loader() -> None:
    ac.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]
    model = ac.nn.Linear(3, 1)
    opt = ac.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(ac.tensor(x), ac.tensor(y)), batch_size=16, shuffle=True)
    for _ in range(30):
        for xb, yb in loader:
            opt.zero_grad()
            ac.nn.functional.mse_loss(model(xb), yb).backward()
            opt.step()
    np.testing.assert_allclose(model.weight.numpy(), [[1.0, -2.0, 0.5]], atol=1e-3)


def test_samplers_concat_and_iterable_datasets() -> None:
    ds = TensorDataset(ac.arange(7))
    tds = tud.TensorDataset(torch.arange(7))
    for ours, theirs in (
        (
            BatchSampler(SequentialSampler(ds), 3, False),
            tud.BatchSampler(tud.SequentialSampler(tds), 3, False),
        ),
        (BatchSampler(range(7), 3, True), tud.BatchSampler(range(7), 3, True)),
    ):
        assert list(ours) == list(theirs) and len(ours) == len(theirs)
    g = ac.Generator().manual_seed(1)
    assert sorted(RandomSampler(ds, generator=g)) == list(range(7))
    assert len(list(RandomSampler(ds, replacement=True, num_samples=20, generator=g))) == 20
    assert sorted(SubsetRandomSampler([5, 1, 3], generator=g)) == [1, 3, 5]
    loader = DataLoader(ds, batch_sampler=BatchSampler(RandomSampler(ds, generator=g), 4, False))
    assert sorted(v for (b,) in loader for v in b.tolist()) == list(range(7))
    both = ds + TensorDataset(ac.arange(10, 13))
    tboth = tds + tud.TensorDataset(torch.arange(10, 13))
    assert isinstance(both, ConcatDataset) and len(both) == len(tboth) == 10
    assert [both[i][0].item() for i in (0, 6, 7, 9, -1)] == [
        tboth[i][0].item() for i in (0, 6, 7, 9, -1)
    ]
    with pytest.raises(IndexError):
        both[10]

    class Stream(IterableDataset[Any]):
        def __iter__(self) -> Any:
            return iter(range(5))

    class TStream(tud.IterableDataset[Any]):
        def __iter__(self) -> Any:
            return iter(range(5))

    assert _plain(list(DataLoader(Stream(), batch_size=2))) == _plain(
        list(tud.DataLoader(TStream(), batch_size=2))
    )
    assert _plain(list(DataLoader(Stream(), batch_size=2, drop_last=True))) == _plain(
        list(tud.DataLoader(TStream(), batch_size=2, drop_last=True))
    )


def test_tensor_dataset_batches_keep_dtypes_devices_and_autograd() -> None:
    dev = ac.devices()[-1]
    x = ac.tensor([[0.5, 1.5], [2.5, 3.5], [4.5, 5.5]], dtype=ac.bfloat16, device=dev)
    y = ac.tensor([7, 8, 9], dtype=ac.int32, device=dev)
    (xb, yb), *_ = DataLoader(TensorDataset(x, y), batch_size=2, sampler=[2, 0, 1])
    assert (xb.dtype, yb.dtype, xb.device) == (ac.bfloat16, ac.int32, dev)
    assert xb.tolist() == [[4.5, 5.5], [0.5, 1.5]] and yb.tolist() == [9, 7]
    ds = TensorDataset(y)
    assert next(iter(DataLoader(ds, batch_size=3)))[0].tolist() == [7, 8, 9]
    y.mul_(2)  # an in-place change shows in later batches, as in torch
    assert next(iter(DataLoader(ds, batch_size=3)))[0].tolist() == [14, 16, 18]
    w = ac.ones(3, 2, requires_grad=True)
    (wb,) = next(iter(DataLoader(TensorDataset(w), batch_size=2, sampler=[1, 1])))
    wb.sum().backward()  # the batch is a gather autograd sees
    assert w.grad is not None and w.grad.tolist() == [[0.0, 0.0], [2.0, 2.0], [0.0, 0.0]]
