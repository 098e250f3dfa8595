import json
import os

import numpy as np
import pytest

from spinetrack_tools.coco import BAD_LENGTH, BAD_TYPE, MISSING, OK, load_coco, save_coco
from spinetrack_tools.io import MISSING_ID, InputError, atomic_write_bytes
from spinetrack_tools.skeleton import COCO17, SPINETRACK37

from .conftest import write_json


def test_arrays_match_the_raw_dict(tmp_path, synthetic):
    ds = load_coco(write_json(tmp_path / "a.json", synthetic))
    anns = synthetic["annotations"]
    assert ds.skeleton is SPINETRACK37
    assert ds.keypoints.shape == (len(anns), 37, 3)
    assert ds.boxes.shape == (len(anns), 4)
    i = len(anns) // 2
    assert ds.keypoints[i].ravel().tolist() == anns[i]["keypoints"]
    assert ds.boxes[i].tolist() == anns[i]["bbox"]
    assert ds.ann_ids[i] == anns[i]["id"] and ds.image_ids[i] == anns[i]["image_id"]
    assert (ds.keypoints_status == OK).all() and (ds.boxes_status == OK).all()
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
    ds = load_coco(tmp_path / "nan.json")
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
    ds = load_coco(write_json(tmp_path / "m.json", {**synthetic, "annotations": anns + ["not a dict"]}))
    assert ds.keypoints_status.tolist() == [BAD_LENGTH, BAD_TYPE, MISSING, OK, OK, BAD_TYPE, MISSING]
    assert ds.boxes_status[3] == BAD_TYPE
    assert ds.ann_ids[4] == MISSING_ID
    assert np.isnan(ds.keypoints[0]).all() and np.isnan(ds.keypoints[1, 0, 0]) and ds.keypoints[1, 0, 1] >= 0


def test_layout_follows_the_category(tmp_path, synthetic):
    anns = [dict(a, keypoints=a["keypoints"][:51]) for a in synthetic["annotations"][:4]]
    data = {**synthetic, "annotations": anns, "categories": [COCO17.to_category()]}
    ds = load_coco(write_json(tmp_path / "c.json", data))
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
    ds = load_coco(write_json(tmp_path / "big.json", {**synthetic, "annotations": anns}))
    assert np.isinf(ds.keypoints[0, 0, 0]) and np.isinf(ds.areas[1])
