"""copy.deepcopy and pickle of tensors and modules, as torch allows them."""

import copy
import pickle

import numpy as np
import pytest

import anychip as ac


def test_deepcopy_of_a_model_is_independent_and_equal() -> None:
    model = ac.nn.Sequential(ac.nn.Linear(3, 4), ac.nn.ReLU(), ac.nn.Linear(4, 1))
    model(ac.ones(2, 3)).sum().backward()
    twin = copy.deepcopy(model)
    for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
        assert type(q) is ac.nn.Parameter and q.requires_grad and q is not p, name
        np.testing.assert_array_equal(q.numpy(), p.numpy())
        np.testing.assert_array_equal(q.grad.numpy(), p.grad.numpy())
    with ac.no_grad():
        twin[0].weight.add_(1.0)
    assert not np.array_equal(twin[0].weight.numpy(), model[0].weight.numpy())


def test_deepcopy_keeps_shared_tensors_shared_and_refuses_non_leaves() -> None:
    w = ac.nn.Parameter(ac.ones(2))
    a, b = copy.deepcopy([w, w])
    assert a is b
    with pytest.raises(RuntimeError, match="deepcopy"):
        copy.deepcopy(w * 2)


@pytest.mark.parametrize("dtype", [ac.float32, ac.int64, ac.bool_, ac.bfloat16])
def test_pickle_round_trip(dtype: ac.dtypes.DType) -> None:
    t = ac.tensor([[1.5, -2.0], [0.0, 3.0]]).to(dtype)
    back = pickle.loads(pickle.dumps(t))
    assert back.dtype is dtype and back.shape == t.shape
    np.testing.assert_array_equal(back.numpy(), t.numpy())
    p = pickle.loads(pickle.dumps(ac.nn.Parameter(ac.ones(2))))
    assert type(p) is ac.nn.Parameter and p.requires_grad
