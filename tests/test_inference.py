"""`spinetrack predict`: real onnxruntime sessions on models the tests build, and parity with the
`spinepose` package (2.1.0) running the same model on the same boxes."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from spinetrack_tools import synth
from spinetrack_tools.persons import Persons
from spinetrack_tools.inference import transforms as T
from spinetrack_tools.inference.model import Detector, PoseModel
from spinetrack_tools.inference.predict import jobs_from_coco, jobs_from_folder, predict
from spinetrack_tools.io import InputError

from .conftest import write_json
from .onnx_models import detector_model, heatmap_model, simcc_model


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Rendered synthetic images (1-3 persons each) and their COCO file."""
    d = tmp_path_factory.mktemp("scene")
    coco = synth.generate(8, seed=3, image_dir=d / "images", fk="numpy")
    coco["annotations"][0]["iscrowd"] = 1  # crowd boxes are not predicted
    write_json(d / "gt.json", coco)
    return d, coco


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"simcc": simcc_model(d / "simcc.onnx"), "nhwc": simcc_model(d / "nhwc.onnx", layout="nhwc"),
            "batch1": simcc_model(d / "batch1.onnx", batch=1), "heatmap": heatmap_model(d / "heatmap.onnx")}


def test_model_io_is_read_from_the_session(models):
    m = PoseModel.load(models["simcc"])
    assert (m.kind, m.layout, m.input_wh, m.fixed_batch, m.num_keypoints, m.input_name) == \
        ("simcc", "nchw", (192, 256), None, 37, "input")
    assert PoseModel.load(models["nhwc"]).layout == "nhwc"
    assert PoseModel.load(models["batch1"]).fixed_batch == 1
    assert PoseModel.load(models["heatmap"]).kind == "heatmap"


def test_bad_models_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        PoseModel.load(tmp_path / "none.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(InputError, match="not a loadable ONNX model"):
        PoseModel.load(tmp_path / "junk.onnx")


def test_simcc_decoding_matches_the_spinepose_test_vector():
    # dfki-av/spinepose tests: input 4x4, centre (10, 20), scale (8, 8) -> keypoint (8, 17), score 1.0
    sx = np.array([[[0, 0.1, 1, 0.2]]], dtype=np.float32)
    sy = np.array([[[0, 1, 0.1, 0.2]]], dtype=np.float32)
    locs, vals = T.decode_simcc(sx, sy, split_ratio=2.0)
    kp = T.to_image(locs, np.array([[10.0, 20.0]]), np.array([[8.0, 8.0]]), (4, 4))
    assert np.allclose(kp[0, 0], [8, 17]) and vals[0, 0] == pytest.approx(1.0)
    _, vmin = T.decode_simcc(sx, sy, 2.0, score="min")
    assert vmin[0, 0] == pytest.approx(1.0)


def test_dark_refines_heatmap_peaks_to_sub_pixel():
    h, w = 64, 48
    yy, xx = np.mgrid[0:h, 0:w]
    true = np.array([[20.3, 30.7], [10.8, 12.2]])
    hm = np.stack([np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0 ** 2)) for x, y in true])[None]
    plain, _ = T.decode_heatmap(hm, dark=False)
    dark, vals = T.decode_heatmap(hm, dark=True)
    assert np.abs(dark[0] - true).max() < 0.1 < np.abs(plain[0] - true).max()


def test_predict_on_coco_boxes(scene, models):
    d, coco = scene
    ds = Persons.from_coco(coco)
    cv2_threads = cv2.getNumThreads()
    preds = predict(PoseModel.load(models["simcc"]), jobs_from_coco(ds, d / "images"), batch_size=5)
    assert cv2.getNumThreads() == cv2_threads  # OpenCV's process-wide setting is given back
    expected = [a["id"] for a in coco["annotations"] if not a["iscrowd"]]
    assert sorted(preds.ann_ids.tolist()) == sorted(expected)
    assert preds.keypoints.shape == (len(expected), 37, 3) and preds.predicted
    res = preds.to_results()
    assert {"image_id", "category_id", "keypoints", "score", "annotation_id", "person_box"} <= set(res[0])
    assert len(res[0]["keypoints"]) == 111
    # the instance score is the mean of the confidences above 0.2
    c = preds.keypoints[0, :, 2]
    assert preds.scores[0] == pytest.approx(c[c > 0.2].mean() if (c > 0.2).any() else 0.0)


def test_batching_layout_and_fixed_batch_do_not_change_results(scene, models):
    d, coco = scene
    jobs = jobs_from_coco(Persons.from_coco(coco), d / "images")
    ref = predict(PoseModel.load(models["simcc"]), jobs, batch_size=1)
    for name, bs in (("simcc", 64), ("nhwc", 7), ("batch1", 16)):
        p = predict(PoseModel.load(models[name]), jobs, batch_size=bs)
        assert np.array_equal(p.keypoints, ref.keypoints), name


def test_rgb_option_swaps_the_channels(scene, models):
    d, coco = scene
    jobs = jobs_from_coco(Persons.from_coco(coco), d / "images")
    m = PoseModel.load(models["simcc"])
    assert not np.array_equal(predict(m, jobs, rgb=True).keypoints, predict(m, jobs).keypoints)


def test_heatmap_models_run(scene, models):
    d, coco = scene
    p = predict(PoseModel.load(models["heatmap"]), jobs_from_coco(Persons.from_coco(coco), d / "images"))
    assert np.isfinite(p.keypoints).all() and len(p) == sum(1 for a in coco["annotations"] if not a["iscrowd"])


def test_detector_boxes(tmp_path, scene, models):
    d, coco = scene
    det = detector_model(tmp_path / "det.onnx", np.array([[10, 20, 110, 220, 0.9], [0, 0, 5, 5, 0.1],
                                                          [50, 50, 90, 150, 0.8]]), np.array([0, 0, 2]))
    detector = Detector.load(det)
    img = np.zeros((480, 640, 3), np.uint8)
    boxes, scores = detector(img)
    assert np.allclose(boxes, [[10, 20, 100, 200]]) and np.allclose(scores, [0.9])
    img2 = np.zeros((960, 1280, 3), np.uint8)  # letterboxed by 0.5: boxes scale back by 2
    assert np.allclose(detector(img2)[0], [[20, 40, 200, 400]])
    preds = predict(PoseModel.load(models["simcc"]), jobs_from_folder(d / "images"), detector=detector)
    assert len(preds) == len(coco["images"]) and (preds.ann_ids < 0).all()
    assert np.allclose(preds.scores, 0.9 * np.array([c[c > 0.2].mean() if (c > 0.2).any() else 0
                                                     for c in preds.keypoints[..., 2]]))
    assert list(preds.images["file_name"]) == [im["file_name"] for im in coco["images"]]
    assert (preds.images["width"] > 0).all()  # the sizes as read


@pytest.fixture(scope="module")
def spinepose(spinepose_package):
    return spinepose_package.RTMPose


def test_same_keypoints_as_the_spinepose_package(scene, models, spinepose):
    import cv2

    d, coco = scene
    ds = Persons.from_coco(coco)
    jobs = jobs_from_coco(ds, d / "images")
    ours = predict(PoseModel.load(models["simcc"]), jobs, batch_size=8)
    ref_kp, ref_sc = [], []
    tool = spinepose(onnx_model=str(models["simcc"]), model_input_size=(192, 256))
    for path, job in jobs:
        img = cv2.imread(str(path))
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in job.boxes]
        kp, sc = tool(img, xyxy)
        ref_kp.append(kp)
        ref_sc.append(sc)
    ref_kp, ref_sc = np.concatenate(ref_kp), np.concatenate(ref_sc)
    valid = ref_sc > 0
    assert valid.mean() > 0.3  # the random model leaves some invalid (score <= 0) points, as real ones do
    assert np.abs(ours.keypoints[..., :2][valid] - ref_kp[valid]).max() < 1e-3
    assert np.abs(ours.keypoints[..., 2] - ref_sc).max() < 1e-4


def test_cli_predict(tmp_path, scene, models):
    d, coco = scene
    out = tmp_path / "pred.json"
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "predict", "--model", str(models["simcc"]),
                        "--images", str(d / "images"), "--boxes", str(d / "gt.json"), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(out.read_text())) == sum(1 for a in coco["annotations"] if not a["iscrowd"])
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "predict", "--model", str(tmp_path / "x.onnx"),
                        "--images", str(d / "images"), "--boxes", str(d / "gt.json"), "--out", str(tmp_path / "o.json")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "model file not found" in r.stderr and not (tmp_path / "o.json").exists()
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "predict", "--model", str(models["simcc"]),
                        "--images", str(d / "images"), "--out", str(tmp_path / "o.json")], capture_output=True, text=True)
    assert r.returncode == 2 and "exactly one of --boxes and --detector" in r.stderr
