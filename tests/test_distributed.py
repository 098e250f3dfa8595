"""`predict` and the select stage of `al-round` on Ray Data: a real local Ray cluster (2 CPUs), real
onnxruntime sessions in its actors, compared exactly with the in-process path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spinetrack_tools import synth
from spinetrack_tools.inference.model import PoseModel, load_detector
from spinetrack_tools.inference.predict import jobs_from_coco, jobs_from_folder, predict
from spinetrack_tools.persons import Persons

from .conftest import write_json
from .onnx_models import detector_model, heatmap_model, rfdetr_model, rfdetr_tables, simcc_model

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.integration, pytest.mark.slow]
PHOTOS = Path(__file__).parent / "data" / "photos"


@pytest.fixture(scope="module")
def cluster():
    """A real local Ray cluster of 2 CPUs for this module (the actors import this checkout's package)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray_scene")
    coco = synth.generate(14, seed=5, image_dir=d / "images", fk="numpy")
    coco["annotations"][0]["iscrowd"] = 1
    write_json(d / "gt.json", coco)
    return d, coco


def same(a: Persons, b: Persons) -> None:
    """Exactly the same predictions in the same order, and the same images."""
    assert len(a) == len(b) > 0
    for name in ("keypoints", "image_ids", "ann_ids", "category_ids", "boxes", "scores"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    assert a.images.equals(b.images) and a.skeleton == b.skeleton
    assert a.to_results() == b.to_results()


def test_the_cli_predicts_the_same_file_with_ray(scene, tmp_path):
    """`spinetrack predict --ray` starts its own local cluster and writes the very file of the in-process run."""
    d, _ = scene
    model = simcc_model(tmp_path / "m.onnx")
    args = [sys.executable, "-m", "spinetrack_tools", "predict", "--model", model, "--images", d / "images",
            "--boxes", d / "gt.json", "--batch-size", "5"]
    r1 = subprocess.run([*map(str, args), "--out", str(tmp_path / "a.json")], capture_output=True, text=True)
    assert r1.returncode == 0, r1.stderr
    r2 = subprocess.run([*map(str, args), "--out", str(tmp_path / "b.json"), "--ray"], capture_output=True, text=True,
                        timeout=600)
    assert r2.returncode == 0, r2.stderr
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert r1.stdout == r2.stdout.replace("b.json", "a.json")


def test_a_bad_ray_address_is_one_line_exit_2(scene, tmp_path):
    d, _ = scene
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "predict", "--model",
                        str(simcc_model(tmp_path / "m.onnx")), "--images", str(d / "images"), "--boxes",
                        str(d / "gt.json"), "--out", str(tmp_path / "x.json"), "--ray-address", "127.0.0.1:1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "cannot connect to Ray at '127.0.0.1:1'" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("kind,threads,flip", [("simcc", 2, False), ("simcc", None, True), ("heatmap", None, False)])
def test_ray_predict_on_boxes_equals_in_process(cluster, scene, tmp_path, kind, threads, flip):
    """One actor of 2 threads, or the default two actors of 1 (the order kept across them), against the
    in-process path on 2 threads; several batches each."""
    from spinetrack_tools.inference.distributed import predict_ray

    d, coco = scene
    path = (simcc_model if kind == "simcc" else heatmap_model)(tmp_path / "m.onnx")
    model = PoseModel.load(path, 2)
    jobs = jobs_from_coco(Persons.from_coco(coco), d / "images")
    local = predict(model, jobs, batch_size=6, flip=flip)
    remote = predict_ray(model, jobs, batch_size=6, flip=flip, threads=threads)
    same(local, remote)


@pytest.mark.parametrize("which", ["rfdetr", "nms"])
def test_ray_predict_with_a_detector_equals_in_process(cluster, tmp_path, which):
    from spinetrack_tools.inference.distributed import predict_ray

    if which == "rfdetr":
        det_path = rfdetr_model(tmp_path / "det.onnx", *rfdetr_tables(), size=64)
    else:
        dets = np.array([[100, 80, 300, 500, 0.9], [350, 60, 560, 520, 0.8], [10, 10, 40, 40, 0.2]])
        det_path = detector_model(tmp_path / "det.onnx", dets, np.array([0, 0, 0]))
    detector = load_detector(det_path, 1)
    model = PoseModel.load(simcc_model(tmp_path / "m.onnx"), 2)
    jobs = jobs_from_folder(PHOTOS)
    local = predict(model, jobs, detector=detector, batch_size=3)
    same(local, predict_ray(model, jobs, detector=detector, batch_size=3))
    assert set(local.image_ids.tolist()) == {j.image_id for _, j in jobs}


@pytest.mark.parametrize("strategy", ["hybrid", "least_confidence"])
def test_the_select_stage_on_ray_picks_the_same_images(cluster, scene, tmp_path, strategy):
    """Two workspaces of the same pool: round 1's select stage in-process and on Ray pick the same images
    with the same scores (hybrid: the flipped pass too)."""
    from spinetrack_tools.active_learning.rounds import run_round
    from spinetrack_tools.active_learning.workspace import init

    d, _ = scene
    model = simcc_model(tmp_path / "m.onnx")
    runs = {}
    for where in (None, "local"):
        ws = init(tmp_path / f"ws_{where}", d / "images", boxes=d / "gt.json", model=model, strategy=strategy,
                  batch_size=4)
        assert run_round(ws, 1, until="select", echo=lambda s: None, ray_address=where)
        runs[where] = (ws.round_samples(1), json.loads((ws.round_dir(1) / "pool_pred.json").read_text()))
    assert len(runs[None][0]) == 4
    assert runs[None] == runs["local"]
