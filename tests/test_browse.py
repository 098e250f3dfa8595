"""`spinetrack browse`: a real FiftyOne database (a private one for the tests) and the App in headless
Chromium, with a screenshot kept in test-artifacts/."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from spinetrack_tools import synth
from spinetrack_tools.coco import load_coco
from spinetrack_tools.quality import flag

from .conftest import write_json

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def fo_env(tmp_path_factory):
    pytest.importorskip("fiftyone")
    db = tmp_path_factory.mktemp("fiftyone_db")
    old = {k: os.environ.get(k) for k in ("FIFTYONE_DATABASE_DIR", "FIFTYONE_DO_NOT_TRACK")}
    os.environ["FIFTYONE_DATABASE_DIR"] = str(db)
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    yield db
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("browse")
    coco, truth = synth.corrupt(synth.generate(12, seed=2, persons_per_image=(2, 3), image_dir=d / "images",
                                               fk="numpy"), 0.3, seed=3)
    write_json(d / "gt.json", coco)
    flag(load_coco(d / "gt.json")).write_json(d / "flag.json")
    preds = [{"image_id": a["image_id"], "category_id": 1, "annotation_id": a["id"], "score": 0.9,
              "keypoints": [v + (1.5 if i % 3 == 0 else 0) if i % 3 < 2 else 0.8 for i, v in enumerate(a["keypoints"])]}
             for a in coco["annotations"]]
    write_json(d / "pred.json", preds)
    return d, coco, truth


def test_build_reads_back(fo_env, scene):
    from spinetrack_tools.browse import build

    d, coco, truth = scene
    ds = load_coco(d / "gt.json")
    dataset = build(ds, d / "images", [d / "pred.json"], [d / "flag.json"], name="t-build", echo=lambda s: None)
    import fiftyone as fo

    again = fo.load_dataset("t-build")  # persistent, readable from a fresh handle
    assert len(again) == len(coco["images"])
    assert again.count("gt_keypoints.keypoints") == len(coco["annotations"])
    assert again.count("gt_boxes.detections") == len(coco["annotations"])
    sk = again.default_skeleton
    assert sk.labels[26] == "spine_01" and [19, 26, 27, 28, 29, 30, 18, 35, 36] in sk.edges
    flagged = {f["annotation_id"] for f in json.loads((d / "flag.json").read_text())["findings"]
               if f["severity"] != "info"}
    tagged = set(again.distinct("tags"))
    assert tagged and tagged <= {f["check"] for f in json.loads((d / "flag.json").read_text())["findings"]}
    ids_with_findings = {kp.coco_id for s in again for kp in s.gt_keypoints.keypoints if kp.findings}
    assert ids_with_findings == flagged
    # visibility kept; v=0 points are NaN
    a = coco["annotations"][0]
    s = again.match({"coco_id": a["image_id"]}).first()
    kp = next(k for k in s.gt_keypoints.keypoints if k.coco_id == a["id"])
    v = np.array(a["keypoints"]).reshape(-1, 3)[:, 2]
    assert kp.visible == v.astype(int).tolist()
    assert all(np.isnan(p[0]) for p, vv in zip(kp.points, v) if vv == 0)
    # predictions: confidence per point and OKS against the ground-truth person
    pk = s.pred_pred.keypoints[0]
    assert len(pk.confidence) == 37 and 0.5 < pk.oks < 1.0 and pk.gt_id is not None
    assert set(again.list_saved_views()) >= {"flagged", "worst-oks"}
    assert len(again.load_saved_view("flagged")) == len(again.match_tags(list(tagged)))
    dataset.delete()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_renders_the_dataset_in_headless_chromium(fo_env, scene, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    d, coco, _ = scene
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "spinetrack_tools", "browse", str(d / "gt.json"), "--images",
                             str(d / "images"), "--pred", str(d / "pred.json"), "--name", "t-app", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        url = f"http://127.0.0.1:{port}/datasets/t-app"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(proc.stdout.read().decode())
                time.sleep(1)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "fiftyone_app.png"
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,900", "--virtual-time-budget=20000"]
        subprocess.run([chromium, *flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)
        dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        assert shot.is_file() and shot.stat().st_size > 20000
        assert "t-app" in dom and "gt_keypoints" in dom
    finally:
        proc.terminate()
        proc.wait(30)
