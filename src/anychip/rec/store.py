"""`anychip rec train --save DIR`: a trained model, its tables and its feature store as a
directory a server loads (layout in docs/rec-training.md):

    DIR/config.json          model name, hyper-parameters, tables, feature names
    DIR/model.safetensors    the dense parameters (MLPs, cross layers, biases)
    DIR/tables.safetensors   the embedding tables, one (rows, dim) tensor per state key
    DIR/features.safetensors user and item side features (+ behaviour state), by raw id

>>> model, store = load("out/deepfm")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any

import numpy as np

from anychip.errors import ArgumentError
from anychip.frontend.tensor import Tensor
from anychip.nn.module import Module
from anychip.rec import history, models
from anychip.rec.collection import EmbeddingBagConfig
from anychip.rec.train import hparams_for
from anychip.serialization import load_file, save_file

FORMAT = "anychip.rec.model/1"
TABLE_KEY = "embedding_bags."  # state keys of embedding tables contain this


def save(path: str, model_name: str, trainer: Any, settings: Any) -> None:
    """Write `trainer`'s model (a `rec.train.Trainer`) and its feature store to `path`."""
    os.makedirs(path, exist_ok=True)
    features = trainer.features
    state = trainer.model.state_dict()
    tables = {k: v for k, v in state.items() if TABLE_KEY in k}
    dense = {k: v for k, v in state.items() if TABLE_KEY not in k}
    save_file(tables, os.path.join(path, "tables.safetensors"))
    save_file(dense, os.path.join(path, "model.safetensors"))
    store = feature_store(features)
    save_file({k: Tensor(v) for k, v in store.items()}, os.path.join(path, "features.safetensors"))
    config = {
        "format": FORMAT,
        "model": model_name,
        "hparams": hparams_for(model_name, settings.dim)
        if settings.hparams is None
        else settings.hparams,
        "dim": settings.dim,
        "dense_in": features.dense_in,
        "sparse_features": list(features.keys),
        "dense_features": list(features.dense_names),
        "history": features.history,
        "history_k": features.k,
        "id_rows": features.id_rows,
        "tables": [asdict(t) for t in features.tables()],
    }
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


def feature_store(features: Any) -> dict[str, np.ndarray]:
    """The side features by raw id (row 0 unused) and, with history, the behaviour state
    after the last event (each user's recent and liked items, user and item stats)."""
    ml = features.ml
    side = ml.side
    out = {f"user_{k}": v for k, v in side.users.items()}
    out["item_year"] = side.year
    out["item_genres_values"], out["item_genres_offsets"] = side.genres.values, side.genres.offsets
    if features.history:
        s = history.snapshot(
            ml.user, ml.item, ml.rating, ml.timestamp, ml.num_users, ml.num_items, features.k
        )
        out["user_recent_items_values"] = s.recent_items.values
        out["user_recent_items_offsets"] = s.recent_items.offsets
        out["user_recent_liked_values"] = s.recent_liked.values
        out["user_recent_liked_offsets"] = s.recent_liked.offsets
        out["user_dense"], out["item_dense"] = s.user_dense, s.item_dense
        # the raw sums too: a server that follows the events adds to them (rec.serve)
        out["user_sums"], out["item_sums"] = s.user_sums, s.item_sums
    return out


def load(path: str, device: Any = None) -> tuple[Module, dict[str, Any]]:
    """The model saved in `path` (on `device`) and its feature store: a dict holding the
    arrays of features.safetensors (as numpy) and the config under 'config'."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ArgumentError(f"rec.store.load: {path!r} has no config.json (not a saved model)")
    with open(cfg_path) as f:
        config = json.load(f)
    if config.get("format") != FORMAT:
        raise ArgumentError(f"rec.store.load: {cfg_path} is format {config.get('format')!r}, "
                            f"expected {FORMAT!r}")  # fmt: skip
    tables = [
        EmbeddingBagConfig(t["name"], config["dim"], t["rows"], list(t["features"]), t["pooling"])
        for t in config["tables"]
    ]
    model = models.build(
        config["model"], tables, config["dense_in"], device=device, sparse=False,
        **config["hparams"],
    )  # fmt: skip
    state = {**load_file(os.path.join(path, "model.safetensors"), device=device),
             **load_file(os.path.join(path, "tables.safetensors"), device=device)}  # fmt: skip
    model.load_state_dict(state)
    store: dict[str, Any] = {
        k: v.numpy() for k, v in load_file(os.path.join(path, "features.safetensors")).items()
    }
    store["config"] = config
    return model, store
