"""COCO <-> Label Studio conversion (no server): exact inverses, checked with hypothesis, and the
labeling config kept in sync with the skeleton."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from label_studio_sdk.label_interface import LabelInterface

from spinetrack_tools.labelstudio.config import CONFIG_PATH, labeling_config
from spinetrack_tools.io import MISSING_ID
from spinetrack_tools.labelstudio.convert import edits, from_labelstudio, from_result, to_labelstudio, to_result
from spinetrack_tools.persons import Persons, images_table
from spinetrack_tools.skeleton import COCO17, SPINETRACK37

K = SPINETRACK37.num_keypoints


def people(boxes, keypoints, ann_ids=None, w=640, h=480, image_id=3, **kw) -> Persons:
    """Persons of one image."""
    n = len(boxes)
    img = images_table([{"id": image_id, "file_name": "x.jpg", "width": w, "height": h}])
    return Persons.build(SPINETRACK37, np.asarray(keypoints, float).reshape(n, K, 3), np.full(n, image_id),
                         ann_ids=ann_ids, boxes=np.asarray(boxes, float).reshape(n, 4), images=img, **kw)


def regions(p: Persons, w=640, h=480) -> list:
    return to_result(p, range(len(p)), w, h)


def test_the_config_in_annotation_is_the_generated_one():
    assert CONFIG_PATH.read_text() == labeling_config(), "run: spinetrack labelstudio config > annotation/labeling_config.xml"


def test_config_has_one_label_per_joint_with_index_and_unique_hotkeys():
    li = LabelInterface(labeling_config())
    kp = li.get_control("kp")
    assert list(kp.labels) == list(SPINETRACK37.names)
    xml = labeling_config()
    assert all(f'model_index="{i}"' in xml for i in range(K))
    keys = [seg.split('"')[0] for seg in xml.split('hotkey="')[1:]]
    assert len(keys) == K == len(set(keys))
    assert 'rotateControl="false"' in xml and "maxUsages" not in xml
    assert LabelInterface(labeling_config(COCO17)).get_control("kp").labels == list(COCO17.names)


@st.composite
def images(draw):
    """A multi-person image: float coordinates, v in {0, 1, 2}, and model confidences for the same points."""
    w = draw(st.integers(64, 4000))
    h = draw(st.integers(64, 4000))
    n = draw(st.integers(0, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    boxes, kps = [], []
    for i in range(n):
        bw, bh = rng.uniform(1, w), rng.uniform(1, h)
        bx, by = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        v = rng.choice([0, 1, 2], K)
        kp = np.stack([bx + rng.uniform(0, bw, K), by + rng.uniform(0, bh, K), v], 1)
        kp[v == 0, :2] = 0
        boxes.append([bx, by, bw, bh])
        kps.append(kp)
    labels = people(np.array(boxes).reshape(n, 4), np.array(kps).reshape(n, K, 3), 1000 + np.arange(n), w, h,
                    areas=np.array(boxes).reshape(n, 4)[:, 2:].prod(1) * 0.6)
    conf = labels.keypoints.copy()
    conf[..., 2] = np.where(conf[..., 2] > 0, rng.uniform(0.01, 1, conf.shape[:2]), rng.uniform(-1, 0, conf.shape[:2]))
    preds = people(labels.boxes, conf, labels.ann_ids, w, h, scores=rng.uniform(0, 1, n), predicted=True)
    return w, h, labels, preds


@settings(max_examples=60, deadline=None)
@given(images())
def test_result_round_trip_is_exact(img):
    w, h, labels, preds = img
    back, findings = from_result(regions(labels, w, h), w, h, where=(1, 3))
    assert findings == []
    assert np.array_equal(back.ann_ids, labels.ann_ids) and np.array_equal(back.image_ids, labels.image_ids)
    assert np.array_equal(back.keypoints[..., 2], labels.keypoints[..., 2])
    assert np.allclose(back.keypoints[..., :2], labels.keypoints[..., :2], rtol=0, atol=1e-9)
    assert np.allclose(back.boxes, labels.boxes, rtol=0, atol=1e-9)
    # predictions: the points with a positive confidence, each region scored with it, the person too
    res = regions(preds, w, h)
    shown, _ = from_result(res, w, h)
    assert np.array_equal(shown.keypoints[..., 2] > 0, preds.keypoints[..., 2] > 0)
    scores = [r["score"] for r in res if r["type"] == "keypointlabels"]
    assert np.allclose(scores, np.clip(preds.keypoints[..., 2][preds.keypoints[..., 2] > 0], 0, 1))
    assert [r["score"] for r in res if r["type"] == "rectanglelabels"] == pytest.approx(preds.scores.tolist())


@settings(max_examples=30, deadline=None)
@given(st.lists(images(), min_size=1, max_size=4))
def test_coco_round_trip_through_tasks(imgs):
    coco = {"images": [], "annotations": [], "categories": [SPINETRACK37.to_category()]}
    aid = 1
    for i, (w, h, labels, _) in enumerate(imgs):
        coco["images"].append({"id": i + 1, "file_name": f"{i + 1:06d}.jpg", "width": w, "height": h})
        for r in range(len(labels)):
            kp = labels.keypoints[r]
            coco["annotations"].append({"id": aid, "image_id": i + 1, "category_id": 1,
                                        "bbox": labels.boxes[r].tolist(), "area": float(labels.areas[r]),
                                        "iscrowd": 0, "num_keypoints": int((kp[:, 2] > 0).sum()),
                                        "keypoints": [float(x) if j % 3 < 2 else int(x)
                                                      for j, x in enumerate(kp.ravel())]})
            aid += 1
    tasks = to_labelstudio(Persons.from_coco(coco))
    for t in tasks:  # the annotator accepts the pre-annotation as it is
        t["annotations"] = [{"id": 1, "result": copy.deepcopy(t["predictions"][0]["result"]), "was_cancelled": False}]
    persons, findings = from_labelstudio(tasks)
    back = persons.to_coco()
    assert findings == []
    assert back["images"] == coco["images"]
    assert len(back["annotations"]) == len(coco["annotations"])
    for a, b in zip(coco["annotations"], back["annotations"]):
        assert {k: b[k] for k in ("id", "image_id", "category_id", "area", "iscrowd", "num_keypoints")} == \
               {k: a[k] for k in ("id", "image_id", "category_id", "area", "iscrowd", "num_keypoints")}
        assert np.allclose(b["keypoints"], a["keypoints"], rtol=0, atol=1e-9)
        assert np.allclose(b["bbox"], a["bbox"], rtol=0, atol=1e-9)


def _task(persons, w=640, h=480):
    return {"id": 7, "data": {"image_id": 3, "file_name": "x.jpg", "width": w, "height": h, "persons": {}},
            "predictions": [{"result": regions(persons, w, h)}]}


def test_keypoints_without_parent_go_to_the_box_that_contains_them_or_become_findings():
    kp = np.zeros((K, 3))
    kp[0] = (50, 50, 2)
    result = regions(people([[10, 10, 100, 100], [300, 300, 100, 100]], [kp, np.zeros((K, 3))], [1, 2]))
    orphan = [r for r in result if r["type"] == "keypointlabels"][0]
    del orphan["parentID"]
    lost = copy.deepcopy(orphan)
    lost["id"], lost["value"] = "x1", dict(lost["value"], x=90.0, y=90.0, keypointlabels=["left_eye"])
    persons, findings = from_result(result + [lost], 640, 480, where=(7, 3))
    assert persons.keypoints[0, 0, 2] == 2 and np.allclose(persons.keypoints[0, 0, :2], (50, 50))
    assert [f.check for f in findings] == ["ls_ungrouped_keypoint"]
    assert findings[0].image_id == 3 and findings[0].keypoints == ["left_eye"] and "task 7" in findings[0].message


def test_duplicate_joints_and_unknown_labels_are_findings():
    kp = np.zeros((K, 3))
    kp[5] = (20, 20, 2)
    result = regions(people([[0, 0, 100, 100]], [kp], [1]))
    dup = copy.deepcopy(result[1])
    dup["id"] = "dup"
    bad = copy.deepcopy(result[1])
    bad["id"], bad["value"]["keypointlabels"] = "bad", ["tail"]
    persons, findings = from_result(result + [dup, bad], 640, 480)
    assert sorted(f.check for f in findings) == ["ls_duplicate_keypoint", "ls_unknown_label"]


def test_latest_non_cancelled_annotation_wins_and_new_persons_get_new_ids():
    kp = np.zeros((K, 3))
    kp[3] = (30, 40, 1)
    task = to_labelstudio(people([[0, 0, 100, 100]], [kp], [9], areas=[5000.0]))[0]
    res = task["predictions"][0]["result"]
    newp = regions(people([[200, 200, 50, 50]], [kp], [MISSING_ID]))
    task["annotations"] = [
        {"id": 1, "result": res, "updated_at": "2026-01-01T00:00:00Z", "was_cancelled": False},
        {"id": 2, "result": res + newp, "updated_at": "2026-01-02T00:00:00Z", "was_cancelled": False},
        {"id": 3, "result": [], "updated_at": "2026-01-03T00:00:00Z", "was_cancelled": True},
    ]
    persons, _ = from_labelstudio([task])
    coco = persons.to_coco()
    assert [a["id"] for a in coco["annotations"]] == [9, 10]
    assert coco["annotations"][0]["area"] == 5000.0 and abs(coco["annotations"][1]["area"] - 2500.0) < 1e-9
    assert coco["annotations"][0]["keypoints"][3 * 3 + 2] == 1


def test_edits_report_kept_moved_added_removed():
    kp = np.zeros((K, 3))
    kp[0] = (100, 100, 2)
    kp[1] = (110, 100, 2)
    task = _task(people([[0, 0, 200, 200]], [kp], [1]))
    result = copy.deepcopy(task["predictions"][0]["result"])
    moved = next(r for r in result if r.get("value", {}).get("keypointlabels") == ["nose"])
    moved["value"]["x"] += 100 * 3 / 640  # 3 px to the right
    moved["origin"] = "prediction-changed"
    result = [r for r in result if r.get("value", {}).get("keypointlabels") != ["left_eye"]]
    added = regions(people([[0, 0, 200, 200]], [np.where(np.arange(K)[:, None] == 2, [[5, 5, 2]], 0)], [1]))[1]
    task["annotations"] = [{"id": 1, "result": result + [added], "was_cancelled": False}]
    by = {e["keypoint"]: e for e in edits(task)}
    assert by["nose"]["edit"] == "moved" and abs(by["nose"]["distance_px"] - 3) < 1e-9
    assert by["nose"]["origin"] == "prediction-changed"
    assert by["left_eye"]["edit"] == "removed" and by["right_eye"]["edit"] == "added"


def test_every_annotator_counts_with_their_latest_annotation_and_the_review_decision():
    from spinetrack_tools.labelstudio.convert import annotations_of, review_decision

    kp = np.zeros((K, 3))
    kp[0] = (50, 50, 2)
    task = to_labelstudio(people([[0, 0, 100, 100]], [kp], [4]))[0]
    res = task["predictions"][0]["result"]
    moved = copy.deepcopy(res)
    next(r for r in moved if r["type"] == "keypointlabels")["value"]["x"] += 100 * 4 / 640

    def review(choice):
        return [{"id": "rv", "from_name": "review", "to_name": "image", "type": "choices",
                 "value": {"choices": [choice]}}]

    task["annotations"] = [
        {"id": 1, "completed_by": 7, "result": res, "updated_at": "2026-01-01T00:00:00Z", "was_cancelled": False},
        {"id": 2, "completed_by": 9, "result": moved + review("needs fixing"), "updated_at": "2026-01-02T00:00:00Z",
         "was_cancelled": False},
        {"id": 3, "completed_by": 7, "result": res + review("plausible as drawn"),
         "updated_at": "2026-01-03T00:00:00Z", "was_cancelled": False},
        {"id": 4, "completed_by": 9, "result": [], "updated_at": "2026-01-04T00:00:00Z", "was_cancelled": True},
    ]
    assert [a["id"] for a in annotations_of(task)] == [3, 2]
    choice, ann = review_decision(task)
    assert choice == "plausible as drawn" and ann["id"] == 3
    persons, findings = from_labelstudio([task])
    assert findings == [] and len(persons) == 2 and persons.attrs["annotator"].tolist() == [7, 9]
    assert persons.attrs["ls_annotation"].tolist() == [3, 2] and persons.ann_ids.tolist() == [4, 4]
    assert abs(persons.keypoints[1, 0, 0] - persons.keypoints[0, 0, 0] - 4) < 1e-9
    by = {(e["annotator"], e["keypoint"]): e for e in edits(task)}
    assert by[(7, "nose")]["edit"] == "kept" and by[(9, "nose")]["edit"] == "moved"
    assert abs(by[(9, "nose")]["distance_px"] - 4) < 1e-9
