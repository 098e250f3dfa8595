"""Retraining an RTMPose / SpinePose ONNX export: the plain-PyTorch RTMPose, exported as torch's exporter does
(eval mode, opset 17, BatchNorm folded), loaded back and checked against onnxruntime, fine-tuned one epoch
(loss falls, resume), exported with the original I/O and read by ``spinetrack predict``; the retrain hook's
default uses it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from spinetrack_tools import synth
from spinetrack_tools.io import InputError

from .conftest import write_json
from .onnx_models import rfdetr_model, rfdetr_tables, simcc_model

torch = pytest.importorskip("torch")

from spinetrack_tools.train import onnx_import  # noqa: E402
from spinetrack_tools.train.model import OnnxIO, export_onnx  # noqa: E402
from spinetrack_tools.train.rtmpose import RTMPose, RTMPoseConfig, randomize_  # noqa: E402
from spinetrack_tools.train.trainer import (TrainConfig, load_checkpoint, load_samples, make_batch,  # noqa: E402
                                            simcc_loss, train)

PHOTOS = Path(__file__).parent / "data" / "photos"
# a non-default input name and batch axis name, to see that the export keeps them
T_IO = OnnxIO("image", ("simcc_x", "simcc_y"), ("N", 3, 128, 96), (("N", 37, 192), ("N", 37, 256)))


def exported(path: Path, arch: str, wh: tuple[int, int], io: OnnxIO | None = None, seed: int = 0) -> RTMPose:
    """A random-weight RTMPose (training form, random BatchNorm statistics) exported to ``path``."""
    torch.manual_seed(seed)
    net = randomize_(RTMPose(RTMPoseConfig.named(arch, folded=False, input_w=wh[0], input_h=wh[1])), seed)
    export_onnx(net, str(path), io)
    return net


def io_of(path: Path) -> list:
    m = onnx.load(str(path))
    inits = {i.name for i in m.graph.initializer}
    return [(v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
            for v in [*m.graph.input, *m.graph.output] if v.name not in inits]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("rtm")
    write_json(d / "train.json", synth.generate(4, seed=1, image_dir=d / "images", fk="numpy"))
    write_json(d / "val.json", synth.generate(2, seed=2, image_dir=d / "val_images", fk="numpy"))
    return d


@pytest.fixture(scope="module")
def rtm_t(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("rtm_t") / "rtmpose-t.onnx"
    exported(p, "t", (96, 128), T_IO)
    return p


def test_the_re_implementation_has_the_official_parameter_counts():
    """mmpose projects/rtmpose README (COCO, 17 keypoints): t 3.34 M, s 5.47 M, m 13.59 M."""
    for arch, official in (("t", 3.34), ("s", 5.47), ("m", 13.59)):
        net = RTMPose(RTMPoseConfig.named(arch, num_keypoints=17, folded=False))
        assert round(sum(p.numel() for p in net.parameters()) / 1e6, 2) == official


def test_the_released_spinepose_sizes_have_the_parameter_counts_of_the_re_implementation():
    """Every pose model of the hub catalogue (small/medium/large/xlarge = RTMPose s/m/l/x, 37 keypoints, at
    its input size) has the re-implementation's parameter count, to the catalogue's 0.01 M."""
    from spinetrack_tools.inference import hub as H

    arch = {"small": "s", "medium": "m", "large": "l", "xlarge": "x"}
    for spec in (s for s in H.catalogue() if s.kind == "pose"):
        size = spec.name.split("@")[0].removeprefix("spinepose-")
        w, h = spec.input_wh
        net = RTMPose(RTMPoseConfig.named(arch[size], input_w=w, input_h=h, folded=False))
        assert round(sum(p.numel() for p in net.parameters()) / 1e6, 2) == spec.params_m, spec.name


@pytest.mark.parametrize("arch, wh", [("t", (96, 128)), ("s", (192, 256))])
def test_export_folds_batchnorm_and_the_loaded_module_reproduces_onnxruntime(tmp_path, arch, wh):
    torch.set_num_threads(2)
    path = tmp_path / f"rtmpose-{arch}.onnx"
    net = exported(path, arch, wh)
    m = onnx.load(str(path))
    ops = {n.op_type for n in m.graph.node}
    assert "BatchNormalization" not in ops and {"Conv", "HardSigmoid", "Clip", "ReduceL2"} <= ops
    assert m.opset_import[0].version == 17
    assert onnx_import.detect(path)
    model, io, diff = onnx_import.load(path)
    assert model.cfg == RTMPoseConfig.named(arch, input_w=wh[0], input_h=wh[1])
    if wh == (192, 256):  # folded: the BatchNorm shifts become conv biases, the scales go into the weights
        assert abs(sum(p.numel() for p in model.parameters()) - {"t": 3.709e6, "s": 5.969e6}[arch]) < 1e3
    assert diff < onnx_import.PARITY_TOL
    assert all(p.requires_grad for p in model.parameters())  # trainable parameters, not buffers
    x = torch.randn(3, 3, wh[1], wh[0])
    with torch.no_grad():  # also equal to the training-form module it was exported from
        assert max(float((a - b).abs().max()) for a, b in zip(net.eval()(x), model.eval()(x))) < 1e-4
    assert io == OnnxIO.spinepose(model.cfg)


def test_the_loader_refuses_what_it_cannot_map_or_reproduce(tmp_path, rtm_t):
    plain = simcc_model(tmp_path / "plain.onnx")  # the SimCC contract, not an RTMPose network
    assert not onnx_import.detect(plain)
    with pytest.raises(InputError, match="not an RTMPose-style network"):
        onnx_import.load(plain)
    m = onnx.load(str(rtm_t))  # cls_x's weight of another width: the mapping names the tensor and node
    node = next(n for n in m.graph.node if n.name == "/head/cls_x/MatMul")
    init = next(i for i in m.graph.initializer if i.name == node.input[1])
    init.CopyFrom(onnx.numpy_helper.from_array(np.zeros((256, 200), np.float32), init.name))
    onnx.save(m, str(tmp_path / "bad.onnx"))
    with pytest.raises(InputError, match=r"cannot map tensor .*\[256, 200\].*cls_x.*head\.cls_x\.weight"):
        onnx_import.load(tmp_path / "bad.onnx")
    m = onnx.load(str(rtm_t))  # an op the re-implementation does not have: mapped, then refused by parity
    last = [n for n in m.graph.node if n.op_type == "HardSigmoid"][-1]
    last.op_type = "Sigmoid"
    del last.attribute[:]
    onnx.save(m, str(tmp_path / "other.onnx"))
    with pytest.raises(InputError, match="differs from onnxruntime by"):
        onnx_import.load(tmp_path / "other.onnx")


def _loss(model, data: Path) -> float:
    from spinetrack_tools.coco import read_persons

    ds = read_persons(data / "train.json")
    s = load_samples(ds, data / "images")
    x, tx, ty, w = (torch.from_numpy(a) for a in make_batch(s, np.arange(len(s)), model.cfg, ds.skeleton.flip_index,
                                                             np.random.default_rng(0), augment=False))
    model.eval()
    with torch.no_grad():
        return float(simcc_loss(*model(x), tx, ty, w))


def test_fine_tune_one_epoch_resume_and_export_the_original_io(data, rtm_t, tmp_path):
    out = tmp_path / "run"
    tcfg = TrainConfig(epochs=2, batch_size=2, augment=False)  # the default lr of an RTMPose
    before = _loss(onnx_import.load(rtm_t)[0], data)

    class Stop(Exception):
        pass

    def stop_after_epoch_1(line: str) -> None:
        if line.startswith("epoch 1/2"):
            raise Stop  # killed after the first epoch's checkpoint
    with pytest.raises(Stop):
        train(data / "train.json", data / "images", data / "val.json", data / "val_images", out, tcfg,
              init=rtm_t, log=stop_after_epoch_1)
    ck = torch.load(str(out / "model.pt"), weights_only=False)
    assert ck["kind"] == "rtmpose" and ck["epoch"] == 1
    after_1 = _loss(load_checkpoint(out / "model.pt")[0], data)
    assert after_1 < before, (before, after_1)
    lines: list[str] = []
    train(data / "train.json", data / "images", data / "val.json", data / "val_images", out, tcfg, init=rtm_t,
          log=lines.append, resume=True)
    assert any(s.startswith("resuming") for s in lines) and any(s.startswith("epoch 2/2") for s in lines)
    assert not any(s.startswith("epoch 1/2") for s in lines)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2] and metrics["model"]["kind"] == "rtmpose"
    assert metrics["train"]["lr"] == 1e-4
    assert _loss(load_checkpoint(out / "model.pt")[0], data) < before
    assert io_of(out / "model.onnx") == io_of(rtm_t) == [("image", ["N", 3, 128, 96]), ("simcc_x", ["N", 37, 192]),
                                                          ("simcc_y", ["N", 37, 256])]
    assert onnx_import.detect(out / "model.onnx")  # the result can be fine-tuned again, from ONNX too
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "predict", "--model", str(out / "model.onnx"),
                        "--images", str(data / "val_images"), "--boxes", str(data / "val.json"), "--out",
                        str(tmp_path / "pred.json"), "--threads", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    preds = json.loads((tmp_path / "pred.json").read_text())
    assert preds and all(len(p["keypoints"]) == 37 * 3 for p in preds)


def test_cli_train_init_onnx(data, rtm_t, tmp_path):
    base = [sys.executable, "-m", "spinetrack_tools", "train", "--train", str(data / "train.json"), "--images",
            str(data / "images"), "--val", str(data / "val.json"), "--val-images", str(data / "val_images"),
            "--epochs", "1", "--batch-size", "4", "--max-samples", "4"]
    r = subprocess.run([*base, "--out", str(tmp_path / "o"), "--init", str(rtm_t)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "max |simcc| difference to onnxruntime" in r.stdout and "lr 0.0001" in r.stdout
    assert io_of(tmp_path / "o" / "model.onnx") == io_of(rtm_t)
    plain = simcc_model(tmp_path / "plain.onnx")
    r = subprocess.run([*base, "--out", str(tmp_path / "p"), "--init", str(plain)], capture_output=True, text=True)
    assert r.returncode == 2 and "not an RTMPose-style network" in r.stderr and "Traceback" not in r.stderr


def test_default_retrain_hook_fine_tunes_an_rtmpose_onnx(tmp_path, rtm_t, data):
    from spinetrack_tools.active_learning.rounds import retrain_command
    from spinetrack_tools.active_learning.workspace import init

    det = rfdetr_model(tmp_path / "det.onnx", *rfdetr_tables(), size=64)
    ws = init(tmp_path / "ws", PHOTOS, model=rtm_t, detector=det, val=data / "val.json",
              val_images=data / "val_images")
    cmd = retrain_command(ws, 1, tmp_path / "out")
    assert isinstance(cmd, list) and cmd[cmd.index("--init") + 1] == str(rtm_t), cmd
    plain = init(tmp_path / "plain", PHOTOS, model=simcc_model(tmp_path / "plain.onnx"), detector=det,
                 val=data / "val.json", val_images=data / "val_images")
    assert retrain_command(plain, 1, tmp_path / "out").startswith("retrain skipped")


def test_default_retrain_hook_fetches_a_released_name_and_fine_tunes_its_onnx(tmp_path, data):
    """A workspace model given by name: the hook's --init is the released file in the Hugging Face cache (the
    tests' local Hub serving an RTMPose-t export under spinepose-small's real repository path)."""
    from spinetrack_tools.inference import hub as H

    from .hub_server import FakeHub, hub_env

    spec = H.spec_for("spinepose-small")
    exported(tmp_path / "served.onnx", "t", spec.input_wh)
    det = rfdetr_model(tmp_path / "det.onnx", *rfdetr_tables(), size=64)
    script = ("import json, sys; from pathlib import Path\n"
              "from spinetrack_tools.active_learning.workspace import init\n"
              "from spinetrack_tools.active_learning.rounds import retrain_command\n"
              f"ws = init(Path({str(tmp_path / 'ws')!r}), Path({str(PHOTOS)!r}), model='spinepose-small', "
              f"detector=Path({str(det)!r}), val=Path({str(data / 'val.json')!r}), "
              f"val_images=Path({str(data / 'val_images')!r}))\n"
              "print(json.dumps(retrain_command(ws, 1, Path('out'))))\n")
    served = (tmp_path / "served.onnx").read_bytes()
    with FakeHub(None, models={spec.repo_id: {spec.filename: served}}) as hub:
        r = subprocess.run([sys.executable, "-c", script], env=hub_env(hub, tmp_path / "home"), capture_output=True,
                           text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    cmd = json.loads(r.stdout.strip().splitlines()[-1])
    init_file = Path(cmd[cmd.index("--init") + 1])
    assert str(tmp_path / "home") in str(init_file) and init_file.read_bytes() == served


def test_symbolic_keypoint_and_bin_dims_are_kept(tmp_path):
    """An export that leaves K and the bins symbolic (as torch's exporter does with a dynamic batch) is read
    (K from the final Conv) and written back with the same symbolic dims."""
    io = OnnxIO("input", ("simcc_x", "simcc_y"), ("batch", 3, 128, 96), (("batch", "k", "bx"), ("batch", "k", "by")))
    exported(tmp_path / "sym.onnx", "t", (96, 128), io)
    model, read, _ = onnx_import.load(tmp_path / "sym.onnx")
    assert read == io and model.cfg.num_keypoints == 37 and model.cfg.split_ratio == 2.0
    export_onnx(model, str(tmp_path / "back.onnx"), read)
    assert io_of(tmp_path / "back.onnx") == io_of(tmp_path / "sym.onnx") == [
        ("input", ["batch", 3, 128, 96]), ("simcc_x", ["batch", "k", "bx"]), ("simcc_y", ["batch", "k", "by"])]
