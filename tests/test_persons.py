"""``Persons`` (the in-memory shape of labels and predictions) and COCO files on disk."""

import json
import os

import numpy as np
import pytest

from spinetrack_tools.coco import BAD_LENGTH, BAD_TYPE, MISSING, OK, load_coco, read_persons, save_coco
from spinetrack_tools.io import MISSING_ID, InputError, atomic_write_bytes
from spinetrack_tools.persons import Persons, concat
from spinetrack_tools.skeleton import COCO17, SPINETRACK37

from .conftest import write_json


def test_arrays_match_the_raw_dict(tmp_path, synthetic):
    f = load_coco(write_json(tmp_path / "a.json", synthetic))
    ds = f.persons
    anns = synthetic["annotations"]
    assert ds.skeleton is SPINETRACK37
    assert ds.keypoints.shape == (len(anns), 37, 3)
    assert ds.boxes.shape == (len(anns), 4)
    i = len(anns) // 2
    assert ds.keypoints[i].ravel().tolist() == anns[i]["keypoints"]
    assert ds.boxes[i].tolist() == anns[i]["bbox"]
    assert ds.ann_ids[i] == anns[i]["id"] and ds.image_ids[i] == anns[i]["image_id"]
    assert (f.status.keypoints == OK).all() and (f.status.boxes == OK).all()
    assert list(ds.images["id"]) == [im["id"] for im in synthetic["images"]]
    w, h = ds.image_size()
    img = {im["id"]: im for im in synthetic["images"]}
    assert w[i] == img[anns[i]["image_id"]]["width"] and h[i] == img[anns[i]["image_id"]]["height"]


def test_nan_and_infinity_tokens_are_readable(tmp_path, synthetic):
    data = {**synthetic, "annotations": synthetic["annotations"][:3]}
    text = json.dumps(data)
    kp = data["annotations"][1]["keypoints"]
    text = text.replace(json.dumps(kp), json.dumps(kp).replace(str(kp[0]), "NaN", 1).replace(str(kp[3]), "Infinity", 1))
    (tmp_path / "nan.json").write_text(text)
    ds = load_coco(tmp_path / "nan.json").persons
    assert np.isnan(ds.keypoints[1, 0, 0]) and np.isinf(ds.keypoints[1, 1, 0])
    assert np.isfinite(ds.keypoints[0]).all()


def test_malformed_entries_become_statuses_not_crashes(tmp_path, synthetic):
    anns = [dict(a) for a in synthetic["annotations"][:6]]
    anns[0]["keypoints"] = anns[0]["keypoints"][:-3]
    anns[1]["keypoints"] = [None] + anns[1]["keypoints"][1:]
    del anns[2]["keypoints"]
    anns[3]["bbox"] = "10,10,5,5"
    anns[4]["id"] = "seven"
    anns[5]["keypoints"] = ["1"] + anns[5]["keypoints"][1:]
    f = load_coco(write_json(tmp_path / "m.json", {**synthetic, "annotations": anns + ["not a dict"]}))
    ds = f.persons
    assert f.status.keypoints.tolist() == [BAD_LENGTH, BAD_TYPE, MISSING, OK, OK, BAD_TYPE, MISSING]
    assert f.status.boxes[3] == BAD_TYPE
    assert ds.ann_ids[4] == MISSING_ID
    assert np.isnan(ds.keypoints[0]).all() and np.isnan(ds.keypoints[1, 0, 0]) and ds.keypoints[1, 0, 1] >= 0
    # the strict reader refuses the same file with one message naming the first bad annotation
    with pytest.raises(InputError, match=f"annotation {anns[0]['id']} 'keypoints' has 108 numbers, expected 111"):
        read_persons(tmp_path / "m.json")


def test_layout_follows_the_category(tmp_path, synthetic):
    anns = [dict(a, keypoints=a["keypoints"][:51]) for a in synthetic["annotations"][:4]]
    data = {**synthetic, "annotations": anns, "categories": [COCO17.to_category()]}
    ds = load_coco(write_json(tmp_path / "c.json", data)).persons
    assert ds.skeleton is COCO17 and ds.keypoints.shape == (4, 17, 3)


@pytest.mark.parametrize("content,problem", [
    ("", "invalid JSON"),
    ("{\"images\": [", "invalid JSON"),
    ("[1, 2]", "top level is a JSON list"),
    ("{\"images\": []}", "no 'annotations' list"),
    ("\xff\xfe", "not UTF-8"),
])
def test_unreadable_files_raise_input_error(tmp_path, content, problem):
    p = tmp_path / "bad.json"
    p.write_bytes(content.encode("latin-1"))
    with pytest.raises(InputError, match=problem) as e:
        load_coco(p)
    assert str(p) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_coco(tmp_path / "nope.json")


def test_save_is_atomic_and_round_trips(tmp_path, synthetic):
    out = tmp_path / "out.json"
    save_coco(out, synthetic)
    assert json.loads(out.read_text()) == json.loads(json.dumps(synthetic))
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    assert oct(os.stat(out).st_mode & 0o777) != oct(0o600)


def test_failed_write_keeps_the_old_file(tmp_path):
    out = tmp_path / "keep.json"
    out.write_text("old")

    class Boom:
        def __bytes__(self):
            raise RuntimeError

    with pytest.raises(TypeError):
        atomic_write_bytes(out, Boom())  # type: ignore[arg-type]
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]


def test_huge_integers_are_non_finite_not_a_crash(tmp_path, synthetic):
    anns = [dict(a) for a in synthetic["annotations"][:2]]
    anns[0]["keypoints"] = [10**400] + anns[0]["keypoints"][1:]
    anns[1]["area"] = 10**400
    ds = load_coco(write_json(tmp_path / "big.json", {**synthetic, "annotations": anns})).persons
    assert np.isinf(ds.keypoints[0, 0, 0]) and np.isinf(ds.areas[1])


@pytest.mark.parametrize("change,problem", [
    (lambda a: a.update(image_id=99999), "refers to image 99999, which is not in 'images'"),
    (lambda a: a.update(image_id="3"), "has no integer 'image_id'"),
    (lambda a: a.update(bbox=[1, 2, 3]), "'bbox' is not 4 numbers"),
    (lambda a: a["keypoints"].__setitem__(0, float("nan")), "non-finite keypoint values"),
])
def test_from_coco_refuses_what_it_cannot_use(synthetic, change, problem):
    data = json.loads(json.dumps({**synthetic, "annotations": synthetic["annotations"][:3]}))
    change(data["annotations"][1])
    with pytest.raises(InputError, match=problem):
        Persons.from_coco(data, path="x.json")
    Persons.from_coco(json.loads(json.dumps({**synthetic, "annotations": synthetic["annotations"][:3]})))


def test_coco_round_trip_keeps_every_field(synthetic):
    p = Persons.from_coco(synthetic, attrs=("posture",))
    back = p.to_coco()
    assert back["images"] == synthetic["images"]
    for a, b in zip(synthetic["annotations"], back["annotations"]):
        assert a == b
    assert back["categories"] == [SPINETRACK37.to_category()]


def test_results_round_trip_and_labels_from_predictions(synthetic):
    gt = Persons.from_coco(synthetic)
    rng = np.random.default_rng(0)
    kp = gt.keypoints.copy()
    kp[..., 2] = rng.uniform(-0.2, 1.5, kp.shape[:2])  # confidences, some not positive
    kp[0, 0] = (-5.0, 10.0, 0.9)  # confident, but outside the image
    pred = Persons.build(gt.skeleton, kp, gt.image_ids, ann_ids=gt.ann_ids, boxes=gt.boxes,
                         scores=rng.uniform(0, 1, len(gt)), predicted=True, images=gt.images)
    res = pred.to_results()
    assert set(res[0]) == {"image_id", "category_id", "keypoints", "score", "person_box", "annotation_id"}
    back = Persons.from_results(res, gt.skeleton, images=gt.images)
    assert back.predicted and np.array_equal(back.keypoints, pred.keypoints)
    assert np.array_equal(back.ann_ids, gt.ann_ids) and np.array_equal(back.boxes, gt.boxes)
    assert np.isnan(back.areas).all()  # no 'bbox': pycocotools would take the keypoint extent
    with_bbox = Persons.from_results([dict(r, bbox=[0, 0, 4, 5]) for r in res], gt.skeleton)
    assert (with_bbox.areas == 20).all()
    lab = back.as_labels(inside_image=True)
    shown = kp[..., 2] > 0
    shown[0, 0] = False
    assert not lab.predicted and np.array_equal(lab.keypoints[..., 2], np.where(shown, 2.0, 0.0))
    assert (lab.keypoints[~shown, :2] == 0).all() and np.array_equal(lab.keypoints[shown, :2], kp[shown, :2])
    assert back.as_labels().keypoints[0, 0, 2] == 2  # without the image check


@pytest.mark.parametrize("results,problem", [
    ({"a": 1}, "expected a JSON list"),
    ([{"image_id": 1, "score": 1.0, "keypoints": [0] * 9}], "111 keypoint numbers"),
    ([{"image_id": 1, "keypoints": [0] * 111}], "needs an integer image_id, a score"),
    ([{"image_id": 1, "score": 1.0, "keypoints": ["x"] * 111}], "not all numbers"),
])
def test_from_results_refuses_malformed_results(results, problem):
    with pytest.raises(InputError, match=problem):
        Persons.from_results(results, SPINETRACK37, path="pred.json")


def test_selection_grouping_and_concatenation(synthetic):
    p = Persons.from_coco(synthetic)
    by_image = p.rows_by_image()
    assert sum(len(r) for r in by_image.values()) == len(p)
    assert all((p.image_ids[r] == i).all() for i, r in by_image.items())
    ids = list(by_image)[:3]
    sub = p.on_images(ids)
    assert set(sub.image_ids) == set(ids) and list(sub.images["id"]) == sorted(ids)
    both = concat([sub, p.on_images(list(by_image)[3:5])], p.skeleton)
    assert len(both) == len(sub) + sum(len(by_image[i]) for i in list(by_image)[3:5])
    assert len(both.images) == 5
    new = Persons.build(p.skeleton, p.keypoints[:2], p.image_ids[:2], images=p.images)
    assert [a["id"] for a in new.to_coco()["annotations"]] == [1, 2]  # persons without an id get new ones
