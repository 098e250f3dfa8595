"""COCO <-> Label Studio conversion (no server): exact inverses, checked with hypothesis, and the
labeling config kept in sync with the skeleton."""

from __future__ import annotations

import copy

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from label_studio_sdk.label_interface import LabelInterface

from spinetrack_tools.labelstudio.config import CONFIG_PATH, labeling_config
from spinetrack_tools.labelstudio.convert import Person, edits, from_labelstudio, from_result, to_labelstudio, to_result
from spinetrack_tools.skeleton import COCO17, SPINETRACK37

K = SPINETRACK37.num_keypoints


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
    """A multi-person image: float coordinates, v in {0, 1, 2}, optional per-keypoint scores."""
    w = draw(st.integers(64, 4000))
    h = draw(st.integers(64, 4000))
    n = draw(st.integers(0, 4))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    persons = []
    for i in range(n):
        bw, bh = rng.uniform(1, w), rng.uniform(1, h)
        bx, by = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        v = rng.choice([0, 1, 2], K)
        kp = np.stack([bx + rng.uniform(0, bw, K), by + rng.uniform(0, bh, K), v], 1)
        kp[v == 0, :2] = 0
        persons.append(Person(1000 + i, np.array([bx, by, bw, bh]), kp, rng.uniform(0, 1, K), float(rng.uniform()),
                              float(bw * bh * 0.6), 0, 1))
    return w, h, persons


@settings(max_examples=60, deadline=None)
@given(images())
def test_result_round_trip_is_exact(img):
    w, h, persons = img
    back, findings = from_result(to_result(persons, w, h), w, h)
    assert findings == []
    assert len(back) == len(persons)
    for a, b in zip(persons, back):
        assert b.annotation_id == a.annotation_id
        assert np.array_equal(b.keypoints[:, 2], a.keypoints[:, 2])
        assert np.allclose(b.keypoints[:, :2], a.keypoints[:, :2], rtol=0, atol=1e-9)
        assert np.allclose(b.box, a.box, rtol=0, atol=1e-9)
        lab = a.keypoints[:, 2] > 0
        assert np.array_equal(b.keypoint_scores[lab], a.keypoint_scores[lab]) and b.score == a.score


@settings(max_examples=30, deadline=None)
@given(st.lists(images(), min_size=1, max_size=4))
def test_coco_round_trip_through_tasks(imgs):
    coco = {"images": [], "annotations": [], "categories": [SPINETRACK37.to_category()]}
    aid = 1
    for i, (w, h, persons) in enumerate(imgs):
        coco["images"].append({"id": i + 1, "file_name": f"{i + 1:06d}.jpg", "width": w, "height": h})
        for p in persons:
            coco["annotations"].append({"id": aid, "image_id": i + 1, "category_id": 1,
                                        "bbox": p.box.tolist(), "area": p.area, "iscrowd": 0,
                                        "num_keypoints": int((p.keypoints[:, 2] > 0).sum()),
                                        "keypoints": [float(x) if j % 3 < 2 else int(x)
                                                      for j, x in enumerate(p.keypoints.ravel())]})
            aid += 1
    tasks = to_labelstudio(coco)
    for t in tasks:  # the annotator accepts the pre-annotation as it is
        t["annotations"] = [{"id": 1, "result": copy.deepcopy(t["predictions"][0]["result"]), "was_cancelled": False}]
    back, findings = from_labelstudio(tasks)
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
            "predictions": [{"result": to_result(persons, w, h)}]}


def test_keypoints_without_parent_go_to_the_box_that_contains_them_or_become_findings():
    kp = np.zeros((K, 3))
    kp[0] = (50, 50, 2)
    p1 = Person(1, np.array([10, 10, 100, 100]), kp.copy())
    p2 = Person(2, np.array([300, 300, 100, 100]), np.zeros((K, 3)))
    result = to_result([p1, p2], 640, 480)
    orphan = [r for r in result if r["type"] == "keypointlabels"][0]
    del orphan["parentID"]
    lost = copy.deepcopy(orphan)
    lost["id"], lost["value"] = "x1", dict(lost["value"], x=90.0, y=90.0, keypointlabels=["left_eye"])
    persons, findings = from_result(result + [lost], 640, 480, where=(7, 3))
    assert persons[0].keypoints[0, 2] == 2 and np.allclose(persons[0].keypoints[0, :2], (50, 50))
    assert [f.check for f in findings] == ["ls_ungrouped_keypoint"]
    assert findings[0].image_id == 3 and findings[0].keypoints == ["left_eye"] and "task 7" in findings[0].message


def test_duplicate_joints_and_unknown_labels_are_findings():
    kp = np.zeros((K, 3))
    kp[5] = (20, 20, 2)
    result = to_result([Person(1, np.array([0, 0, 100, 100]), kp)], 640, 480)
    dup = copy.deepcopy(result[1])
    dup["id"] = "dup"
    bad = copy.deepcopy(result[1])
    bad["id"], bad["value"]["keypointlabels"] = "bad", ["tail"]
    persons, findings = from_result(result + [dup, bad], 640, 480)
    assert sorted(f.check for f in findings) == ["ls_duplicate_keypoint", "ls_unknown_label"]


def test_latest_non_cancelled_annotation_wins_and_new_persons_get_new_ids():
    kp = np.zeros((K, 3))
    kp[3] = (30, 40, 1)
    task = to_labelstudio({"images": [{"id": 3, "file_name": "x.jpg", "width": 640, "height": 480}],
                           "annotations": [{"id": 9, "image_id": 3, "bbox": [0, 0, 100, 100], "area": 5000.0,
                                            "keypoints": kp.ravel().tolist(), "iscrowd": 0, "category_id": 1}]})[0]
    res = task["predictions"][0]["result"]
    newp = to_result([Person(None, np.array([200, 200, 50, 50]), kp)], 640, 480)
    task["annotations"] = [
        {"id": 1, "result": res, "updated_at": "2026-01-01T00:00:00Z", "was_cancelled": False},
        {"id": 2, "result": res + newp, "updated_at": "2026-01-02T00:00:00Z", "was_cancelled": False},
        {"id": 3, "result": [], "updated_at": "2026-01-03T00:00:00Z", "was_cancelled": True},
    ]
    coco, _ = from_labelstudio([task])
    assert [a["id"] for a in coco["annotations"]] == [9, 10]
    assert coco["annotations"][0]["area"] == 5000.0 and abs(coco["annotations"][1]["area"] - 2500.0) < 1e-9
    assert coco["annotations"][0]["keypoints"][3 * 3 + 2] == 1


def test_edits_report_kept_moved_added_removed():
    kp = np.zeros((K, 3))
    kp[0] = (100, 100, 2)
    kp[1] = (110, 100, 2)
    task = _task([Person(1, np.array([0, 0, 200, 200]), kp)])
    result = copy.deepcopy(task["predictions"][0]["result"])
    moved = next(r for r in result if r.get("value", {}).get("keypointlabels") == ["nose"])
    moved["value"]["x"] += 100 * 3 / 640  # 3 px to the right
    moved["origin"] = "prediction-changed"
    result = [r for r in result if r.get("value", {}).get("keypointlabels") != ["left_eye"]]
    added = to_result([Person(1, np.array([0, 0, 200, 200]), np.where(np.arange(K)[:, None] == 2, [[5, 5, 2]], 0))],
                      640, 480)[1]
    task["annotations"] = [{"id": 1, "result": result + [added], "was_cancelled": False}]
    by = {e["keypoint"]: e for e in edits(task)}
    assert by["nose"]["edit"] == "moved" and abs(by["nose"]["distance_px"] - 3) < 1e-9
    assert by["nose"]["origin"] == "prediction-changed"
    assert by["left_eye"]["edit"] == "removed" and by["right_eye"]["edit"] == "added"
