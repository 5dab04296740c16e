"""`anychip rec train` end to end on the first events of MovieLens-100k: the trainer steps
as its PyTorch twin does (padding rows left out of the loss), the CLI writes its JSON and
a saved directory loads back into a model that predicts the same."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import anychip as ac
from anychip.cli import main
from anychip.rec import load_movielens, protocol, store
from anychip.rec.features import MovieLensFeatures
from anychip.rec.train import Settings, Trainer, adam, build, hparams_for, table_configs, train

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("recbole") is None, reason="needs `pip install --no-deps recbole`"
)
torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import rec_movielens  # noqa: E402
import rec_twins  # noqa: E402


@pytest.mark.parametrize(
    ("name", "dev"),
    [("dcn", "ref"), ("deepfm", "ref"),
     pytest.param("dcn", "cpu", marks=pytest.mark.slow),  # compiles its kernels: ~20s cold
     pytest.param("deepfm", "cpu", marks=pytest.mark.slow)],
)  # fmt: skip
def test_trainer_steps_as_the_torch_twin(name: str, dev: str) -> None:
    if dev not in ac.devices():
        pytest.skip(f"device {dev} is not available here")
    features = MovieLensFeatures(load_movielens().first(3000))
    settings = Settings(dim=4, hparams={"dcn": {"num_cross_layers": 1, "deep_mlp": (8,)},
                                        "deepfm": {"deep_mlp": (8,)}}[name])  # fmt: skip
    model = build(name, features, settings, dev)
    torch.manual_seed(0)
    tables = table_configs(features, settings.dim)
    twin = rec_twins.build(name, tables, features.dense_in, sparse=False, **settings.hparams)
    rec_twins.copy_into(twin, model)
    ours = Trainer(model, adam(1e-2), features, batch_size=64, device=dev)
    theirs = rec_movielens.TorchLearner(twin, features, 1e-2)
    rows = np.arange(2000, 3000)
    for chunk in (np.arange(0, 64), np.arange(64, 101), np.arange(101, 165)):  # 37: padded
        ours.fit(chunk)
        theirs.fit(chunk)
    np.testing.assert_allclose(ours.predict(rows), theirs.predict(rows), rtol=1e-4, atol=1e-5)


def test_cli_writes_json_and_a_directory_that_loads(tmp_path: Path, capsys) -> None:
    out, saved = tmp_path / "m.json", tmp_path / "model"
    args = ["rec", "train", "--model", "mf", "--protocol", "online", "--limit", "2000",
            "--epochs", "1", "--json", str(out), "--save", str(saved)]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    for word in ("AUC", "logloss", "GAUC", "calibration", "events/s"):
        assert word in text
    doc = json.loads(out.read_text())
    assert {"auc", "logloss", "gauc", "calibration"} <= doc.keys()
    assert len(doc["shard_auc"]) == 50
    assert {p.name for p in saved.iterdir()} == {
        "config.json", "model.safetensors", "tables.safetensors", "features.safetensors",
    }  # fmt: skip


def test_saved_model_predicts_as_the_trained_one(tmp_path: Path) -> None:
    settings = Settings(run=protocol.Config(max_epochs=1))
    _, trainer = train("mf", "static", settings=settings, limit=1500)
    store.save(str(tmp_path), "mf", trainer, settings)
    model, feats = store.load(str(tmp_path))
    rows = np.arange(1000, 1500)
    again = Trainer(model, adam(1e-3), trainer.features, 256)
    np.testing.assert_allclose(again.predict(rows), trainer.predict(rows), rtol=1e-6)
    ml = trainer.features.ml
    np.testing.assert_array_equal(feats["user_occupation"], ml.side.users["occupation"])
    np.testing.assert_array_equal(feats["item_genres_values"], ml.side.genres.values)
    assert feats["config"]["model"] == "mf" and feats["config"]["hparams"] == hparams_for("mf", 16)
    u = int(ml.user[-1])  # the last event's user: its item is the newest of its recent items
    lo, hi = feats["user_recent_items_offsets"][u : u + 2]
    assert feats["user_recent_items_values"][hi - 1] == ml.item[-1]
    assert hi - lo == min(20, int((ml.user == u).sum()))


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is not None, reason="has matplotlib")
def test_plot_without_matplotlib_says_so_before_training(capsys) -> None:
    assert main(["rec", "train", "--plot", "x.png"]) == 1
    assert "matplotlib" in capsys.readouterr().err


@pytest.mark.slow  # the growing tables compile kernels for each capacity: ~20s cold
def test_dynamic_tables_hold_a_row_per_id_trained_on() -> None:
    settings = Settings(dynamic=True, history=False, run=protocol.Config(max_epochs=1))
    _, trainer = train("mf", "static", settings=settings, limit=1500)
    ml = trainer.features.ml
    trained = protocol.split(len(ml)).train  # the test period is only predicted (eval mode)
    bags = trainer.model.ebc.embedding_bags
    assert len(bags["user_id"].table) == len(np.unique(ml.user[trained]))
    assert len(bags["item_id"].table) == len(np.unique(ml.item[trained]))
