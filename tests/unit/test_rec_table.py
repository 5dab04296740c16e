"""rec.DynamicEmbedding: collisionless rows, admission, eviction with optimizer state,
growth, gradients (against torch on the mapped rows), bags and bad input."""

import numpy as np
import pytest
import torch

import anychip as ac
from anychip.errors import ArgumentError, DTypeError
from anychip.rec import DynamicEmbedding

EXTREMES = [0, 1, -1, 2**62, -(2**63), 2**63 - 1, 1 << 32, 2 << 32, -(2**62)]


def const_init(value: float):  # type: ignore[no-untyped-def]
    return lambda t: ac.nn.init.constant_(t, value)


def test_every_id_gets_its_own_row() -> None:
    table = DynamicEmbedding(3)
    ids = np.array(EXTREMES, np.int64)
    first = table(ac.tensor(ids)).numpy()
    rows = table.rows_of(ids)
    assert len(table) == len(EXTREMES) == len(set(rows.tolist()))
    # distinct rows hold distinct random vectors; the same id reads the same row again
    assert len({tuple(r) for r in first.round(7)}) == len(EXTREMES)
    again = table(ids[::-1].reshape(3, 3).copy()).numpy()
    np.testing.assert_array_equal(again.reshape(-1, 3), first[::-1])
    assert len(table) == len(EXTREMES)


def test_ids_are_admitted_at_the_kth_sighting() -> None:
    table = DynamicEmbedding(2, admit_after=3, init=const_init(1.0))
    out = table(np.array([10, 10, 20]))  # 10 seen twice, 20 once
    assert np.abs(out.numpy()).sum() == 0 and len(table) == 0
    table.eval()
    table(np.array([10, 10, 10]))  # eval mode does not count
    table.train()
    out = table(np.array([20, 10, 30]))  # 10 reaches 3: admitted, read at once
    np.testing.assert_array_equal(out.numpy(), [[0, 0], [1, 1], [0, 0]])
    assert len(table) == 1
    table(np.array([20]))
    assert len(table) == 2 and table.rows_of([30]).tolist() == [-1]


def test_growth_keeps_rows_and_the_parameter() -> None:
    table = DynamicEmbedding(4, capacity=4)
    w = table.weight
    seen: dict[int, np.ndarray] = {}
    for start in range(0, 60, 7):
        ids = np.arange(start, start + 7) * 1000003
        out = table(ids).numpy()
        seen.update(zip(ids.tolist(), out, strict=True))
        table.eval()
        keys = np.array(sorted(seen))
        np.testing.assert_array_equal(table(keys).numpy(), np.stack([seen[k] for k in keys]))
        table.train()
    assert table.weight is w and table.capacity >= len(table) == 63
    assert table.capacity < 2 * 63  # geometric, not one row per id or doubling past need


def _torch_reference(table: DynamicEmbedding, ids: np.ndarray, admitted: np.ndarray):  # type: ignore[no-untyped-def]
    """torch embedding of the mapped rows, zero where an id is not admitted."""
    weight = torch.tensor(table.weight.numpy(), requires_grad=True)
    rows = torch.tensor(np.maximum(table.rows_of(ids), 0))
    mask = torch.tensor(admitted[..., None].astype(np.float32))
    return weight, torch.nn.functional.embedding(rows, weight) * mask


def test_gradients_reach_admitted_rows_as_torch_embedding() -> None:
    table = DynamicEmbedding(3, admit_after=2, sparse=False)
    table(np.array([5, 6, 7, 7]))  # 7 admitted now, 5 and 6 pending
    ids = np.array([[5, 7, 8], [7, 5, 9]])  # 5 admitted in this call
    out = table(ac.tensor(ids))
    coef = np.random.default_rng(0).standard_normal((2, 3, 3)).astype(np.float32)
    (out * ac.tensor(coef)).sum().backward()
    admitted = table.rows_of(ids) >= 0
    assert admitted.tolist() == [[True, True, False], [True, True, False]]
    weight, ref = _torch_reference(table, ids, admitted)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy())
    (ref * torch.tensor(coef)).sum().backward()
    np.testing.assert_allclose(table.weight.grad.numpy(), weight.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_bags_pool_admitted_rows_and_zeros_as_torch(mode: str) -> None:
    table = DynamicEmbedding(3, admit_after=2, sparse=False)
    table(np.array([1, 1, 2, 2, 3, 3]))
    ids = np.array([1, 4, 2, 3, 3, 5, 1])  # 4 and 5 not admitted: zero rows
    offsets = np.array([0, 2, 2, 5])  # bags [1 4] [] [2 3 3] [5 1]
    table.eval()  # this call should not count 4 and 5
    out = table.bag(ac.tensor(ids), ac.tensor(offsets), mode=mode)
    admitted = table.rows_of(ids) >= 0
    weight, rows = _torch_reference(table, ids, admitted)
    bags = [rows[a:b] for a, b in zip(offsets, [*offsets[1:], len(ids)], strict=True)]
    pool = {"sum": lambda r: r.sum(0), "mean": lambda r: r.mean(0), "max": lambda r: r.amax(0)}
    ref = torch.stack([pool[mode](b) if len(b) else torch.zeros(3) for b in bags])
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-6)
    coef = np.arange(12, dtype=np.float32).reshape(4, 3)
    (out * ac.tensor(coef)).sum().backward()
    (ref * torch.tensor(coef)).sum().backward()
    np.testing.assert_allclose(table.weight.grad.numpy(), weight.grad.numpy(), rtol=1e-6)


def test_bags_of_admitted_ids_match_embedding_bag_fixed_size() -> None:
    table = DynamicEmbedding(2, sparse=False)
    ids = np.array([[3, -3], [2**40, 3]])
    out = table.bag(ids, mode="mean")
    rows = table.weight.numpy()[table.rows_of(ids)]
    np.testing.assert_allclose(out.numpy(), rows.mean(1), rtol=1e-6)


def _step(table: DynamicEmbedding, opt: ac.optim.Optimizer, ids: list[int]) -> None:
    opt.zero_grad()
    (table(np.array(ids)) * 3.0).sum().backward()  # every row's gradient is 3
    opt.step()


def test_eviction_frees_rows_and_their_adagrad_state() -> None:
    lr = 0.1
    table = DynamicEmbedding(2, ttl=2, init=const_init(0.5), capacity=4, sparse=False)
    opt = ac.optim.Adagrad(table.parameters(), lr=lr)
    _step(table, opt, [100, 200])  # step 1
    for _ in range(3):  # steps 2-4 see only 200
        _step(table, opt, [200])
    old_row = int(table.rows_of([100])[0])
    assert table.evict() == 1  # 100 last seen at step 1 < 4 - 2
    assert len(table) == 1 and table.rows_of([100]).tolist() == [-1]
    np.testing.assert_array_equal(table.weight.numpy()[old_row], [0.5, 0.5])  # re-drawn
    _step(table, opt, [300, 200])  # 300 takes the freed row
    assert int(table.rows_of([300])[0]) == old_row
    # numpy Adagrad from zero state: sum = g^2, p = 0.5 - lr g / (sqrt(sum) + eps)
    g = 3.0
    np.testing.assert_allclose(opt.state[table.weight]["sum"].numpy()[old_row], [g * g] * 2)
    want = 0.5 - lr * g / (np.sqrt(g * g) + 1e-10)
    np.testing.assert_allclose(table.weight.numpy()[old_row], [want] * 2, rtol=1e-6)
    # 200 kept its state: five steps of g
    row200 = int(table.rows_of([200])[0])
    np.testing.assert_allclose(opt.state[table.weight]["sum"].numpy()[row200], [5 * g * g] * 2)


def test_eviction_with_sgd_momentum_and_growth() -> None:
    table = DynamicEmbedding(2, ttl=1, init=const_init(0.0), capacity=2, sparse=False)
    opt = ac.optim.SGD(table.parameters(), lr=0.1, momentum=0.9)
    _step(table, opt, [1, 2])
    _step(table, opt, [2])
    _step(table, opt, [2])
    row1 = int(table.rows_of([1])[0])
    assert table.evict() == 1
    _step(table, opt, [3, 4, 5, 2])  # 3 reuses row1; 4 and 5 grow the table
    assert int(table.rows_of([3])[0]) == row1 and table.capacity == 4
    buf = opt.state[table.weight]["momentum_buffer"].numpy()
    for i in (3, 4, 5):  # new ids: buffer = g after one step, value = -lr * g
        r = int(table.rows_of([i])[0])
        np.testing.assert_allclose(buf[r], [3.0, 3.0])
        np.testing.assert_allclose(table.weight.numpy()[r], [-0.3, -0.3], rtol=1e-6)


def test_pending_ids_expire_too() -> None:
    table = DynamicEmbedding(2, admit_after=2, ttl=1)
    table(np.array([1]))
    table(np.array([9]))
    table(np.array([9]))  # step 3
    assert table.evict() == 0 and len(table) == 1
    table(np.array([1]))  # its first sighting expired: seen once again, not admitted
    assert table.rows_of([1]).tolist() == [-1]


def test_timestamps_as_the_clock() -> None:
    table = DynamicEmbedding(2, ttl=3600)
    table(np.array([1, 2]), now=1_700_000_000)
    table(np.array([2]), now=1_700_003_000)
    assert table.evict(now=1_700_004_000) == 1
    assert table.rows_of([1, 2]).tolist()[0] == -1


def test_memory_counts_rows_and_index() -> None:
    table = DynamicEmbedding(64, capacity=100)
    table(np.arange(100))
    rows = 100 * 64 * 4
    assert len(table) == 100
    assert rows < table.memory_bytes() < 2 * rows
    assert table.bytes_per_row == table.memory_bytes() / 100


def test_init_may_fill_in_place_or_return_rows() -> None:
    ids = np.array([3, 1])
    filled = DynamicEmbedding(2, init=lambda t: ac.nn.init.constant_(t, 2.0))(ids)
    made = DynamicEmbedding(2, init=lambda t: np.full(t.shape, 2.0))(ids)
    np.testing.assert_array_equal(filled.numpy(), np.full((2, 2), 2.0))
    np.testing.assert_array_equal(made.numpy(), np.full((2, 2), 2.0))
    with pytest.raises(ac.errors.ShapeError, match="init gave rows of shape"):
        DynamicEmbedding(2, init=lambda t: np.zeros(3))


def test_bad_input_raises_typed_errors() -> None:
    table = DynamicEmbedding(2)
    with pytest.raises(DTypeError, match=r"ids must be integers.*float32"):
        table(ac.tensor([1.0, 2.0]))
    with pytest.raises(DTypeError, match="float64"):
        table(np.array([1.5]))
    with pytest.raises(ArgumentError, match="dim must be a positive int"):
        DynamicEmbedding(0)
    with pytest.raises(ArgumentError, match="admit_after"):
        DynamicEmbedding(2, admit_after=0)
    with pytest.raises(ArgumentError, match="ttl=None"):
        table.evict()
    assert len(table) == 0


@pytest.mark.parametrize("make_opt", ["adagrad", "rowwise", "sgd"])
def test_sparse_gradients_train_as_dense_ones(make_opt: str) -> None:
    def run(sparse: bool) -> tuple[np.ndarray, np.ndarray]:
        table = DynamicEmbedding(2, ttl=2, capacity=2, init=const_init(0.5), sparse=sparse)
        opt = {
            "adagrad": lambda p: ac.optim.Adagrad(p, lr=0.1),
            "rowwise": lambda p: ac.rec.RowWiseAdagrad(p, lr=0.1),
            "sgd": lambda p: ac.optim.SGD(p, lr=0.1),
        }[make_opt](table.parameters())
        coef = ac.tensor([1.0, -2.0])
        for i, ids in enumerate(([1, 2], [2, 3, 3], [3, 4, 5, 6], [7], [1, 7, 8])):
            if i != 2:  # step 3 accumulates onto step 2's gradient across a growth
                opt.zero_grad()
            (table(np.array(ids)) * coef).sum().backward()
            if i != 1:
                opt.step()
            table.evict()
        assert sparse == bool(getattr(table.weight.grad, "is_sparse", False))
        keys = np.arange(1, 9)
        table.eval()
        return table(keys).numpy(), table.rows_of(keys)

    dense, rows_dense = run(False)
    sparse, rows_sparse = run(True)
    np.testing.assert_array_equal(rows_sparse, rows_dense)
    np.testing.assert_allclose(sparse, dense, rtol=1e-6)


def test_jit_replays_map_every_batch_and_grow_outside_replays() -> None:
    """A jitted lookup replays its kernels with the host mapping run again per batch: the
    same results, counts and rows as plain calls, identical batches included."""

    def make() -> DynamicEmbedding:
        return DynamicEmbedding(2, admit_after=2, capacity=4, init=const_init(1.0))

    plain, jitted = make(), make()
    f = ac.jit(lambda table, ids: table(ids) * 2.0)
    batches = [[1, 2, 3], [1, 2, 3], [1, 2, 3], [4, 5, 4], [6, 7, 8], [6, 7, 8], [1, 9, 9]]
    for b in batches:
        ids = ac.tensor(np.array(b))
        np.testing.assert_array_equal(f(jitted, ids).numpy(), (plain(ids) * 2.0).numpy())
        assert len(jitted) == len(plain) and jitted.version == plain.version
    np.testing.assert_array_equal(jitted.rows_of(np.arange(10)), plain.rows_of(np.arange(10)))
    assert jitted.capacity == plain.capacity > 4  # it grew, outside a replay
    assert 1 <= len(f.captures) < len(batches)  # and replayed in between


def test_jitted_training_step_matches_plain_steps() -> None:
    def make() -> tuple[DynamicEmbedding, ac.optim.Adagrad]:
        table = DynamicEmbedding(2, capacity=8, init=const_init(1.0))  # sparse gradients
        return table, ac.optim.Adagrad(table.parameters(), lr=0.1)

    def step(table: DynamicEmbedding, opt: ac.optim.Adagrad, ids: ac.Tensor) -> ac.Tensor:
        opt.zero_grad()
        loss = (table(ids) * ac.tensor([1.0, -2.0])).sum()
        loss.backward()
        opt.step()
        return loss

    (plain, plain_opt), (jitted, jitted_opt) = make(), make()
    f = ac.jit(step)
    for b in ([1, 2, 3], [2, 3, 4], [1, 1, 5], [6, 7, 8], [9, 10, 11], [1, 2, 3]):
        ids = ac.tensor(np.array(b))
        got, want = f(jitted, jitted_opt, ids).item(), step(plain, plain_opt, ids).item()
        assert got == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(jitted.weight.numpy(), plain.weight.numpy(), rtol=1e-6)
    assert len(f.captures) == 2  # before and after the growth at the 4th batch
