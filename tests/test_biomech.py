"""The OpenSim model (real opensim), the calibrated fast rules, the deep fit and the CLI."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest

from spinetrack_tools.biomech import rules
from spinetrack_tools.biomech.calibrate import calibrate, corrupt_spines, plausible_sample
from spinetrack_tools.biomech.fit import DEEP_SPINE_RESIDUAL, PoseFitter, spine_residual
from spinetrack_tools.biomech.model import (
    KINEMATICS_PATH,
    OSIM_PATH,
    THRESHOLDS_PATH,
    default_model,
    definition,
    forward_kinematics,
)
from spinetrack_tools.biomech.geometry import BodyGeometry
from spinetrack_tools.skeleton import SPINETRACK37

from .conftest import write_json

osim = pytest.importorskip("opensim")


@pytest.fixture(scope="module")
def osim_model():
    from spinetrack_tools.biomech.osim import OsimModel

    return OsimModel(OSIM_PATH)


@pytest.mark.integration
def test_model_loads_assembles_and_every_coordinate_has_a_range(osim_model):
    assert osim_model.assembles()
    ranges = osim_model.coordinate_ranges()
    assert len(ranges) >= 40
    assert all(lo < hi for lo, hi in ranges.values())
    assert [m.getName() for m in osim_model.markers] == list(SPINETRACK37.names)
    # each of the 9 spine points sits on its own body
    bodies = [osim_model.markers[i].getParentFrame().findBaseFrame().getName() for i in SPINETRACK37.spine_chain]
    assert len(set(bodies)) == 9, bodies


@pytest.mark.integration
def test_numpy_kinematics_equal_opensim(osim_model):
    model = default_model()
    rng = np.random.default_rng(0)
    angles = rng.uniform(model.ranges[..., 0], model.ranges[..., 1], size=(40,) + model.ranges.shape[:2])
    p_osim, r_osim = osim_model.forward_kinematics(model, angles)
    p_np, r_np = forward_kinematics(model, angles)
    assert np.abs(p_osim - p_np).max() < 1e-9
    assert np.abs(r_osim - r_np).max() < 1e-9


@pytest.mark.integration
def test_shipped_model_is_the_build_scripts_output(tmp_path):
    r = subprocess.run([sys.executable, str(OSIM_PATH.parents[1] / "scripts" / "build_opensim_model.py"),
                        "--osim", str(tmp_path / "m.osim"), "--kinematics", str(tmp_path / "k.json")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "k.json").read_text()) == json.loads(KINEMATICS_PATH.read_text())
    d = definition()
    m = default_model()
    assert np.allclose(m.markers, d.markers) and np.allclose(m.ranges, d.ranges)


@pytest.mark.integration
@pytest.mark.slow
def test_shipped_thresholds_are_the_calibration_output():
    shipped = rules.Thresholds.load()
    meta = shipped.meta
    t = calibrate(meta["n_images"], seed=meta["seed"], noise_levels=tuple(meta["noise_levels"]),
                  target_rate=meta["target_rate"])

    def flat(bounds: dict) -> tuple[list[str], np.ndarray]:  # equal up to the last bits of floating point
        return sorted(bounds), np.array([[b["exact"], *np.ravel(b["per_noise"])] for _, b in sorted(bounds.items())])

    for part in ("rules", "segments"):
        (names, mine), (theirs, ship) = flat(t.to_json()[part]), flat(getattr(shipped, part))
        assert names == theirs and np.allclose(mine, ship, rtol=1e-9, atol=0)
    assert meta["model_sha256"] == t.meta["model_sha256"]


@pytest.fixture(scope="module")
def plausible():
    return plausible_sample(700, seed=4242, noise=0.1)


def test_plausible_poses_rarely_fail(plausible):
    ds, f = plausible
    ex = rules.excess(f, rules.Thresholds.load())
    flagged = np.sum(list(ex.values()), axis=0) > 0
    assert flagged.mean() < 0.02
    post = ds.attrs["posture"].astype(str)
    for p in ("lying", "inverted"):
        assert flagged[post == p].mean() < 0.04, p


@pytest.mark.parametrize("kind,recall", [("order", 0.8), ("bend", 0.95), ("displace", 0.8)])
def test_corrupted_spines_are_caught(kind, recall):
    ds, f = plausible_sample(300, seed={"order": 1, "bend": 2, "displace": 3}[kind], noise=0.1)
    applies = corrupt_spines(ds, kind, np.random.default_rng(5))
    plaus = rules.plausibility(ds, noise=f.noise)  # every chain is corrupted here: the clean file's noise level
    assert (plaus[applies] < 1).mean() >= recall


def test_noise_level_measures_the_annotation_noise():
    from spinetrack_tools.biomech.geometry import noise_level

    measured = [plausible_sample(150, seed=8, noise=c)[1].noise for c in (0.0, 0.25, 0.5, 1.0)]
    assert measured == sorted(measured) and measured[0] < 0.25
    assert abs(measured[2] - 0.5) < 0.1 and measured[3] > 0.85
    ds, _ = plausible_sample(5, seed=8, noise=0.5)
    assert noise_level(BodyGeometry(ds)) == 0.25  # too few chains to measure: the default


def test_bounds_widen_with_the_annotation_noise(plausible):
    ds, f = plausible
    t = rules.Thresholds.load()
    quiet, noisy = rules.features(ds, noise=0.1), rules.features(ds, noise=0.6)
    for rule in ("spine_curvature", "spine_order", "spine_attachment"):
        assert np.nanmedian(t.bound(rule, noisy)) > np.nanmedian(t.bound(rule, quiet)), rule
    assert np.nanmedian(t.bound("left_hip-left_knee", noisy)) > np.nanmedian(t.bound("left_hip-left_knee", quiet))


def test_population_has_builds_habits_and_curves():
    from spinetrack_tools.biomech.population import sample_bodies, spine_curves

    model = default_model()
    rng = np.random.default_rng(0)
    b = sample_bodies(model, 2000, rng)
    assert set(b.sex) == {"female", "male"}
    knee, hip = model.marker_names.index("left_knee"), model.marker_names.index("left_hip")
    thigh = b.markers[:, hip, 1] - b.markers[:, knee, 1]
    assert 0.03 < thigh.std() / thigh.mean() < 0.15  # ANSUR II's spread (widened), not one body
    spine = [model.marker_names.index(m) for m in ("spine_01", "spine_04")]
    assert np.ptp(b.markers[:, spine, 2], axis=0).min() > 0.04  # deep to the skin line of the back
    exact = sample_bodies(model, 3, rng, proportions=False, habits=False)
    assert np.allclose(exact.markers, model.markers[None])
    curves = np.rad2deg(spine_curves(model, 500, rng))
    assert 20 < curves[:, model.body("thorax_top")].mean() * 3 < 60  # kyphosis about 40 degrees


def test_people_from_an_independent_generator_rarely_fail():
    """A regression guard on the population calibration (the benchmark has the figures): people with other
    proportions, spine placements and conventions (tests/posegen.py) pass both checks."""
    from spinetrack_tools.persons import Persons
    from spinetrack_tools.quality import flag

    from .posegen import generate

    p = Persons.from_coco(generate(500, seed=31, noise=0.15))
    bio = np.isin(p.ann_ids, list(rules.check(p).flagged_annotation_ids()))
    fl = np.isin(p.ann_ids, list(flag(p).flagged_annotation_ids()))
    assert bio.mean() < 0.03 and fl.mean() < 0.02


def test_findings_name_rules_keypoints_and_plausibility(plausible):
    ds, _ = plausible
    ds = copy.deepcopy(ds)
    chain = SPINETRACK37.spine_chain
    ds.keypoints[0, [chain[2], chain[5]], :2] = ds.keypoints[0, [chain[5], chain[2]], :2]
    ds.keypoints[0, :, 2] = np.maximum(ds.keypoints[0, :, 2], 1)
    report = rules.check(ds)
    mine = [f for f in report.findings if f.annotation_id == int(ds.ann_ids[0])]
    assert any(f.check == "biomech_spine_order" for f in mine)
    f = next(f for f in mine if f.check == "biomech_spine_order")
    assert f.keypoints == [SPINETRACK37.names[i] for i in chain]
    assert 0 < f.score < 1 and f.values["plausibility"] == f.score


def test_deep_fit_separates_plausible_from_bent():
    ds, _ = plausible_sample(60, seed=4242, noise=0.05, population=False)  # the model's own body: what it fits
    fitter = PoseFitter()
    g = BodyGeometry(ds)
    chain = SPINETRACK37.spine_chain
    full = np.flatnonzero((ds.keypoints[:, chain, 2] > 0).all(axis=1))[:3]
    for r in full:
        res = fitter.fit(ds.keypoints[r], float(g.stature[r]))
        assert np.nanmax(res.residuals[chain]) < DEEP_SPINE_RESIDUAL
    bent = copy.deepcopy(ds)
    corrupt_spines(bent, "bend", np.random.default_rng(1))
    res = fitter.fit(bent.keypoints[full[0]], float(g.stature[full[0]]))
    assert np.nanmax(res.residuals[chain]) > DEEP_SPINE_RESIDUAL
    assert set(res.coordinates) == {n for _, _, n in default_model().coordinate_names()}


@pytest.mark.parametrize("build", [False, True], ids=["model body", "with the build"])
def test_deep_fit_jacobian_is_the_derivative_of_the_projection(build):
    fitter = PoseFitter()
    rng = np.random.default_rng(3)
    parts = [rng.uniform(fitter.lo, fitter.hi, (3, fitter.nq)), rng.uniform(-3, 3, (3, 3)),
             np.log(rng.uniform(100, 400, (3, 1))), rng.uniform(0, 500, (3, 2))]
    x = np.concatenate(parts + ([rng.uniform(fitter.b_lo, fitter.b_hi, (3, len(fitter.b_lo)))] if build else []), 1)
    obs, w, torso = rng.uniform(0, 500, (3, 37, 2)), np.ones((3, 37)), np.full(3, 100.0)
    r, jac = fitter._residuals(x, obs, w, torso, jacobian=True)
    h = 1e-6
    fd = np.stack([(fitter._residuals(x + h * np.eye(x.shape[1])[p], obs, w, torso)[0] - r) / h
                   for p in range(x.shape[1])], -1)
    assert np.abs(fd - jac).max() < 1e-4 * np.abs(jac).max()


def test_deep_fit_takes_in_people_of_other_builds():
    """People of ANSUR builds with annotators' habits, exact points: the model's own body leaves spines off the
    bound, the fit with the build explains every one, and its build stays within the population's ranges."""
    ds, _ = plausible_sample(40, seed=777, noise=0.0, population=True)
    chain = SPINETRACK37.spine_chain
    rows = np.flatnonzero((ds.keypoints[:, chain, 2] > 0).all(axis=1))[:24]
    g = BodyGeometry(ds)
    fitter = PoseFitter()
    own = fitter.fit_batch(ds.keypoints[rows], g.stature[rows])
    model_only = PoseFitter(builds=False).fit_batch(ds.keypoints[rows], g.stature[rows])
    # the model's own body misses the spine of most; with the build, every spine fits
    assert (spine_residual(model_only.residuals, chain) > DEEP_SPINE_RESIDUAL).mean() > 0.5
    assert np.nanmax(spine_residual(own.residuals, chain)) < DEEP_SPINE_RESIDUAL
    build = own.params[:, fitter.pose_size:]
    assert ((build >= fitter.b_lo - 1e-9) & (build <= fitter.b_hi + 1e-9)).all()


def test_batched_fit_equals_one_at_a_time(plausible):
    ds, _ = plausible
    fitter = PoseFitter()
    g = BodyGeometry(ds)
    rows = np.arange(3)
    batch = fitter.fit_batch(ds.keypoints[rows], g.stature[rows])
    for i, r in enumerate(rows):
        one = fitter.fit(ds.keypoints[r], float(g.stature[r]))
        assert np.allclose(one.residuals, batch.residuals[i], equal_nan=True, atol=1e-9)


def test_cli_validate_biomech(tmp_path, plausible):
    ds, _ = plausible
    data = ds.to_coco()
    data["annotations"] = data["annotations"][:40]
    keep = np.flatnonzero(rules.plausibility(ds.select(np.arange(40))) == 1)
    data["annotations"] = [data["annotations"][i] for i in keep[:10]]
    path = write_json(tmp_path / "ok.json", data)
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "validate-biomech", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    kp = np.array(data["annotations"][0]["keypoints"], dtype=float).reshape(-1, 3)
    chain = SPINETRACK37.spine_chain
    kp[[chain[1], chain[4]], :2] = kp[[chain[4], chain[1]], :2]
    data["annotations"][0]["keypoints"] = kp.ravel().tolist()
    bad = write_json(tmp_path / "bad.json", data)
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "validate-biomech", str(bad), "--deep", "--json",
                        "--report", str(tmp_path / "r.json")], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    checks = {f["check"] for f in out["findings"] if f["annotation_id"] == data["annotations"][0]["id"]}
    assert "biomech_spine_order" in checks and "biomech_deep_fit" in checks
    assert json.loads((tmp_path / "r.json").read_text()) == out
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "validate-biomech", str(bad), "--thresholds",
                        str(tmp_path / "missing.json")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_thresholds_file_is_complete():
    t = json.loads(THRESHOLDS_PATH.read_text())
    assert set(t["rules"]) == {r for r in rules.RULES if r != "segment_length"}
    assert t["meta"]["flag_rate_on_calibration_set"] <= 0.011 and len(t["meta"]["noise_levels"]) >= 3
    assert all({"exact", "per_noise"} <= set(b) for b in [*t["rules"].values(), *t["segments"].values()])
