"""The reference trainer (torch): loss, training loop with validation through `evaluate`, ONNX export
with the SpinePose contract that `predict` runs, and restarting from a checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from spinetrack_tools import synth
from spinetrack_tools.inference.model import PoseModel

from .conftest import write_json

torch = pytest.importorskip("torch")

from spinetrack_tools.train.model import ModelConfig, SimCCNet  # noqa: E402
from spinetrack_tools.train.trainer import TrainConfig, load_samples, make_batch, simcc_loss, train  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    write_json(d / "train.json", synth.generate(6, seed=1, image_dir=d / "images", fk="numpy"))
    val = synth.generate(3, seed=2, image_dir=d / "val_images", fk="numpy")
    write_json(d / "val.json", val)
    return d


def test_loss_decreases_on_a_batch(data):
    from spinetrack_tools.coco import read_persons

    torch.manual_seed(0)
    ds = read_persons(data / "train.json")
    samples = load_samples(ds, data / "images")
    cfg = ModelConfig(width=0.25)
    x, tx, ty, w = (torch.from_numpy(a) for a in make_batch(samples, np.arange(4), cfg, ds.skeleton.flip_index,
                                                             np.random.default_rng(0), augment=True))
    assert x.shape == (4, 3, 256, 192) and tx.shape == (4, 37, 384) and ty.shape == (4, 37, 512)
    model = SimCCNet(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = simcc_loss(*model(x), tx, ty, w)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_train_validates_each_epoch_and_exports_the_spinepose_contract(data, tmp_path):
    out = tmp_path / "run"
    train(data / "train.json", data / "images", data / "val.json", data / "val_images", out,
          TrainConfig(epochs=2, batch_size=4, max_samples=8), ModelConfig(width=0.25), log=lambda s: None)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert set(metrics["final"]) == {"overall", "body", "feet", "spine"}
    assert all(0 <= metrics["final"][g]["AP"] <= 1 for g in metrics["final"])
    m = PoseModel.load(out / "model.onnx")
    assert (m.kind, m.input_wh, m.num_keypoints, m.input_name, m.output_names) == \
        ("simcc", (192, 256), 37, "input", ["simcc_x", "simcc_y"])
    outs = m.session.get_outputs()
    assert [o.shape[1:] for o in outs] == [[37, 384], [37, 512]]
    # restart from the checkpoint
    train(data / "train.json", data / "images", data / "val.json", data / "val_images", tmp_path / "run2",
          TrainConfig(epochs=1, batch_size=4, max_samples=4), init=out / "model.pt", log=lambda s: None)
    assert (tmp_path / "run2" / "model.onnx").is_file()


def test_cli_train(data, tmp_path):
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "train", "--train", str(data / "train.json"),
                        "--images", str(data / "images"), "--val", str(data / "val.json"), "--val-images",
                        str(data / "val_images"), "--out", str(tmp_path / "o"), "--epochs", "1", "--batch-size",
                        "4", "--max-samples", "4", "--width", "0.25"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "epoch 1/1" in r.stdout and (tmp_path / "o" / "model.onnx").is_file()
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "train", "--train", str(data / "train.json"),
                        "--images", str(data / "images"), "--val", str(data / "val.json"), "--out",
                        str(tmp_path / "p"), "--init", str(tmp_path / "missing.pt")], capture_output=True, text=True)
    assert r.returncode == 2 and "checkpoint not found" in r.stderr
