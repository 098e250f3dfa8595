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
    flag(load_coco(d / "gt.json").persons).write_json(d / "flag.json")
    preds = [{"image_id": a["image_id"], "category_id": 1, "annotation_id": a["id"], "score": 0.9,
              "keypoints": [v + (1.5 if i % 3 == 0 else 0) if i % 3 < 2 else 0.8 for i, v in enumerate(a["keypoints"])]}
             for a in coco["annotations"]]
    write_json(d / "pred.json", preds)
    return d, coco, truth


def test_build_reads_back(fo_env, scene):
    from spinetrack_tools.browse import build

    d, coco, truth = scene
    ds = load_coco(d / "gt.json").persons
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


def _comparable(x):
    """A label or sample document without its ids, timestamps and random key; NaN as None."""
    if isinstance(x, dict):
        return {k: _comparable(v) for k, v in x.items()
                if k not in ("_id", "id", "created_at", "last_modified_at", "_rand", "_dataset_id")}
    if isinstance(x, list):
        return [_comparable(v) for v in x]
    return None if isinstance(x, float) and np.isnan(x) else x


def _field_types(dataset) -> dict:
    schema = {**dataset.get_field_schema(flat=True), **dataset.get_dynamic_field_schema()}
    return {k: (type(f).__name__, getattr(f, "document_type", None)) for k, f in schema.items()}


def test_bulk_documents_match_fiftyone_objects(fo_env, scene):
    """The documents written in bulk are what fo.Sample / fo.Keypoint / fo.Detection and add_samples make
    of the same labels: same stored values (NaN points, visibility, attributes), same schema."""
    import fiftyone as fo

    from spinetrack_tools.browse import build
    from spinetrack_tools.evaluate import oks

    d, coco, _ = scene
    hidden = max(coco["annotations"], key=lambda a: a["keypoints"][2::3].count(0))  # with v=0 points
    im = next(im for im in coco["images"] if im["id"] == hidden["image_id"])
    W, H = im["width"], im["height"]
    fast = build(load_coco(d / "gt.json").persons, d / "images", [d / "pred.json"], [d / "flag.json"], name="t-bulk",
                 sample_fields={im["id"]: {"al_round": 2, "al_status": "labelled", "none": None}},
                 echo=lambda s: None)
    got = fo.load_dataset("t-bulk").match({"coco_id": im["id"]}).first()
    sk = load_coco(d / "gt.json").persons.skeleton
    report = [f for f in json.loads((d / "flag.json").read_text())["findings"] if f["severity"] != "info"]
    preds = {p["annotation_id"]: p for p in json.loads((d / "pred.json").read_text())}
    kps, dets, pks, found = [], [], [], []
    tags = {f["check"] for f in report if f.get("annotation_id") is None and f.get("image_id") == im["id"]}
    for a in (a for a in coco["annotations"] if a["image_id"] == im["id"]):
        kp = np.array(a["keypoints"], dtype=float).reshape(-1, 3)
        mine = [f for f in report if f.get("annotation_id") == a["id"]]
        severity = "error" if any(f["severity"] == "error" for f in mine) else ("warning" if mine else "")
        attrs = {"coco_id": a["id"], "findings": sorted({f["check"] for f in mine}), "severity": severity}
        tags.update(attrs["findings"])
        points = [(x / W, y / H) if v > 0 else (np.nan, np.nan) for x, y, v in kp]
        kps.append(fo.Keypoint(label="person", points=points, visible=kp[:, 2].astype(int).tolist(), **attrs))
        x, y, w, h = a["bbox"]
        dets.append(fo.Detection(label="person", bounding_box=[x / W, y / H, w / W, h / H], **attrs))
        pk = np.array(preds[a["id"]]["keypoints"], dtype=float).reshape(-1, 3)
        found.append(float(oks(kp[None], pk[None], np.array([a["area"]]), sk.sigmas)[0]))
        pks.append(fo.Keypoint(label="person", points=[(x / W, y / H) for x, y, _ in pk],
                               confidence=pk[:, 2].tolist(), oks=found[-1], gt_id=a["id"], score=0.9))
    ref = fo.Dataset()
    try:
        ref.add_samples([fo.Sample(filepath=got.filepath, metadata=fo.ImageMetadata(width=W, height=H),
                                   coco_id=im["id"], tags=sorted(tags), gt_keypoints=fo.Keypoints(keypoints=kps),
                                   gt_boxes=fo.Detections(detections=dets), pred_pred=fo.Keypoints(keypoints=pks),
                                   pred_pred_min_oks=min(found), al_round=2, al_status="labelled")])
        want = ref.first()
        assert any(np.isnan(p[0]) for k in got.gt_keypoints.keypoints for p in k.points)  # v=0 points
        assert tags and any(k.findings for k in got.gt_keypoints.keypoints)
        assert _comparable(got.to_mongo_dict()) == _comparable(want.to_mongo_dict())
        assert _field_types(fast) == _field_types(ref)
        assert _field_types(fast)["gt_keypoints"] == ("EmbeddedDocumentField", fo.Keypoints)
        assert _field_types(fast)["gt_boxes"] == ("EmbeddedDocumentField", fo.Detections)
        assert type(got.metadata) is fo.ImageMetadata and got.gt_keypoints.keypoints[0].visible == kps[0].visible
        assert len(fast.take(5)) == 5 and len(fast.load_saved_view("round-2")) == 1
    finally:
        ref.delete()
        fast.delete()


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
