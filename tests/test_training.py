"""The training loop (loss goes down, checkpoint contents, bitwise resume) and the exact evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pixelzoo import checkpoint, device, training
from pixelzoo.data.datasets import split_digest
from pixelzoo.data.preprocess import write_processed
from pixelzoo.data.splits import load_splits
from pixelzoo.evaluation import evaluate_nll
from pixelzoo.likelihood import nll_per_subpixel
from pixelzoo.pipeline.settings import ParamsError, resolve_experiment

LEVELS, C, H, W = 4, 1, 6, 6


def make_dataset(root: Path, n_train: int = 50, n_valid: int = 13, n_test: int = 17, seed: int = 0) -> Path:
    """A learnable toy dataset (vertical bars + noise) in the processed format of docs/architecture.md."""
    rng = np.random.default_rng(seed)
    arrays, digests = {}, {}
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        y = rng.integers(0, 3, n).astype(np.int64)
        cols = np.arange(W)[None, None, None, :]
        x = ((cols + y[:, None, None, None]) % LEVELS).repeat(H, axis=2).astype(np.uint8)
        noise = rng.random(x.shape) < 0.1
        x[noise] = rng.integers(0, LEVELS, noise.sum())
        arrays[split] = (x, y)
        digests[split] = split_digest(x, y)
    meta = {
        "name": "toy",
        "source": "toy",
        "levels": LEVELS,
        "channels": C,
        "height": H,
        "width": W,
        "n_classes": 3,
        "counts": {s: len(a[0]) for s, a in arrays.items()},
        "sha256": digests,
        "raw_sha256": {"toy.bin": "0" * 64},
        "valid_carved_from_train": False,
        "params": {},
    }
    write_processed(root / "toy", arrays, meta)
    return root / "toy"


def config(**over) -> dict:
    params = {
        "train_defaults": {
            "device": "cpu",
            "precision": "fp32",
            "optimizer": {"name": "rmsprop", "lr": 3e-3},
            "grad_clip": 1.0,
            "batch_size": 8,
            "eval_batch_size": 5,
            "epochs": 3,
            "seed": 0,
            "checkpoint_minutes": 0,
            "log_every_steps": 1,
        },
        "experiments": {
            "toy": {
                "model": "pixelcnn",
                "dataset": "toy",
                "model_args": {"layers": 2, "hidden": 6, "head_hidden": 12},
                **over,
            }
        },
    }
    return resolve_experiment(params, "toy")


def test_resolve_experiment_merges_defaults_and_names_unknown_keys() -> None:
    params = {
        "train_defaults": {
            "optimizer": {"name": "rmsprop", "lr": 1e-3},
            "batch_size": 16,
            "epochs": 3,
            "seed": 0,
        },
        "experiments": {"a": {"model": "m", "dataset": "d", "optimizer": {"lr": 5e-4}, "epochs": 9}},
    }
    cfg = resolve_experiment(params, "a")
    assert cfg["optimizer"] == {"name": "rmsprop", "lr": 5e-4}  # nested merge keeps the default name
    assert (cfg["epochs"], cfg["batch_size"], cfg["name"]) == (9, 16, "a")
    assert params["train_defaults"]["optimizer"]["lr"] == 1e-3  # defaults not mutated
    with pytest.raises(ParamsError, match="unknown experiment 'b'.*defines: a"):
        resolve_experiment(params, "b")
    del params["train_defaults"]["seed"]
    with pytest.raises(ParamsError, match=r"experiments\.a\.seed: missing"):
        resolve_experiment(params, "a")


def test_loss_decreases_and_outputs_are_complete(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    cfg = config(epochs=4)
    logged: list[tuple[dict, int]] = []
    history = training.train(
        cfg, data, tmp_path / "out", tmp_path / "scratch", log_metrics=lambda m, s: logged.append((m, s))
    )
    epochs = history["epochs"]
    assert len(epochs) == 4
    assert epochs[-1]["train_bits_per_dim"] < epochs[0]["train_bits_per_dim"] - 0.1
    assert epochs[-1]["valid_bits_per_dim"] < epochs[0]["valid_bits_per_dim"]
    assert epochs[-1]["steps"] == 4 * math.ceil(50 / 8)  # the short last batch is trained on too
    on_disk = json.loads((tmp_path / "out" / "history.json").read_text())
    assert on_disk["n_params"] == history["n_params"] > 0 and on_disk["device"] == "cpu"
    assert {"train_bits_per_dim", "valid_bits_per_dim", "steps", "wall_seconds"} <= set(on_disk["epochs"][0])
    assert any("train_step_bits_per_dim" in m for m, _ in logged)
    assert any("valid_bits_per_dim" in m for m, _ in logged)

    # model.pt: the best epoch's weights + the resolved config; it rebuilds to that validation NLL.
    model, ckpt = checkpoint.load_trained(tmp_path / "out" / "model.pt")
    best = min(epochs, key=lambda e: e["valid_bits_per_dim"])
    assert ckpt["config"] == cfg and ckpt["epoch"] == best["epoch"] == history["best_epoch"]
    assert ckpt["n_params"] == history["n_params"]
    _, splits = load_splits(data, ("valid",))
    again = evaluate_nll(model, splits["valid"].x, None, 4, "cpu")
    assert again["bits_per_dim"] == pytest.approx(best["valid_bits_per_dim"], rel=1e-6)


# The PixelCNN++ recipe (EMA weights, per-step LR decay): a decay of 0.7 moves the EMA far from the raw
# weights in a few steps, so a resume that lost its EMA or scheduler state would show.
RECIPE = {"ema_decay": 0.7, "lr_decay_per_step": 0.9}
# PixelCNN++ with weight normalisation: its data-dependent init runs on a fresh start only.
WN = {"model": "pixelcnn_pp", "model_args": {"nr_resnet": 1, "filters": 4, "n_mix": 2, "weight_norm": True}}


@pytest.mark.parametrize("recipe", [{}, RECIPE, {**WN, **RECIPE}],
                         ids=["plain", "ema+lr_decay", "weight_norm"])
def test_resume_after_interruption_gives_bitwise_identical_weights(tmp_path: Path, recipe: dict) -> None:
    data = make_dataset(tmp_path / "data")
    cfg = config(epochs=2, **recipe)
    training.train(cfg, data, tmp_path / "a", tmp_path / "scratch_a")
    final_a = torch.load(tmp_path / "scratch_a" / "resume.pt", weights_only=True)

    # Killed mid-epoch 0 (after step 4 of 7): only the periodic scratch checkpoint survives.
    with pytest.raises(training.TrainingInterrupted):
        training.train(cfg, data, tmp_path / "b", tmp_path / "scratch_b", interrupt_after_steps=4)
    assert not (tmp_path / "b" / "model.pt").exists()
    partial = torch.load(tmp_path / "scratch_b" / "resume.pt", weights_only=True)
    assert partial["state"]["global_step"] == 4 and partial["state"]["step_in_epoch"] == 4
    training.train(cfg, data, tmp_path / "b", tmp_path / "scratch_b")  # the rerun picks it up
    final_b = torch.load(tmp_path / "scratch_b" / "resume.pt", weights_only=True)

    for key, value in final_a["model"].items():
        assert torch.equal(value, final_b["model"][key]), key
    best_a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    best_b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    hist_a = json.loads((tmp_path / "a" / "history.json").read_text())["epochs"]
    hist_b = json.loads((tmp_path / "b" / "history.json").read_text())["epochs"]
    assert [e["train_bits_per_dim"] for e in hist_a] == [e["train_bits_per_dim"] for e in hist_b]
    assert [e["valid_bits_per_dim"] for e in hist_a] == [e["valid_bits_per_dim"] for e in hist_b]
    if "ema_decay" in recipe:  # the EMA and the scheduler resumed too
        assert partial["ema"]["updates"] == 4 and partial["lr_scheduler"]["last_epoch"] == 4
        for key, value in final_a["ema"]["shadow"].items():
            assert torch.equal(value, final_b["ema"]["shadow"][key]), key
        assert final_a["lr_scheduler"] == final_b["lr_scheduler"]
        assert final_a["optimizer"]["param_groups"] == final_b["optimizer"]["param_groups"]
    else:
        assert "ema" not in final_b and "lr_scheduler" not in final_b

    checkpoint.clear_scratch(tmp_path / "scratch_b")
    assert not (tmp_path / "scratch_b" / "resume.pt").exists()


def test_recipe_off_is_the_plain_loop_and_on_validates_and_keeps_the_ema_weights(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    off = config(ema_decay=None, lr_decay_per_step=None)
    runs = {"absent": config(), "null": off, "on": config(**RECIPE)}
    ckpts, finals = {}, {}
    for name, cfg in runs.items():
        training.train(cfg, data, tmp_path / name, tmp_path / f"s_{name}")
        ckpts[name] = torch.load(tmp_path / name / "model.pt", weights_only=True)
        finals[name] = torch.load(tmp_path / f"s_{name}" / "resume.pt", weights_only=True)

    # Off (absent or null): the same weights and optimizer state bit for bit, no recipe keys anywhere.
    absent, null = ckpts["absent"], ckpts["null"]
    assert all(torch.equal(absent["state_dict"][k], null["state_dict"][k]) for k in absent["state_dict"])
    assert absent["valid_bits_per_dim"] == null["valid_bits_per_dim"]
    assert "weights" not in absent and not {"ema", "lr_scheduler"} & set(finals["null"])
    assert finals["null"]["optimizer"]["param_groups"][0]["lr"] == 3e-3

    # On: model.pt holds the EMA weights (marked so), which differ from the raw ones and score what the
    # loop validated them at; the learning rate decayed once per optimizer step.
    on, final = ckpts["on"], finals["on"]
    steps = final["state"]["global_step"]
    assert on["weights"] == "ema" and on["config"]["ema_decay"] == 0.7
    assert final["optimizer"]["param_groups"][0]["lr"] == pytest.approx(3e-3 * 0.9**steps, rel=1e-12)
    shadow = final["ema"]["shadow"]
    assert not all(torch.equal(shadow[k], final["model"][k]) for k in shadow)
    if on["epoch"] == final["state"]["history"][-1]["epoch"]:  # best = last epoch: exactly the final EMA
        assert all(torch.equal(on["state_dict"][k], shadow[k]) for k in shadow)
    model, _ = checkpoint.load_trained(tmp_path / "on" / "model.pt")
    _, splits = load_splits(data, ("valid",))
    again = evaluate_nll(model, splits["valid"].x, None, 5, "cpu")
    assert again["bits_per_dim"] == pytest.approx(on["valid_bits_per_dim"], rel=1e-6)
    raw = checkpoint.build_from_config(on["config"], on["data"])
    raw.load_state_dict(final["model"])
    assert evaluate_nll(raw, splits["valid"].x, None, 5, "cpu")["bits_per_dim"] != again["bits_per_dim"]


def test_weight_norm_is_initialised_on_the_first_batch_once_and_reloads(tmp_path: Path, monkeypatch) -> None:
    """A fresh start runs the model's data_init_ once, on the first training batch, in training mode,
    without moving the loop's random stream; the EMA starts from the initialised weights; a resume does
    not run it again; model.pt rebuilds the weight-normalised model."""
    from pixelzoo.models.pixelcnn_pp import PixelCNNPP

    data, calls = make_dataset(tmp_path / "data"), []
    real = PixelCNNPP.data_init_

    def spy(self, x, y=None):
        calls.append((x.clone(), self.training))
        return real(self, x, y)

    monkeypatch.setattr(PixelCNNPP, "data_init_", spy)
    cfg = config(epochs=1, ema_decay=0.7, **WN)
    loop = training.set_up(cfg, data, tmp_path / "s0", None, None)
    built = {k: v.clone() for k, v in loop.model.state_dict().items()}
    rng = torch.get_rng_state()
    training.resume(loop)
    assert torch.equal(torch.get_rng_state(), rng)  # the init forked its own stream
    first = loop.train_set.x[training.epoch_order(50, 0, 0)[:8]].long()
    assert len(calls) == 1 and torch.equal(calls[0][0], first) and calls[0][1]
    now = loop.model.state_dict()
    assert any(not torch.equal(built[k], now[k]) for k in now)
    assert all(torch.equal(loop.ema.shadow[k], now[k]) for k in now)

    calls.clear()
    with pytest.raises(training.TrainingInterrupted):
        training.train(cfg, data, tmp_path / "o", tmp_path / "s", interrupt_after_steps=2)
    training.train(cfg, data, tmp_path / "o", tmp_path / "s")  # the resume
    assert len(calls) == 1  # the fresh start only
    model, ckpt = checkpoint.load_trained(tmp_path / "o" / "model.pt")
    assert model.weight_norm and any("parametrizations" in k for k in model.state_dict())
    _, splits = load_splits(data, ("valid",))
    again = evaluate_nll(model, splits["valid"].x, None, 5, "cpu")
    assert again["bits_per_dim"] == pytest.approx(ckpt["valid_bits_per_dim"], rel=1e-6)


def test_pixelcnn_pp_without_weight_norm_trains_as_if_the_init_hook_did_not_exist(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    """Its data_init_ is a no-op and the forked RNG comes back unchanged: with dropout drawing from the
    stream, the weights are bit for bit those of a loop that never calls the hook."""
    data = make_dataset(tmp_path / "data")
    off = {**WN["model_args"], "weight_norm": False}  # dropout 0.5 (the default) draws from the stream
    cfg = config(epochs=1, max_steps=3, model="pixelcnn_pp", model_args=off)
    training.train(cfg, data, tmp_path / "a", tmp_path / "sa")
    monkeypatch.setattr(training, "init_from_data", lambda loop: None)
    training.train(cfg, data, tmp_path / "b", tmp_path / "sb")
    a, b = (torch.load(tmp_path / s / "resume.pt", weights_only=True)["model"] for s in ("sa", "sb"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_skipped_step_moves_neither_weights_nor_ema() -> None:
    """The step guard's promise holds for the EMA: a non-finite loss leaves the average untouched."""
    from types import SimpleNamespace

    from pixelzoo.recipe import EMA, exponential_lr

    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    loop = SimpleNamespace(model=model, ema=EMA(model, 0.5), scheduler=exponential_lr(opt, 0.9),
                           guard=training.FiniteGuard(torch.device("cpu")))
    x = torch.randn(4, 3)
    for scale in (1.0, float("nan"), 1.0):  # a good step, a bad one, and one after it (also skipped)
        opt.zero_grad()
        loss = model(x).pow(2).sum() * scale
        loss.backward()
        before = {k: v.clone() for k, v in loop.ema.shadow.items()}
        loop.guard.step_unless_bad(loss, opt, list(model.parameters()))
        training.after_step(loop)
        moved = any(not torch.equal(before[k], v) for k, v in loop.ema.shadow.items())
        assert moved == (scale == 1.0 and loop.guard.first_bad() is None)
    assert loop.guard.first_bad()[0] == 2
    assert all(torch.isfinite(v).all() for v in loop.ema.shadow.values())


def test_a_model_trained_at_other_levels_than_the_data_is_refused(tmp_path: Path) -> None:
    """Scored at the wrong K an NLL is silently wrong (K=4 logits, data in [0, 4) of K=16 levels): the
    stages that read model.pt check its data shape against the dataset first."""
    from pixelzoo.errors import MissingInput

    data = make_dataset(tmp_path / "data")
    out = tmp_path / "exp" / "train"
    training.train(config(epochs=1, max_steps=1), data, out, tmp_path / "s")
    _, ckpt = checkpoint.load_trained(out / "model.pt")
    meta = json.loads((data / "meta.json").read_text())
    checkpoint.check_data_fits(ckpt, meta, out / "model.pt")  # the data it was trained on: fine
    with pytest.raises(MissingInput) as err:
        checkpoint.check_data_fits(ckpt, meta | {"levels": 16}, out / "model.pt")
    assert str(err.value) == (f"{out / 'model.pt'} was trained on other data than toy has now (levels 4 "
                              "(data now: 16)); retrain it with `dvc repro train@exp`")


def _killed_at_step_2(data: Path, tmp_path: Path) -> None:
    checkpoint.clear_scratch(tmp_path / "s")
    with pytest.raises(training.TrainingInterrupted):
        training.train(config(epochs=1), data, tmp_path / "o", tmp_path / "s", interrupt_after_steps=2)
    assert (tmp_path / "s" / "resume.pt").exists()


def test_resume_checkpoint_of_another_run_is_discarded(tmp_path: Path, capsys, monkeypatch) -> None:
    """Only the same run resumes: other params, other data arrays or other model code discard it."""
    data = make_dataset(tmp_path / "data")
    _killed_at_step_2(data, tmp_path)
    history = training.train(config(epochs=1, seed=1), data, tmp_path / "o", tmp_path / "s")
    assert "resolved config sha256" in capsys.readouterr().out
    assert history["total_steps"] == math.ceil(50 / 8)  # started from scratch, not from step 2

    _killed_at_step_2(data, tmp_path)
    make_dataset(tmp_path / "data", seed=5)  # same params, same shapes: another carving of the images
    training.train(config(epochs=1), data, tmp_path / "o", tmp_path / "s")
    out = capsys.readouterr().out
    assert "discarding" in out and "train data sha256" in out and "resolved config" not in out
    assert "resuming" not in out

    _killed_at_step_2(data, tmp_path)
    monkeypatch.setattr(training, "code_digest", lambda files: "edited model code")
    training.train(config(epochs=1), data, tmp_path / "o", tmp_path / "s")
    out = capsys.readouterr().out
    assert "model/training code sha256" in out and "resuming" not in out

    _killed_at_step_2(data, tmp_path)  # the control: nothing changed, so it resumes
    training.train(config(epochs=1), data, tmp_path / "o", tmp_path / "s")
    assert "resuming toy from" in capsys.readouterr().out


def test_max_steps_budget_and_conditional_model(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    cfg = config(
        model="seed004_pixelcnn",
        conditional=True,
        max_steps=3,
        epochs=5,
        model_args={"layers": 1, "features": 6, "dropout": 0.0},
    )
    history = training.train(cfg, data, tmp_path / "out", tmp_path / "scratch")
    assert history["total_steps"] == 3 and len(history["epochs"]) == 1
    model, ckpt = checkpoint.load_trained(tmp_path / "out" / "model.pt")
    assert ckpt["data"]["n_classes"] == 3
    x = torch.zeros(2, C, H, W, dtype=torch.long)
    assert model(x, torch.tensor([0, 2])).shape == (2, LEVELS, C, H, W)


def test_bad_optimizer_and_device_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="optimizer.name"):
        training.make_optimizer([nn.Parameter(torch.zeros(1))], {"name": "adagrad", "lr": 1.0})
    with pytest.raises(ValueError, match="device"):
        device.pick_device("tpu")


# ----------------------------------------------------------------------------- evaluation
class FixedLogits(nn.Module):
    """Same categorical distribution at every sub-pixel, whatever the image: NLL computable by hand."""

    def __init__(self, probs: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(probs.log())

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        return self.logits.view(1, -1, 1, 1, 1).expand(b, -1, c, h, w)


def test_evaluation_counts_every_image_once_in_float64() -> None:
    torch.manual_seed(0)
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    x = torch.randint(0, 4, (23, 1, 5, 5), dtype=torch.uint8)
    per_image = -np.log(probs.double().numpy())[x.long().numpy()].reshape(23, -1).sum(1)  # float64 by hand
    model = FixedLogits(probs)
    for batch in (4, 23, 100):  # 4 does not divide 23: the last batch holds 3 images
        r = evaluate_nll(model, x, None, batch, "cpu")
        assert r["n_images"] == 23
        assert r["total_nats"] == pytest.approx(per_image.sum(), rel=1e-6)
        assert r["nats_per_image"] == pytest.approx(per_image.mean(), rel=1e-6)
        assert r["bits_per_dim"] == pytest.approx(per_image.mean() / (25 * math.log(2)), rel=1e-6)
    # Dropping the short batch would change the mean; a full-batch float64 sum of the per-sub-pixel
    # NLL (what evaluation sums, so its bits maps add up to the metric) agrees to rounding.
    full = nll_per_subpixel(model(x.long()).float(), x.long()).double().sum().item()
    assert evaluate_nll(model, x, None, 4, "cpu")["total_nats"] == pytest.approx(full, rel=1e-12)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_nll(model, x, None, 0, "cpu")


def test_uniform_model_scores_log2_levels_bits_per_dim() -> None:
    x = torch.randint(0, 16, (10, 3, 4, 4), dtype=torch.uint8)
    r = evaluate_nll(FixedLogits(torch.full((16,), 1 / 16)), x, None, 3, "cpu")
    assert r["bits_per_dim"] == pytest.approx(4.0, rel=1e-6)
    assert r["nats_per_image"] == pytest.approx(48 * math.log(16), rel=1e-6)


def test_every_paper_experiment_resolves_with_a_known_dataset_and_reference() -> None:
    from pixelzoo.pipeline.settings import load_params

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    tables = {"pixelrnn_t4_bmnist", "cifar10_test", "pixelrnn_t2_residual_skip", "pixelrnn_t3_depth"}
    for key in params["experiments"]:
        cfg = resolve_experiment(params, key)
        assert cfg["dataset"] in params["datasets"], key
        assert cfg["eval_split"] in ("valid", "test"), key
        ref = cfg["reference"]
        assert ref is None or (ref["table"] in tables and ref["row"]), key
        assert (cfg["eval_split"] == "valid") == (
            ref is not None and ref["table"].startswith("pixelrnn_t") and ref["table"] != "pixelrnn_t4_bmnist"
        ), key
