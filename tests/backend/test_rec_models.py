"""anychip.rec.models against their PyTorch twins (bench/rec_twins.py): the twin's
weights loaded into the anychip model, the same batch (multi-valued features, an empty
bag), the same logits and the same gradient of every parameter."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import anychip as ac
from anychip.rec import EmbeddingBagConfig, KeyedJaggedTensor, models
from helpers import assert_close

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import rec_twins

B, DENSE = 6, 3
KEYS = ["user", "item", "genres"]
TABLES = [
    EmbeddingBagConfig("users", 4, 11, ["user"]),
    EmbeddingBagConfig("movies", 4, 9, ["item", "genres"], pooling="mean"),  # a shared table
]
HPARAMS = {
    "dlrm": {"bottom_mlp": [8, 4], "top_mlp": [8, 1]},
    "dcn": {"num_cross_layers": 2, "deep_mlp": [8]},
    "dcn_low_rank": {"num_cross_layers": 2, "low_rank": 3, "deep_mlp": [8, 5]},
    "deepfm": {"deep_mlp": [8, 8]},
    "wide_deep": {"deep_mlp": [8]},
    "mf": {},
}


def _batch() -> tuple[np.ndarray, KeyedJaggedTensor, np.ndarray]:
    rng = np.random.default_rng(3)
    lengths = np.concatenate([np.ones(2 * B, np.int64), rng.integers(0, 4, B)])
    lengths[-1] = 0  # an empty genres bag
    rows = {"user": 11, "item": 9, "genres": 9}
    values = np.concatenate(
        [rng.integers(0, rows[k], int(n)) for k, n in zip(KEYS, lengths.reshape(3, B).sum(1))]
    )
    dense = rng.standard_normal((B, DENSE)).astype(np.float32)
    labels = rng.integers(0, 2, B).astype(np.float32)
    return dense, KeyedJaggedTensor(KEYS, values, lengths), labels


@pytest.mark.parametrize("name", list(HPARAMS))
def test_model_matches_its_torch_twin(device: str, name: str) -> None:
    kind = name.removesuffix("_low_rank")
    dense_in = 0 if kind == "mf" else DENSE
    torch.manual_seed(0)
    twin = rec_twins.build(kind, TABLES, dense_in, sparse=False, **HPARAMS[name])
    model = models.build(kind, TABLES, dense_in, device=device, **HPARAMS[name])
    rec_twins.copy_into(twin, model)

    dense, kjt, labels = _batch()
    kjt = kjt.to(device)
    x = ac.tensor(dense, device=device) if dense_in else None
    logits = model(x, kjt)
    ac.nn.functional.binary_cross_entropy_with_logits(
        logits, ac.tensor(labels, device=device)
    ).backward()

    tx = torch.from_numpy(dense) if dense_in else None
    want = twin(tx, rec_twins.torch_features(kjt))
    torch.nn.functional.binary_cross_entropy_with_logits(want, torch.from_numpy(labels)).backward()
    assert_close(logits, want, 2e-5, 2e-5, f"{name} logits")
    params = dict(model.named_parameters())
    twin_params = dict(twin.named_parameters())
    assert params.keys() == twin_params.keys()
    for key, p in twin_params.items():
        g = params[key].grad
        assert g is not None, f"{name}: no gradient for {key}"
        g = g.to_dense() if hasattr(g, "to_dense") else g
        assert_close(g, p.grad, 2e-5, 2e-4, f"{name} grad of {key}")


def test_model_errors_name_the_shapes() -> None:
    with pytest.raises(ac.ArgumentError, match="unknown model 'gbdt'"):
        models.build("gbdt", TABLES, DENSE)
    with pytest.raises(ac.ShapeError, match=r"bottom_mlp must end at the embedding dim 4"):
        models.build("dlrm", TABLES, DENSE, bottom_mlp=[8, 5])
    mixed = [EmbeddingBagConfig("a", 4, 5, ["a"]), EmbeddingBagConfig("b", 2, 5, ["b"])]
    with pytest.raises(ac.ShapeError, match=r"same embedding_dim, got \[4, 2\]"):
        models.build("deepfm", mixed, 0)
    model = models.build("dcn", TABLES, DENSE, deep_mlp=[4])
    _, kjt, _ = _batch()
    with pytest.raises(ac.ShapeError, match=r"dense must have shape \(6, 3\), got \(6, 2\)"):
        model(ac.zeros(B, 2), kjt)
