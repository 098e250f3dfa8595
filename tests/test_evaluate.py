"""`spinetrack evaluate` against pycocotools on random and edge-case data (every figure, every group)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from spinetrack_tools.evaluate import STAT_NAMES, evaluate
from spinetrack_tools.persons import Persons
from spinetrack_tools.skeleton import SPINETRACK37

from .conftest import write_json
from .references import pycocotools_reference

K = 37
GROUPS = ("overall", "body", "feet", "spine", "experimental")


def random_set(seed: int, n_img: int = 120, crowd: float = 0.05, empty: float = 0.05, bbox: bool = False):
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, n_img + 1):
        images.append({"id": i * 7, "width": 640, "height": 480, "file_name": f"{i}.jpg"})
        for _ in range(rng.poisson(2.0)):
            w, h = rng.uniform(8, 300, 2)
            x, y = rng.uniform(0, 300, 2)
            v = rng.choice([0, 1, 2], K, p=[0.2, 0.2, 0.6])
            if rng.random() < empty:
                v[:] = 0
            kp = np.stack([x + rng.uniform(0, w, K), y + rng.uniform(0, h, K), v], 1)
            kp[v == 0, :2] = 0
            anns.append({"id": len(anns) + 1, "image_id": i * 7, "category_id": 1, "bbox": [x, y, w, h],
                         "area": float(w * h * rng.uniform(0.4, 0.7)), "iscrowd": int(rng.random() < crowd),
                         "num_keypoints": int((v > 0).sum()), "keypoints": kp.ravel().tolist()})
            for c in range(int(rng.random() < 0.9) + rng.poisson(0.5)):
                s = (0.03 if c == 0 else 0.15) * max(w, h)
                d = np.stack([np.where(v > 0, kp[:, 0], x + w / 2) + rng.normal(0, s, K),
                              np.where(v > 0, kp[:, 1], y + h / 2) + rng.normal(0, s, K),
                              rng.uniform(0.01, 1, K)], 1)
                r = {"image_id": i * 7, "category_id": 1, "keypoints": d.ravel().tolist(),
                     "score": float(np.round(rng.uniform(), 2))}  # rounded: ties in score
                if bbox:
                    r["bbox"] = [x, y, w * rng.uniform(0.8, 1.2), h]
                dets.append(r)
        if rng.random() < 0.3:  # a false positive, sometimes in an image without people
            d = np.stack([rng.uniform(0, 640, K), rng.uniform(0, 480, K), rng.uniform(0.01, 1, K)], 1)
            dets.append({"image_id": i * 7, "category_id": 1, "keypoints": d.ravel().tolist(),
                         "score": float(rng.uniform()), **({"bbox": [10.0, 10.0, 50.0, 80.0]} if bbox else {})})
    return {"images": images, "annotations": anns, "categories": [SPINETRACK37.to_category()]}, dets


def reference(gt: dict, dets: list[dict], group: str) -> np.ndarray:
    return pycocotools_reference(gt, dets, SPINETRACK37.groups[group], SPINETRACK37.sigmas)


def ours(gt: dict, dets: list[dict], **kw) -> dict:
    return evaluate(Persons.from_coco(gt), Persons.from_results(dets, SPINETRACK37), groups=GROUPS, **kw)


def assert_same(gt: dict, dets: list[dict]) -> None:
    res = ours(gt, dets, drop_unscored=False)
    for g in GROUPS:
        mine = np.array([res[g][n] for n in STAT_NAMES])
        assert np.abs(mine - reference(gt, dets, g)).max() < 1e-9, g


@pytest.mark.parametrize("seed", range(4))
def test_identical_to_pycocotools_on_random_data(seed):
    assert_same(*random_set(seed))


def test_identical_with_bbox_in_results_and_heavy_crowds():
    assert_same(*random_set(11, crowd=0.3, empty=0.2, bbox=True))


def test_edge_cases():
    gt, dets = random_set(5, n_img=40)
    assert_same(gt, [])  # no predictions at all
    assert_same(gt, [d for d in dets if d["image_id"] % 2 == 0])  # images without predictions
    perfect = [{"image_id": a["image_id"], "category_id": 1, "score": 1.0,
                "keypoints": [v if (i % 3) < 2 else 1.0 for i, v in enumerate(a["keypoints"])]}
               for a in gt["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    assert_same(gt, perfect)
    res = ours(gt, perfect, drop_unscored=False)
    assert res["overall"]["AP"] == pytest.approx(1.0)
    many = [dict(d, score=float(s)) for d in dets[:5] for s in np.linspace(0, 1, 30)]  # > maxDets per image
    assert_same(gt, many)


def test_unscored_detections_are_dropped_as_xtcocotools_does():
    gt, dets = random_set(2, n_img=30)
    for d in dets[::3]:
        d["keypoints"] = [v if (i % 3) < 2 else 0.0 for i, v in enumerate(d["keypoints"])]
    kept = [d for d in dets if any(v > 0 for v in d["keypoints"][2::3])]
    a = ours(gt, dets, drop_unscored=True)
    b = ours(gt, kept, drop_unscored=False)
    assert a == b


def test_unknown_images_and_groups_are_errors():
    gt, dets = random_set(1, n_img=5)
    with pytest.raises(ValueError, match="not in the ground truth"):
        ours(gt, dets + [dict(dets[0], image_id=999999)])
    with pytest.raises(ValueError, match="unknown keypoint group"):
        evaluate(Persons.from_coco(gt), Persons.from_results(dets, SPINETRACK37), groups=["arms"])
    gt["annotations"][0].pop("area")
    with pytest.raises(ValueError, match="has no 'area'"):
        ours(gt, dets)


def test_cli_evaluate(tmp_path):
    gt, dets = random_set(3, n_img=30)
    g = write_json(tmp_path / "gt.json", gt)
    p = write_json(tmp_path / "pred.json", dets)
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "evaluate", "--gt", str(g), "--pred", str(p),
                        "--json", str(tmp_path / "m.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    assert set(m) == {"overall", "body", "feet", "spine"} and set(m["spine"]) == set(STAT_NAMES)
    assert "spine" in r.stdout and "AP50" in r.stdout
    (tmp_path / "bad.json").write_text(json.dumps([{"image_id": 7, "score": 1, "keypoints": [1, 2, 3]}]))
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "evaluate", "--gt", str(g), "--pred",
                        str(tmp_path / "bad.json")], capture_output=True, text=True)
    assert r.returncode == 2 and "111 keypoint numbers" in r.stderr and "Traceback" not in r.stderr
