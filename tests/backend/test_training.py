"""End to end: a model trains to a stated accuracy on each device, and `anychip demo` runs."""

from __future__ import annotations

import numpy as np
import pytest

import anychip as ac
from anychip import cli, demo, nn, optim
from anychip.nn import functional as F

ACCURACY = 0.9  # held-out accuracy the spiral MLP must reach in 10 epochs


def test_spiral_classifier_reaches_accuracy(device: str) -> None:
    history = demo.train(epochs=10, device=device, seed=0, log=None)
    assert history[-1].test_accuracy >= ACCURACY, [h.test_accuracy for h in history]
    assert history[-1].train_accuracy >= ACCURACY
    assert history[-1].loss < 0.5 * history[0].loss  # the loss falls, not just wobbles
    assert all(np.isfinite(h.loss) for h in history)


def test_spiral_data_is_deterministic_and_balanced() -> None:
    x1, y1 = demo.make_spirals(seed=4)
    x2, y2 = demo.make_spirals(seed=4)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert x1.dtype == np.float32 and y1.dtype == np.int64
    assert np.bincount(y1).tolist() == [100, 100, 100]
    assert np.abs(x1).max() < 1.5


@pytest.mark.npu
@pytest.mark.parametrize("opt_name", ["SGD", "AdamW", "Adagrad"])
def test_regression_loss_decreases(opt_name: str, device: str) -> None:
    # a linear target the model can fit exactly: y = x @ w_true + 0.5
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], np.float32) + 0.5
    xt, yt = ac.tensor(x, device=device), ac.tensor(y, device=device)
    ac.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1)).to(device)
    kw = {"SGD": {"lr": 0.05, "momentum": 0.9}, "AdamW": {"lr": 0.03}, "Adagrad": {"lr": 0.3}}
    opt = getattr(optim, opt_name)(model.parameters(), **kw[opt_name])
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = F.mse_loss(model(xt), yt)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


def test_demo_command_runs(device: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["demo", "--epochs", "10", "--device", device, "--seed", "0"])
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("epoch")]
    assert code == 0, out
    assert len(lines) == 10 and "loss" in lines[0] and "test acc" in lines[0]
    assert f"device '{device}'" in out and "reached" in out


def test_cli_help_and_devices(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().out
    assert cli.main(["devices"]) == 0
    assert "ref" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["demo", "--epochs", "many"])
    assert cli.main(["demo", "--device", "abacus"]) == 1
    assert "anychip demo: error: device: unknown device 'abacus'" in capsys.readouterr().err


def test_cli_commands_can_be_added(capsys: pytest.CaptureFixture[str]) -> None:
    def configure(p: object) -> None:
        p.add_argument("--name", default="chip")  # type: ignore[attr-defined]

    @cli.command("greet-test", "a test command", configure)
    def greet(args: object) -> int:
        print(f"hello {args.name}")  # type: ignore[attr-defined]
        return 3

    try:
        assert cli.main(["greet-test", "--name", "npu"]) == 3
        assert capsys.readouterr().out == "hello npu\n"
    finally:
        del cli.COMMANDS["greet-test"]
