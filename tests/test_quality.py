import copy
from collections import Counter

import numpy as np
import pytest

from spinetrack_tools import synth
from spinetrack_tools.coco import parse_file
from spinetrack_tools.persons import Persons
from spinetrack_tools.quality import detection_scores, flag

# Minimum recall per corruption kind on the synthetic benchmark. Left/right swaps seen from the side
# are invisible in 2D, so their floor is lower.
MIN_RECALL = {
    "collapsed": 0.95, "duplicate": 0.95, "far_outside": 0.95, "outside_box": 0.95, "zero_visible": 0.95,
    "skeleton_scale": 0.95, "noise": 0.95, "limb_scale": 0.9, "spine_order": 0.85, "spine_detached": 0.85,
    "lr_swap": 0.5,
}


@pytest.fixture(scope="module")
def benchmark():
    clean = synth.generate(1500, seed=21)
    data, truth = synth.corrupt(clean, fraction=0.3, seed=22)
    ds = Persons.from_coco(data)
    return clean, ds, truth, flag(ds)


def test_every_corruption_kind_is_injected(benchmark):
    _, _, truth, _ = benchmark
    assert set(Counter(t["kind"] for t in truth)) == set(synth.CORRUPTIONS)


@pytest.mark.parametrize("kind", sorted(MIN_RECALL))
def test_recall_per_corruption_kind(benchmark, kind):
    _, ds, truth, report = benchmark
    scores = detection_scores(report, truth, ds.ann_ids)
    assert scores[kind]["n"] >= 20
    assert scores[kind]["recall"] >= MIN_RECALL[kind], scores[kind]


def test_precision(benchmark):
    _, ds, truth, report = benchmark
    s = detection_scores(report, truth, ds.ann_ids)["all"]
    assert s["precision"] >= 0.98, s
    assert s["false_positive_rate"] <= 0.01, s


def test_the_right_check_fires(benchmark):
    _, ds, truth, report = benchmark
    expected = {"collapsed": "collapsed", "duplicate": "duplicate", "zero_visible": "zero_visible",
                "far_outside": "outside_image", "spine_order": "spine_order", "noise": "noise",
                "spine_detached": "spine_detached", "lr_swap": "lr_swap", "limb_scale": "limb_scale"}
    by_ann: dict[int, set[str]] = {}
    for f in report.by_severity("error"):
        by_ann.setdefault(f.annotation_id, set()).add(f.check)
    for kind, check in expected.items():
        ids = [t["annotation_id"] for t in truth if t["kind"] == kind]
        hit = np.mean([check in by_ann.get(a, set()) for a in ids])
        assert hit >= MIN_RECALL[kind] - 0.1, (kind, check, hit)


@pytest.mark.parametrize("posture", synth.POSTURES)
def test_plausible_postures_are_not_flagged(posture):
    data = synth.generate(300, seed=5, postures=[posture])
    report = flag(Persons.from_coco(data))
    flagged = report.flagged_annotation_ids("error")
    assert len(flagged) / len(data["annotations"]) <= 0.01, Counter(f.check for f in report.by_severity("error"))


def test_duplicates_point_to_the_original(synthetic):
    data = copy.deepcopy(synthetic)
    orig = data["annotations"][5]
    data["annotations"].append(dict(orig, id=99999))
    (f,) = [f for f in flag(Persons.from_coco(data)).findings if f.check == "duplicate"]
    assert f.annotation_id == 99999 and f.values["duplicate_of"] == orig["id"]


def test_zero_points_and_swaps_name_their_keypoints(synthetic):
    data = copy.deepcopy(synthetic)
    a = data["annotations"][0]
    k = next(i for i in range(37) if a["keypoints"][3 * i + 2] > 0)
    a["keypoints"][3 * k: 3 * k + 2] = [0.0, 0.0]
    f = next(f for f in flag(Persons.from_coco(data)).findings if f.check == "zero_visible")
    assert f.annotation_id == a["id"] and f.keypoints == [synth.SPINETRACK37.names[k]]


def test_thresholds_adapt_to_the_file(synthetic):
    """A file whose spines are all rougher (a sloppier annotation style) raises the noise limit."""
    data = copy.deepcopy(synthetic)
    rng = np.random.default_rng(0)
    chain = synth.SPINETRACK37.spine_chain
    for a in data["annotations"]:
        kp = np.array(a["keypoints"], dtype=float).reshape(-1, 3)
        torso = 0.3 * max(a["bbox"][2], a["bbox"][3])
        kp[chain, :2] += np.where(kp[chain, 2:] > 0, rng.normal(0, 0.05 * torso, (len(chain), 2)), 0)
        a["keypoints"] = kp.ravel().tolist()
    report = flag(Persons.from_coco(data))
    noise = [f for f in report.findings if f.check == "noise"]
    assert len(noise) <= 0.02 * len(data["annotations"])


EDGE_CASES = {
    "no_annotations": lambda d: d.update(annotations=[]),
    "one_annotation": lambda d: d.update(annotations=d["annotations"][:1]),
    "nothing_labelled": lambda d: [a.update(keypoints=[0] * 111, num_keypoints=0) for a in d["annotations"]],
    "no_images": lambda d: d.pop("images"),
    "nan_keypoint": lambda d: d["annotations"][0]["keypoints"].__setitem__(0, float("nan")),
    "keypoints_not_a_list": lambda d: d["annotations"][0].update(keypoints="x"),
    "no_bbox": lambda d: d["annotations"][0].pop("bbox"),
}


@pytest.mark.parametrize("case", EDGE_CASES)
@pytest.mark.filterwarnings("error")
def test_degenerate_files_do_not_crash_or_false_alarm(case):
    data = synth.generate(5, seed=1)
    EDGE_CASES[case](data)
    assert flag(parse_file(data).persons).by_severity("error") == []  # the lenient reader, as the CLI


def test_other_layouts_run_the_checks_they_can(synthetic):
    from spinetrack_tools.skeleton import COCO17

    data = copy.deepcopy(synthetic)
    data["categories"] = [COCO17.to_category()]
    for a in data["annotations"]:
        a["keypoints"] = a["keypoints"][:51]
    data["annotations"][0]["keypoints"][0:2] = [0.0, 0.0]
    data["annotations"][0]["keypoints"][2] = 2
    report = flag(Persons.from_coco(data))
    errors = report.by_severity("error")
    assert [f.annotation_id for f in errors if f.check == "zero_visible"] == [data["annotations"][0]["id"]]
    assert not {"spine_order", "spine_detached", "noise"} & {f.check for f in errors}  # no spine in COCO-17
    assert len(report.flagged_annotation_ids()) <= 1 + 0.01 * len(data["annotations"])
