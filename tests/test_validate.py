import copy
import json

import numpy as np
import pytest
from PIL import Image

from spinetrack_tools.coco import parse_file
from spinetrack_tools.skeleton import COCO17
from spinetrack_tools.validate import validate, validate_file

from .conftest import write_json


def checks(report, severity=None):
    return {(f.check, f.severity) for f in report.findings if severity in (None, f.severity)}


def test_clean_synthetic_file_has_no_findings(synthetic):
    r = validate(parse_file(synthetic))
    assert r.findings == []
    assert not r.has_errors


def _ann(c, i=0):
    return c["annotations"][i]


def _labelled_index(a):
    return next(k for k in range(len(a["keypoints"]) // 3) if a["keypoints"][3 * k + 2] > 0)


DEFECTS = {
    "missing_top_key": (lambda c: c.pop("categories"), ("top_level", "error")),
    "top_key_wrong_type": (lambda c: c.update(images={}), ("top_level", "error")),
    "duplicate_image_id": (lambda c: c["images"][1].update(id=c["images"][0]["id"]), ("image_id", "error")),
    "duplicate_annotation_id": (lambda c: _ann(c, 1).update(id=_ann(c)["id"]), ("annotation_id", "error")),
    "annotation_without_image": (lambda c: _ann(c).update(image_id=10**9), ("image_ref", "error")),
    "image_without_annotations": (lambda c: c["images"].append(dict(c["images"][0], id=10**9)),
                                  ("image_without_annotations", "info")),
    "unknown_category": (lambda c: _ann(c).update(category_id=99), ("category_ref", "error")),
    "wrong_keypoint_names": (lambda c: c["categories"][0]["keypoints"].reverse(), ("categories", "error")),
    "keypoints_wrong_length": (lambda c: _ann(c)["keypoints"].pop(), ("keypoints_shape", "error")),
    "keypoints_missing": (lambda c: _ann(c).pop("keypoints"), ("keypoints_shape", "error")),
    "keypoints_not_numbers": (lambda c: _ann(c)["keypoints"].__setitem__(0, "x"), ("keypoints_type", "error")),
    "nonfinite": (lambda c: _ann(c)["keypoints"].__setitem__(0, float("nan")), ("keypoints_nonfinite", "error")),
    "visibility_value": (lambda c: _ann(c)["keypoints"].__setitem__(3 * _labelled_index(_ann(c)) + 2, 3),
                         ("visibility_value", "error")),
    "v0_with_coordinates": (lambda c: _ann(c)["keypoints"].__setitem__(
        slice(3 * _labelled_index(_ann(c)), 3 * _labelled_index(_ann(c)) + 3), [5.0, 5.0, 0]),
        ("unlabelled_with_coordinates", "warning")),
    "num_keypoints_wrong": (lambda c: _ann(c).update(num_keypoints=_ann(c)["num_keypoints"] + 1),
                            ("num_keypoints", "error")),
    "num_keypoints_missing": (lambda c: _ann(c).pop("num_keypoints"), ("num_keypoints", "error")),
    "bbox_missing": (lambda c: _ann(c).pop("bbox"), ("bbox", "error")),
    "bbox_shape": (lambda c: _ann(c).update(bbox=[1, 2, 3]), ("bbox", "error")),
    "bbox_negative": (lambda c: _ann(c)["bbox"].__setitem__(2, -4.0), ("bbox", "error")),
    "bbox_zero": (lambda c: _ann(c)["bbox"].__setitem__(3, 0), ("bbox", "error")),
    "bbox_outside_image": (lambda c: _ann(c).update(bbox=[5000.0, 5000.0, 10.0, 10.0]),
                           ("bbox_outside_image", "error")),
    "bbox_beyond_border": (lambda c: _ann(c).update(bbox=[-20.0, 0.0, 50.0, 50.0]),
                           ("bbox_outside_image", "warning")),
    "area_missing": (lambda c: _ann(c).pop("area"), ("area", "error")),
    "area_nonpositive": (lambda c: _ann(c).update(area=0), ("area", "error")),
    "iscrowd_value": (lambda c: _ann(c).update(iscrowd=2), ("iscrowd", "error")),
    "iscrowd_missing": (lambda c: _ann(c).pop("iscrowd"), ("iscrowd", "warning")),
    "image_size_missing": (lambda c: c["images"][0].pop("width"), ("image_fields", "error")),
    "annotation_not_object": (lambda c: c["annotations"].append(3), ("top_level", "error")),
}


@pytest.mark.parametrize("name", DEFECTS)
def test_each_defect_is_reported(coco, name):
    mutate, expected = DEFECTS[name]
    mutate(coco)
    r = validate(parse_file(coco))
    assert expected in checks(r), f"{name}: got {checks(r)}"
    # nothing else of error severity is reported on an otherwise clean file, bar knock-on effects
    if name in ("keypoints_wrong_length", "nonfinite", "visibility_value", "bbox_zero"):
        assert len(r.by_severity("error")) == 1, [f.message for f in r.by_severity("error")]


def test_findings_name_annotation_and_image(coco):
    a = _ann(coco, 3)
    a["num_keypoints"] = 0
    r = validate(parse_file(coco))
    (f,) = r.findings
    assert (f.annotation_id, f.image_id) == (a["id"], a["image_id"])
    assert "num_keypoints is 0" in f.message


def test_keypoint_level_findings_name_the_keypoints(coco):
    a = _ann(coco)
    a["keypoints"][3 * 26 + 2] = 7
    (f,) = validate(parse_file(coco)).findings
    assert f.keypoints == ["spine_01"]


def test_other_layouts_with_auto_skeleton(tmp_path, coco):
    coco["categories"] = [COCO17.to_category()]
    for a in coco["annotations"]:
        a["keypoints"] = a["keypoints"][:51]
        a["num_keypoints"] = sum(v > 0 for v in a["keypoints"][2::3])
    path = write_json(tmp_path / "coco17.json", coco)
    assert validate_file(path, skeleton=None).findings == []
    r = validate_file(path)  # against SpineTrack-37 by default
    assert ("categories", "error") in checks(r) and ("keypoints_shape", "error") in checks(r)


def test_image_files(tmp_path, coco):
    coco["images"] = coco["images"][:4]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] <= 4]
    imgs = tmp_path / "images"
    imgs.mkdir()
    for i, im in enumerate(coco["images"]):
        size = (im["width"], im["height"]) if i != 1 else (im["width"] + 1, im["height"])
        if i != 2:
            Image.new("RGB", size, (i * 40, 80, 120)).save(imgs / im["file_name"])
    (imgs / coco["images"][3]["file_name"]).write_bytes(b"not a jpeg")
    path = write_json(tmp_path / "a.json", coco)
    r = validate_file(path, images_dir=imgs)
    got = {(f.check, f.image_id) for f in r.findings}
    assert got == {("image_size", 2), ("image_file", 3), ("image_file", 4)}
    assert validate_file(path, images_dir=tmp_path / "nope").has_errors


def test_image_paths_may_not_escape_the_folder(tmp_path, coco):
    coco["images"][0]["file_name"] = "../../etc/passwd"
    imgs = tmp_path / "images"
    imgs.mkdir()
    r = validate_file(write_json(tmp_path / "a.json", coco), images_dir=imgs)
    assert any(f.check == "image_file" and "outside" in f.message for f in r.findings)


def test_report_json_shape(tmp_path, coco):
    _ann(coco)["area"] = -1
    r = validate(parse_file(coco))
    r.write_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(data) == {"summary", "findings"}
    assert data["summary"]["errors"] == 1
    f = data["findings"][0]
    assert {"check", "severity", "annotation_id", "image_id", "message"} <= set(f)


def test_many_annotations_with_unique_ids_are_clean(synthetic):
    big = copy.deepcopy(synthetic)
    base = big["annotations"]
    big["annotations"] = [dict(a, id=a["id"] + k * 10**6) for k in range(20) for a in base]
    f = parse_file(big)
    r = validate(f)
    assert len(f) == 20 * len(base)
    assert {f.check for f in r.findings} == set()
    assert np.isfinite(f.persons.keypoints).all()
