"""People of many sizes and annotators of many habits: per-person rest geometry of the kinematic model.

Proportions: each person's segment lengths and breadths follow ANSUR II (``opensim_models/anthropometry.json``:
measurements divided by stature, mean, SD and correlations per sex), drawn from a multivariate normal truncated at
+-2 SD, as factors on the model's own segments (the model stands for the mean of both sexes). The ranges of motion
stay the OpenSim model's. Annotation habits: where an annotator puts the spine points (from near the vertebral
bodies to the skin line of the back, a little up or down the chain), the sacrum point (towards the mid hip-joint
centre), the head top, C7 and the limb joints (on the surface or at the joint centre). Each spine also gets its
own lordosis and kyphosis, which the model's straight neutral spine lacks. Every number's source is in ``opensim_models/README.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .model import MODELS_DIR, KinematicModel

ANTHROPOMETRY_PATH = MODELS_DIR / "anthropometry.json"
# body (without its side) -> the ANSUR measure scaling its x (breadth), y (length) and z (depth) offsets
BODY_SCALES: dict[str, tuple[str | None, str | None, str | None]] = {
    "pelvis": ("pelvis_breadth", "trunk", "torso_depth"),
    "lumbar5": (None, "trunk", "torso_depth"),
    "lumbar3": (None, "trunk", "torso_depth"),
    "lumbar1": (None, "trunk", "torso_depth"),
    "thorax_lower": ("shoulder_breadth", "trunk", "torso_depth"),
    "thorax_upper": ("shoulder_breadth", "trunk", "torso_depth"),
    "thorax_top": ("shoulder_breadth", "trunk", "torso_depth"),
    "neck_lower": (None, "head_neck", None),
    "neck_upper": (None, "head_neck", None),
    "head": ("head_top", "head_top", "head_top"),
    "upper_arm": (None, "upper_arm", None),
    "forearm": (None, "forearm", None),
    "thigh": (None, "thigh", None),
    "shank": (None, "shank", None),
    "foot": (None, "ankle", "foot"),
}
# measures whose ANSUR landmarks are the model's markers (as vertical heights, or distances): people get ANSUR's
# own mean proportion; the others (breadths, acromion-radiale, depth) scale the model's segment by the ratio to
# the pooled mean only
# (annotators click the shoulders on the acromion, as ANSUR measures them)
MODEL_MEASURES = {"trunk": ("mid_hip", "neck", 1), "head_neck": ("neck", "head", 1),
                  "thigh": ("left_hip", "left_knee", 1), "shank": ("left_knee", "left_ankle", 1),
                  "ankle": ("left_heel", "left_ankle", 1), "forearm": ("left_elbow", "left_wrist", None),
                  "upper_arm": ("left_shoulder", "left_elbow", None), "head_top": ("left_ear", "head", 1),
                  "shoulder_breadth": ("right_shoulder", "left_shoulder", 0)}
# the spine's own curves in upright standing, which the model's neutral pose (a straight spine) lacks: lumbar
# lordosis T12-S1 49.8 +- 11.2 deg (PMC6680033, n=627); thoracic kyphosis about 40 +- 10 deg [unverified];
# the neck's lordosis balancing the kyphosis so that the head stays upright. Degrees of flexion per joint, as
# fractions of each curve's total.
CURVES = {"lordosis": ((49.8, 11.2), {"lumbar5": 0.5, "lumbar3": -0.25, "lumbar1": -0.25}),
          "kyphosis": ((40.0, 10.0), {"thorax_lower": 1 / 3, "thorax_upper": 1 / 3, "thorax_top": 1 / 3,
                                      "neck_lower": -0.5, "neck_upper": -0.5})}
# ANSUR II measured fit adult soldiers; the people in photos vary more (ages, builds): their spread, widened
SPREAD = 2.0
SPINE_POINTS = ("hip", "spine_01", "spine_02", "spine_03", "spine_04", "spine_05", "neck", "neck_02", "neck_03")
# annotation habits, as fractions of stature: how far behind the model's spine markers an annotator may place the
# chain (negative = deeper, towards the vertebral bodies), how far up or down the chain, and a small uniform
# jitter (up/down, front/back) per marker (the random part of annotating is the noise model's, not a habit)
SPINE_DEPTH = (-0.02, 0.035)
SPINE_SHIFT = 0.012
JITTER = {"spine": (0.004, 0.003), "head": (0.01, 0.01), "neck": (0.006, 0.012), "joints": (0.01, 0.01)}
JOINT_POINTS = tuple(f"{s}_{j}" for j in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle") for s in ("left", "right"))
SACRUM_TOWARDS_HIP_JOINTS = (-0.2, 0.5)  # fraction of the way from the sacrum to the mid hip-joint centre


@lru_cache(maxsize=1)
def anthropometry() -> dict[str, Any]:
    return json.loads(ANTHROPOMETRY_PATH.read_text())


@dataclass
class Bodies:
    """Rest geometry per person: joint centres [N, B, 3] and markers [N, M, 3], and each person's sex."""

    joints: np.ndarray
    markers: np.ndarray
    sex: np.ndarray


def spine_curves(model: KinematicModel, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-person flexion offsets [n, B] (radians) giving each spine its lordosis and kyphosis."""
    totals = [np.deg2rad(np.clip(rng.normal(mean, sd, n), mean - 2 * sd, mean + 2 * sd)) for (mean, sd), _ in
              CURVES.values()]
    return curve_offsets(model, np.stack(totals, 1) if totals else np.zeros((n, 0)))


def curve_offsets(model: KinematicModel, totals: np.ndarray) -> np.ndarray:
    """Flexion offsets [n, B] (radians) of the curves' totals [n, len(CURVES)] (radians)."""
    out = np.zeros((len(totals), len(model.body_names)))
    for (_, share), total in zip(CURVES.values(), totals.T):
        for body, fraction in share.items():
            if body in model.body_names:
                out[:, model.body(body)] += fraction * total
    return out


def model_measure(model: KinematicModel, measure: str) -> float | None:
    """The model's own value of an ANSUR measure (fraction of stature), where their landmarks correspond."""
    if measure not in MODEL_MEASURES:
        return None
    a, b, axis = MODEL_MEASURES[measure]
    pos = dict(zip(model.marker_names, model.markers))

    def at(name: str) -> np.ndarray:
        return (pos[f"left_{name[4:]}"] + pos[f"right_{name[4:]}"]) / 2 if name.startswith("mid_") else pos[name]

    d = at(b) - at(a)
    return float(abs(d[axis]) if axis is not None else np.linalg.norm(d))


def sample_measures(model: KinematicModel, n: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray],
                                                                                       np.ndarray]:
    """Each measure as a factor on the model's segment, and the sexes drawn (half and half)."""
    a = anthropometry()
    names = list(a["measures"])
    sexes = np.array(sorted(a["sexes"]))
    sex = rng.choice(sexes, n)
    pooled = {m: model_measure(model, m) or np.mean([a["sexes"][s]["mean"][m] for s in sexes]) for m in names}
    out = {m: np.ones(n) for m in names}
    for s in sexes:
        rows = np.flatnonzero(sex == s)
        st = a["sexes"][s]
        w, v = np.linalg.eigh(np.array(st["corr"]))  # the rounded correlations, made positive definite
        z = np.clip(rng.standard_normal((len(rows), len(names))) @ (v * np.sqrt(np.clip(w, 1e-6, None))).T, -2, 2)
        for j, m in enumerate(names):
            out[m][rows] = (st["mean"][m] + z[:, j] * SPREAD * st["sd"][m]) / pooled[m]
    return out, sex


def sample_bodies(model: KinematicModel, n: int, rng: np.random.Generator, proportions: bool = True,
                  habits: bool = True) -> Bodies:
    """Rest geometry of ``n`` people: ANSUR proportions and (with ``habits``) annotators' placements."""
    factors, sex = sample_measures(model, n, rng) if proportions else ({}, np.full(n, "model"))
    joints, markers = rest_geometry(model, factors, n)
    if habits:
        _habits(model, markers, rng)
    return Bodies(joints, markers, sex)


def rest_geometry(model: KinematicModel, factors: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Joint centres [n, B, 3] and markers [n, M, 3] of people whose segments are the model's times ``factors``
    (ANSUR measure -> [n] factor; a measure not given stays the model's)."""
    nb = len(model.body_names)
    scale = np.ones((n, nb, 3))
    for b, name in enumerate(model.body_names):
        for axis, measure in enumerate(BODY_SCALES[name.removeprefix("left_").removeprefix("right_")]):
            if measure is not None and measure in factors:
                scale[:, b, axis] = factors[measure]
    joints = np.empty((n, nb, 3))
    for b in range(nb):  # parents come before their children
        p = model.parents[b]
        joints[:, b] = model.joints[b] if p < 0 else joints[:, p] + scale[:, p] * (model.joints[b] - model.joints[p])
    mb = model.marker_body
    return joints, joints[:, mb] + scale[:, mb] * (model.markers - model.joints[mb])


HABITS = ("spine_depth", "spine_shift", "sacrum")  # the placement habits a fit can take as parameters


def build_bounds(model: KinematicModel) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The parameters of a person's build (each ANSUR measure's factor, ``HABITS``, then each of ``CURVES``' total
    in radians) and the population's range of each: the factors at +-2 SD x ``SPREAD`` of either sex, the habits'
    own ranges, the curves' +-2 SD widened to take in the model's straight spine (0)."""
    a = anthropometry()
    names = list(a["measures"])
    pooled = {m: model_measure(model, m) or np.mean([a["sexes"][s]["mean"][m] for s in a["sexes"]]) for m in names}
    lo = [min((st["mean"][m] - 2 * SPREAD * st["sd"][m]) / pooled[m] for st in a["sexes"].values()) for m in names]
    hi = [max((st["mean"][m] + 2 * SPREAD * st["sd"][m]) / pooled[m] for st in a["sexes"].values()) for m in names]
    lo += [SPINE_DEPTH[0], -SPINE_SHIFT, SACRUM_TOWARDS_HIP_JOINTS[0]]
    hi += [SPINE_DEPTH[1], SPINE_SHIFT, SACRUM_TOWARDS_HIP_JOINTS[1]]
    lo += [np.deg2rad(min(0.0, mean - 2 * sd)) for (mean, sd), _ in CURVES.values()]
    hi += [np.deg2rad(max(0.0, mean + 2 * sd)) for (mean, sd), _ in CURVES.values()]
    return names + list(HABITS) + list(CURVES), np.array(lo), np.array(hi)


def build_geometry(model: KinematicModel, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rest geometry of builds ``values`` [n, len(build_bounds names)] (the measure factors and ``HABITS``; the
    curves are angles, ``curve_offsets``)."""
    names = list(anthropometry()["measures"])  # the first columns, as in build_bounds
    nm = len(names)
    joints, markers = rest_geometry(model, {m: values[:, j] for j, m in enumerate(names)}, len(values))
    depth, shift, sacrum = (values[:, nm + j, None] for j in range(len(HABITS)))
    _place(model, markers, depth, shift, sacrum)
    return joints, markers


def _habits(model: KinematicModel, markers: np.ndarray, rng: np.random.Generator) -> None:
    """Move the markers (in place) where different annotators put them."""
    n = len(markers)
    idx = {m: i for i, m in enumerate(model.marker_names)}
    depth = rng.uniform(*SPINE_DEPTH, (n, 1))  # the whole chain deeper or nearer the skin (-z)
    shift = rng.uniform(-SPINE_SHIFT, SPINE_SHIFT, (n, 1))  # or a little up or down the chain
    jitter = []
    for group, names in (("spine", SPINE_POINTS), ("head", ("head",)), ("neck", ("neck",)), ("joints", JOINT_POINTS)):
        up, dz = JITTER[group]
        rows = [idx[m] for m in names if m in idx]
        jitter.append((rows, rng.uniform(-up, up, (n, len(rows))), rng.uniform(-dz, dz, (n, len(rows)))))
    sacrum = rng.uniform(*SACRUM_TOWARDS_HIP_JOINTS, (n, 1)) if {"hip", "left_hip", "right_hip"} <= set(idx) else None
    _place(model, markers, depth, shift, sacrum, jitter)


def _place(model: KinematicModel, markers: np.ndarray, depth: np.ndarray, shift: np.ndarray,
           sacrum: np.ndarray | None, jitter: list[tuple[list[int], np.ndarray, np.ndarray]] = ()) -> None:
    """Apply the placement habits (in place): the spine chain ``depth`` behind and ``shift`` up the model's
    markers, per-marker ``jitter`` (rows, up, depth), the sacrum ``sacrum`` of the way to the mid hip-joint centre."""
    idx = {m: i for i, m in enumerate(model.marker_names)}
    spine = [idx[m] for m in SPINE_POINTS if m in idx]
    markers[:, spine, 2] -= depth
    markers[:, spine, 1] += shift
    for rows, up, dz in jitter:
        markers[:, rows, 1] += up
        markers[:, rows, 2] += dz
    if sacrum is not None and {"hip", "left_hip", "right_hip"} <= set(idx):
        mid = (markers[:, idx["left_hip"]] + markers[:, idx["right_hip"]]) / 2
        markers[:, idx["hip"]] += sacrum * (mid - markers[:, idx["hip"]])
