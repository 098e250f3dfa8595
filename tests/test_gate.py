"""The gate without a server: consensus of several annotators and their agreement, the two-stage biomechanical
check, the reviewers' decisions, and the annotators' report."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from spinetrack_tools import synth
from spinetrack_tools.active_learning.gate import OVERRIDE, gate, two_stage
from spinetrack_tools.active_learning.review import PLOT, REPORT, keypoint_stats, summary_lines, write_report
from spinetrack_tools.agreement import AgreementTable, consensus
from spinetrack_tools.biomech.calibrate import corrupt_spines, plausible_sample
from spinetrack_tools.biomech.rules import check
from spinetrack_tools.coco import parse_file
from spinetrack_tools.labelstudio.config import CONFIRM, NEEDS_FIXING
from spinetrack_tools.persons import Persons, concat
from spinetrack_tools.skeleton import SPINETRACK37

K = SPINETRACK37.num_keypoints


@pytest.fixture(scope="module")
def truth() -> Persons:
    return Persons.from_coco(synth.generate(6, seed=3, fk="numpy"))


def annotated(truth: Persons, noises: dict[int, float], seed: int = 0) -> Persons:
    """Each annotator's copy of ``truth`` with Gaussian click noise (pixels)."""
    rng = np.random.default_rng(seed)
    parts = []
    for who, noise in noises.items():
        p = copy.deepcopy(truth)
        lab = p.keypoints[..., 2] > 0
        p.keypoints[..., :2] += np.where(lab[..., None], rng.normal(0, noise, lab.shape + (2,)), 0)
        p.attrs = {"annotator": np.full(len(p), who), "drawn": np.zeros(len(p), bool)}
        parts.append(p)
    return concat(parts, truth.skeleton)


def test_consensus_is_the_median_and_visibility_the_majority(truth):
    labels = annotated(truth, {3: 1.0, 5: 3.0, 8: 6.0})
    third = labels.attrs["annotator"] == 8
    labels.keypoints[third, 0, 2] = np.where(labels.keypoints[third, 0, 2] > 0, 1, 0)  # one says occluded: outvoted
    c = consensus(labels)
    assert len(c.persons) == len(truth) and c.stack.shape == (len(truth), 3, K, 3)
    assert np.array_equal(c.annotators, np.tile([3, 5, 8], (len(truth), 1)))
    order = np.lexsort((truth.ann_ids, truth.image_ids))
    stack = labels.keypoints.reshape(3, len(truth), K, 3)[:, order]
    lab = truth.keypoints[order, :, 2] > 0
    assert np.allclose(c.persons.keypoints[..., :2][lab], np.median(stack[..., :2], axis=0)[lab])
    assert np.array_equal(c.persons.keypoints[..., 2], truth.keypoints[order, :, 2])
    # the noisier the annotators, the lower their agreement; 1 for identical labels
    assert (np.nanmean(c.agreement, 1) < 1).all() and (c.persons.attrs["annotators"] == 3).all()
    same = consensus(annotated(truth, {1: 0.0, 2: 0.0}))
    assert np.allclose(same.persons.attrs["agreement"], 1.0)


def test_a_point_only_one_of_two_annotators_labelled_is_kept_and_counts_as_disagreement(truth):
    labels = annotated(truth, {1: 0.0, 2: 0.0})
    second = np.flatnonzero(labels.attrs["annotator"] == 2)
    j = int(np.flatnonzero(truth.keypoints[0, :, 2] > 0)[0])
    labels.keypoints[second[0], j] = 0
    c = consensus(labels)
    row = int(np.flatnonzero((c.persons.image_ids == truth.image_ids[0]) & (c.persons.ann_ids == truth.ann_ids[0]))[0])
    assert c.persons.keypoints[row, j, 2] > 0 and c.agreement[row, j] == 0.0
    assert np.allclose(c.agreement[row, np.flatnonzero(truth.keypoints[0, :, 2] > 0)[1:]], 1.0)
    # three annotators, two leave the point out: the majority removes it
    three = annotated(truth, {1: 0.0, 2: 0.0, 3: 0.0})
    three.keypoints[np.flatnonzero(three.attrs["annotator"] >= 2)[[0, len(truth)]], j] = 0
    assert consensus(three).persons.keypoints[row, j, 2] == 0


def test_persons_drawn_by_two_annotators_are_matched(truth):
    labels = annotated(truth, {1: 0.5, 2: 0.5})
    labels.attrs["drawn"][:] = True
    labels.ann_ids = np.arange(100, 100 + len(labels))  # every person got a new id from each annotator
    c = consensus(labels)
    assert len(c.persons) == len(truth) and (c.persons.attrs["annotators"] == 2).all()
    assert (c.persons.attrs["agreement"] > 0.9).all()


def test_agreement_table_round_trips_through_json(truth):
    c = consensus(annotated(truth, {1: 1.0, 2: 2.0}))
    t = AgreementTable.of(c.persons, c.agreement)
    back = AgreementTable.from_json(json.loads(json.dumps(t.to_json())))
    assert back.keypoints == SPINETRACK37.names and np.array_equal(back.ann_ids, t.ann_ids)
    assert np.allclose(back.per_keypoint, t.per_keypoint, atol=1e-4, equal_nan=True)


def test_two_stage_keeps_corrupted_spines_and_explains_false_alarms():
    ds, _ = plausible_sample(400, seed=4242, noise=0.01)
    fast = {(f.annotation_id, f.check) for f in check(ds).findings if f.severity == "error"}
    assert fast  # the fast rules flag some plausible poses
    deep = two_stage(ds)
    kept = {(f.annotation_id, f.check) for f in deep.findings if f.severity == "error"}
    explained = [f for f in deep.findings if "deep fit explains" in f.message]
    assert explained and len(kept) < len(fast) and all(f.severity == "warning" for f in explained)
    assert all(f.values["deep_residual"] is not None for f in explained)
    bent, _ = plausible_sample(40, seed=4343, noise=0.01)
    applies = corrupt_spines(bent, "bend", np.random.default_rng(1))
    report = two_stage(bent)
    caught = {f.annotation_id for f in report.findings if f.severity == "error"}
    assert np.mean([int(a) in caught for a in bent.ann_ids[applies]]) >= 0.95


def _bent_file() -> tuple:
    coco = synth.generate(3, seed=11, fk="numpy")
    ds = Persons.from_coco(coco)
    chain = ds.skeleton.spine_chain
    row = int(np.flatnonzero((ds.keypoints[:, chain, 2] > 0).all(1))[0])
    one = ds.select([row])
    corrupt_spines(one, "bend", np.random.default_rng(2))
    coco["annotations"][row]["keypoints"] = one.keypoints[0].ravel().tolist()
    return parse_file(coco), int(ds.image_ids[row])


def test_reviewer_decisions():
    pulled, image = _bent_file()
    plain = gate(pulled, [], {})
    assert image in plain.rejected and any("deep fit confirms" in m for m in plain.rejected[image])
    confirmed = gate(pulled, [], {image: {"decision": CONFIRM, "annotation_id": 4, "annotator": 2}})
    assert image not in confirmed.rejected and confirmed.overridden[image]["via"] == OVERRIDE
    assert confirmed.overridden[image]["findings"] and confirmed.overridden[image]["annotator"] == 2
    # a reviewer keeps an image out that passes, and cannot overrule a structural problem
    others = [int(i) for i in pulled.persons.images["id"] if int(i) != image]
    held = gate(pulled, [], {others[0]: {"decision": NEEDS_FIXING}})
    assert others[0] in held.rejected and "needs fixing" in held.rejected[others[0]][0]
    structural = {"check": "ls_ungrouped_keypoint", "severity": "error", "image_id": image, "annotation_id": None,
                  "message": "task 1: nose at (1, 1) has no person"}
    stuck = gate(pulled, [structural], {image: {"decision": CONFIRM}})
    assert image in stuck.rejected and "cannot overrule ls_ungrouped_keypoint" in stuck.rejected[image][0]


def test_disagreeing_annotators_go_to_review(truth):
    c = consensus(annotated(truth, {1: 0.0, 2: 40.0}))
    pulled = parse_file(c.persons.to_coco())
    res = gate(pulled, [], {}, AgreementTable.of(c.persons, c.agreement), min_agreement=0.9, deep=False)
    assert res.rejected and all(any("annotators agree at OKS" in m for m in r) for r in res.rejected.values())
    calm = consensus(annotated(truth, {1: 0.0, 2: 0.5}))
    assert not gate(parse_file(calm.persons.to_coco()), [], {}, AgreementTable.of(calm.persons, calm.agreement),
                    min_agreement=0.9, deep=False).rejected


def test_annotator_report_and_plot(tmp_path, truth):
    from spinetrack_tools.io import save_json

    for n, noise in ((1, 2.0), (2, 8.0)):
        d = tmp_path / "rounds" / f"{n:03d}"
        d.mkdir(parents=True)
        c = consensus(annotated(truth, {1: 0.0, 2: noise}, seed=n))
        save_json(d / "agreement.json", AgreementTable.of(c.persons, c.agreement).to_json())
        save_json(d / "edits.json", [
            {"annotation_id": 1, "image_id": 1, "region": "a1", "keypoint": "nose", "edit": "moved",
             "distance_px": 4.0 * n, "distance_rel": 0.1 * n},
            {"annotation_id": 1, "image_id": 1, "region": "a1", "keypoint": "left_eye", "edit": "kept",
             "distance_px": 0.0, "distance_rel": 0.0}])
    stats = write_report(tmp_path, sorted((tmp_path / "rounds").glob("*/")), SPINETRACK37)
    assert json.loads((tmp_path / REPORT).read_text()) == stats and (tmp_path / PLOT).stat().st_size > 1000
    nose = next(r for r in stats["keypoints"] if r["keypoint"] == "nose")
    assert nose["edits"] == 1 and nose["moved_median_px"] == 8.0  # the image pulled twice counts once, latest
    assert stats["persons"] == len(truth) and stats["agreement"] < 1
    assert stats == keypoint_stats(sorted((tmp_path / "rounds").glob("*/")), SPINETRACK37)
    assert "nose 100%" in " ".join(summary_lines(stats))
