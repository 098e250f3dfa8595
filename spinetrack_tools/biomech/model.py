"""The SpineTrack kinematic model: a tree of rigid bodies with an articulated spine and 37 markers.

``definition()`` holds the literature proportions and ranges of motion (sources in
``opensim_models/README.md``). ``scripts/build_opensim_model.py`` turns it into the OpenSim model
``opensim_models/spinetrack_fullbody.osim`` and exports that model's kinematic tree, read back from
OpenSim, to ``spinetrack_fullbody.kinematics.json``; ``default_model()`` loads that export, so the numpy
forward kinematics here is the OpenSim model's (a test compares both on random poses).

Frames: x = the person's left, y = up, z = forward. Lengths are fractions of stature. Every joint
rotates its body about x (flexion), then z (lateral bending / abduction), then y (axial rotation):
R = Rx @ Rz @ Ry, as the OpenSim ``CustomJoint`` with rotation axes x, z, y composes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..skeleton import SPINETRACK37

MODELS_DIR = Path(__file__).resolve().parents[2] / "opensim_models"
OSIM_PATH = MODELS_DIR / "spinetrack_fullbody.osim"
KINEMATICS_PATH = MODELS_DIR / "spinetrack_fullbody.kinematics.json"
THRESHOLDS_PATH = MODELS_DIR / "thresholds.json"
AXES = ("flex", "lat", "rot")  # rotation about x, z, y


@dataclass(frozen=True, eq=False)
class KinematicModel:
    """Rigid bodies in a tree; each rotates about its joint centre by R = Rx(flex) @ Rz(lat) @ Ry(rot)."""

    body_names: tuple[str, ...]
    parents: np.ndarray  # [B] parent body index, -1 for the root (pelvis)
    joints: np.ndarray  # [B, 3] joint centre in the rest pose
    ranges: np.ndarray  # [B, 3, 2] radians: (flex, lat, rot) ranges of motion
    marker_names: tuple[str, ...]
    marker_body: np.ndarray  # [M] body each marker is fixed to
    markers: np.ndarray  # [M, 3] marker position in the rest pose
    normals: np.ndarray  # [M, 3] outward surface direction for self-occlusion (0 = never occluded)
    stature_m: float = 1.75  # the OpenSim model's stature; lengths here are fractions of it

    def body(self, name: str) -> int:
        return self.body_names.index(name)

    def coordinate_names(self) -> list[tuple[int, int, str]]:
        """(body, axis, name) of every rotational degree of freedom with a non-zero range."""
        return [(b, a, f"{self.body_names[b]}_{AXES[a]}") for b in range(len(self.body_names))
                for a in range(3) if self.parents[b] >= 0 and self.ranges[b, a, 1] > self.ranges[b, a, 0]]

    def to_json(self) -> dict[str, Any]:
        return {
            "stature_m": self.stature_m,
            "bodies": [{"name": n, "parent": int(p), "joint": j.tolist(), "ranges_rad": r.tolist()}
                       for n, p, j, r in zip(self.body_names, self.parents, self.joints, self.ranges)],
            "markers": [{"name": n, "body": int(b), "position": p.tolist(), "normal": q.tolist()}
                        for n, b, p, q in zip(self.marker_names, self.marker_body, self.markers, self.normals)],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "KinematicModel":
        b, m = data["bodies"], data["markers"]
        return cls(
            body_names=tuple(x["name"] for x in b),
            parents=np.array([x["parent"] for x in b]),
            joints=np.array([x["joint"] for x in b], dtype=np.float64),
            ranges=np.array([x["ranges_rad"] for x in b], dtype=np.float64),
            marker_names=tuple(x["name"] for x in m),
            marker_body=np.array([x["body"] for x in m]),
            markers=np.array([x["position"] for x in m], dtype=np.float64),
            normals=np.array([x["normal"] for x in m], dtype=np.float64),
            stature_m=float(data["stature_m"]),
        )


@lru_cache(maxsize=4)
def load_model(path: Path = KINEMATICS_PATH) -> KinematicModel:
    """The kinematic tree exported from the OpenSim model (no opensim needed)."""
    return KinematicModel.from_json(json.loads(Path(path).read_text()))


def default_model() -> KinematicModel:
    return load_model(KINEMATICS_PATH)


def _mirror(v: Sequence[float]) -> tuple[float, float, float]:
    return (-v[0], v[1], v[2])


def definition() -> KinematicModel:
    """The model as designed: literature proportions (fractions of stature) and ranges (degrees).

    Every number's source is in ``opensim_models/README.md``.
    """
    # left-side limbs: name -> (parent, joint centre, ranges (flex about x, lat about z, rot about y))
    left_bodies = {
        "upper_arm": ("thorax_top", (0.115, 0.816, -0.01), ((-170, 50), (-20, 170), (-60, 90))),
        "forearm": ("upper_arm", (0.125, 0.643, -0.01), ((-145, 0), (-5, 5), (0, 0))),
        "thigh": ("pelvis", (0.05, 0.502, 0.0), ((-120, 20), (-30, 45), (-40, 45))),
        "shank": ("thigh", (0.055, 0.275, 0.01), ((0, 140), (0, 0), (-5, 5))),
        "foot": ("shank", (0.055, 0.033, -0.01), ((-20, 45), (-15, 15), (0, 0))),
    }
    # Ranges in degrees, positive = flexion / left bending / left rotation. Lumbar: Christophy 2012 whole-
    # lumbar ROM (flexion 70, extension 26, lateral 25, axial 45) spread over three joints with its
    # per-level rhythm; thoracic: Edmondston 2011 (flexion 11.5, extension 8.7) split over three joints;
    # cervical: Vasavada, Li & Delp 1998 C2-T1 halves split over two joints, skull-C2 for the head.
    bodies: list[tuple[str, str | None, tuple, tuple]] = [
        ("pelvis", None, (0.0, 0.502, 0.0), ((0, 0), (0, 0), (0, 0))),
        ("lumbar5", "pelvis", (0.0, 0.536, -0.04), ((-3.25, 8.75), (-3.4, 3.4), (-9.4, 9.4))),
        ("lumbar3", "lumbar5", (0.0, 0.578, -0.045), ((-10.1, 27.2), (-10.7, 10.7), (-19.9, 19.9))),
        ("lumbar1", "lumbar3", (0.0, 0.616, -0.045), ((-12.6, 34.0), (-11.0, 11.0), (-15.8, 15.8))),
        ("thorax_lower", "lumbar1", (0.0, 0.67, -0.045), ((-2.9, 3.83), (-7, 7), (-10, 10))),
        ("thorax_upper", "thorax_lower", (0.0, 0.734, -0.045), ((-2.9, 3.83), (-7, 7), (-10, 10))),
        ("thorax_top", "thorax_upper", (0.0, 0.807, -0.045), ((-2.9, 3.84), (-6, 6), (-10, 10))),
        ("neck_lower", "thorax_top", (0.0, 0.848, -0.035), ((-20.5, 20.5), (-16.75, 16.75), (-13.75, 13.75))),
        ("neck_upper", "neck_lower", (0.0, 0.876, -0.025), ((-20.5, 20.5), (-16.75, 16.75), (-13.75, 13.75))),
        ("head", "neck_upper", (0.0, 0.905, -0.015), ((-20, 20), (-6.5, 6.5), (-38.5, 38.5))),
    ]
    for side, sign in (("left", 1), ("right", -1)):
        for name, (parent, joint, rom) in left_bodies.items():
            parent_name = parent if parent in ("thorax_top", "pelvis") else f"{side}_{parent}"
            j = joint if sign > 0 else _mirror(joint)
            # mirroring across the sagittal plane negates rotations about z and y
            r = rom if sign > 0 else (rom[0], (-rom[1][1], -rom[1][0]), (-rom[2][1], -rom[2][0]))
            bodies.append((f"{side}_{name}", parent_name, j, r))

    back, front, lat, none = (0, 0, -1), (0, 0, 1), (1, 0, 0), (0, 0, 0)
    centre = {  # marker -> (body, rest position, normal)
        "hip": ("pelvis", (0.0, 0.536, -0.06), back),
        "spine_01": ("lumbar5", (0.0, 0.578, -0.065), back),
        "spine_02": ("lumbar3", (0.0, 0.616, -0.07), back),
        "spine_03": ("lumbar1", (0.0, 0.67, -0.07), back),
        "spine_04": ("thorax_lower", (0.0, 0.734, -0.075), back),
        "spine_05": ("thorax_upper", (0.0, 0.807, -0.065), back),
        "neck": ("thorax_top", (0.0, 0.848, -0.045), none),
        "neck_02": ("neck_lower", (0.0, 0.876, -0.03), back),
        "neck_03": ("neck_upper", (0.0, 0.905, -0.02), back),
        "head": ("head", (0.0, 1.0, 0.0), none),
        "nose": ("head", (0.0, 0.91, 0.095), front),
    }
    paired = {  # marker -> (body, on the limb's own side, left position, normal)
        "eye": ("head", False, (0.032, 0.935, 0.075), front),
        "ear": ("head", False, (0.07, 0.92, 0.0), lat),
        "shoulder": ("thorax_top", False, (0.115, 0.816, -0.01), lat),
        "clavicle": ("thorax_top", False, (0.055, 0.83, 0.04), front),
        "latissimus": ("thorax_lower", False, (0.09, 0.72, -0.06), back),
        "elbow": ("upper_arm", True, (0.125, 0.643, -0.01), lat),
        "wrist": ("forearm", True, (0.13, 0.502, 0.0), lat),
        "hip": ("thigh", True, (0.05, 0.502, 0.0), lat),
        "knee": ("shank", True, (0.055, 0.275, 0.01), lat),
        "ankle": ("foot", True, (0.055, 0.033, -0.01), lat),
        "heel": ("foot", True, (0.055, 0.003, -0.05), none),
        "big_toe": ("foot", True, (0.04, 0.0, 0.13), none),
        "small_toe": ("foot", True, (0.085, 0.0, 0.105), lat),
    }
    names = [b[0] for b in bodies]
    markers: dict[str, tuple[int, tuple, tuple]] = {m: (names.index(b), p, n) for m, (b, p, n) in centre.items()}
    for m, (b, sided, p, n) in paired.items():
        for side, sign in (("left", 1), ("right", -1)):
            body = f"{side}_{b}" if sided else b
            markers[f"{side}_{m}"] = (names.index(body), p if sign > 0 else _mirror(p),
                                      n if sign > 0 else _mirror(n))
    order = SPINETRACK37.names
    return KinematicModel(
        body_names=tuple(names),
        parents=np.array([names.index(b[1]) if b[1] else -1 for b in bodies]),
        joints=np.array([b[2] for b in bodies], dtype=np.float64),
        ranges=np.deg2rad(np.array([b[3] for b in bodies], dtype=np.float64)),
        marker_names=order,
        marker_body=np.array([markers[m][0] for m in order]),
        markers=np.array([markers[m][1] for m in order], dtype=np.float64),
        normals=np.array([markers[m][2] for m in order], dtype=np.float64),
    )


def rot(axis: int, a: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] about a coordinate axis (0=x, 1=y, 2=z)."""
    a = np.asarray(a, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    r = np.zeros(a.shape + (3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r[..., axis, axis] = 1
    r[..., i, i], r[..., i, j], r[..., j, i], r[..., j, j] = c, -s, s, c
    return r


def euler(angles: np.ndarray) -> np.ndarray:
    """[..., 3] angles (flex about x, lat about z, rot about y) -> [..., 3, 3] = Rx @ Rz @ Ry."""
    return rot(0, angles[..., 0]) @ rot(2, angles[..., 1]) @ rot(1, angles[..., 2])


def forward_kinematics(model: KinematicModel, angles: np.ndarray, root: np.ndarray | None = None,
                       joints: np.ndarray | None = None,
                       markers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Markers [N, M, 3] and body rotations [N, B, 3, 3] for joint angles [N, B, 3].

    ``root`` [N, 3, 3] rotates the whole body about the pelvis joint centre, which stays at the origin.
    ``joints`` [N, B, 3] and ``markers`` [N, M, 3] give each person its own rest geometry (a scaled body,
    see ``population``) instead of the model's.
    """
    k = kinematics(model, angles, root, joints, markers)
    return k.markers, k.rotations


@dataclass
class Kinematics:
    """Forward kinematics with what its derivatives need: a marker moves by ``axes[b, :, a] x (p - centres[b])``
    per radian of coordinate (b, a) when body b is the marker's body or one of its ancestors."""

    markers: np.ndarray  # [N, M, 3]
    rotations: np.ndarray  # [N, B, 3, 3] body rotations in the world
    centres: np.ndarray  # [N, B, 3] joint centres in the world
    axes: np.ndarray  # [N, B, 3, 3] world rotation axis (column a) of each body's coordinate a (flex, lat, rot)


def kinematics(model: KinematicModel, angles: np.ndarray, root: np.ndarray | None = None,
               joints: np.ndarray | None = None, markers: np.ndarray | None = None) -> Kinematics:
    """Forward kinematics of joint angles [N, B, 3] (see ``forward_kinematics``) with joint centres and axes."""
    n, nb = angles.shape[:2]
    J = np.broadcast_to(model.joints if joints is None else joints, (n, nb, 3))
    M = np.broadcast_to(model.markers if markers is None else markers, (n, len(model.marker_names), 3))
    local = euler(angles)
    flex = rot(0, angles[..., 0])
    rw = np.empty((n, nb, 3, 3))
    pw = np.empty((n, nb, 3))
    axes = np.empty((n, nb, 3, 3))
    eye = np.broadcast_to(np.eye(3), (n, 3, 3)) if root is None else root
    for b in range(nb):
        p = model.parents[b]
        parent = eye if p < 0 else rw[:, p]
        rw[:, b] = parent @ local[:, b]
        pw[:, b] = 0.0 if p < 0 else pw[:, p] + np.einsum("nij,nj->ni", rw[:, p], J[:, b] - J[:, p])
        # R = Rp Rx(flex) Rz(lat) Ry(rot): flex turns about Rp x, lat about Rp Rx z, rot about R y
        axes[:, b, :, 0] = parent[..., 0]
        axes[:, b, :, 1] = (parent @ flex[:, b])[..., 2]
        axes[:, b, :, 2] = rw[:, b, :, 1]
    mb = model.marker_body
    pts = pw[:, mb] + np.einsum("nmij,nmj->nmi", rw[:, mb], M - J[:, mb])
    return Kinematics(pts, rw, pw, axes)
