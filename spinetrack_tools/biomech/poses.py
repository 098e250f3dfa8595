"""Posed people from the SpineTrack kinematic / OpenSim model, seen through random cameras.

Poses are sampled inside the model's joint limits in a posture (standing, sitting, bending, lying,
inverted), marker positions come from OpenSim's forward kinematics when opensim is installed (else the
model's numpy export, identical to 1e-12, tested), random perspective cameras project them, and each
person is placed in an image. ``synth`` renders such scenes; the calibration samples them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..persons import Persons, images_table
from ..skeleton import SPINETRACK37, Skeleton
from .model import KinematicModel, default_model, forward_kinematics, rot
from .population import sample_bodies, spine_curves

POSTURES = ("standing", "sitting", "bending", "lying", "inverted")


def sample_poses(model: KinematicModel, n: int, rng: np.random.Generator, postures: Sequence[str] = POSTURES,
                 spread: float = 0.45) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joint angles [n, B, 3] inside the ranges of motion, root rotations [n, 3, 3] and posture labels [n].

    Joints a posture does not set are drawn uniformly from ``spread`` of their range towards zero
    (1.0 = the whole range of motion).
    """
    lo, hi = model.ranges[..., 0], model.ranges[..., 1]
    labels = rng.choice(np.array(postures), size=n)
    centre = np.clip(0.0, lo, hi)
    angles = centre + (rng.uniform(lo, hi, size=(n,) + lo.shape) - centre) * spread
    deg = np.deg2rad
    b = model.body

    def set_range(mask: np.ndarray, body: str, axis: int, a: float, c: float) -> None:
        k = int(mask.sum())
        if k:
            angles[mask, b(body), axis] = rng.uniform(deg(a), deg(c), size=k)

    for side in ("left", "right"):
        st = labels == "standing"
        set_range(st, f"{side}_thigh", 0, -35, 15)
        set_range(st, f"{side}_shank", 0, 0, 40)
        sit = labels == "sitting"
        set_range(sit, f"{side}_thigh", 0, -110, -70)
        set_range(sit, f"{side}_shank", 0, 60, 110)
        bend = labels == "bending"
        set_range(bend, f"{side}_thigh", 0, -100, -40)
        set_range(bend, f"{side}_shank", 0, 0, 25)
        set_range(bend, f"{side}_upper_arm", 0, -100, -20)
        inv = labels == "inverted"
        set_range(inv, f"{side}_upper_arm", 0, -170, -140)
        set_range(inv, f"{side}_thigh", 0, -60, 15)
    for lumbar in ("lumbar5", "lumbar3", "lumbar1"):
        set_range(labels == "bending", lumbar, 0, 8, 20)
    angles = np.clip(angles, lo, hi)
    angles[:, 0] = 0.0

    yaw = rot(1, rng.uniform(0, 2 * np.pi, n))
    tilt = np.zeros(n)
    axis = np.zeros(n, dtype=int)
    lying = labels == "lying"
    tilt[lying] = rng.choice([-1, 1], lying.sum()) * deg(90) + rng.normal(0, deg(8), lying.sum())
    axis[lying] = rng.choice([0, 2], lying.sum())  # on the back / front (x) or on the side (z)
    inv = labels == "inverted"
    tilt[inv] = deg(180) + rng.normal(0, deg(12), inv.sum())
    axis[inv] = 2
    root = np.where((axis == 0)[:, None, None], rot(0, tilt), rot(2, tilt))
    return angles, yaw @ root, labels


@dataclass
class Camera:
    """Perspective camera looking at the origin from ``position``."""

    rotation: np.ndarray  # [N, 3, 3] world -> camera
    position: np.ndarray  # [N, 3]
    focal: np.ndarray  # [N]


def random_cameras(n: int, rng: np.random.Generator) -> Camera:
    az = rng.uniform(0, 2 * np.pi, n)
    el = np.deg2rad(rng.uniform(-20, 35, n))
    dist = rng.uniform(3.5, 8.0, n)
    pos = np.stack([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)], axis=1) * dist[:, None]
    fwd = -pos / np.linalg.norm(pos, axis=1, keepdims=True)  # camera z axis towards the person
    right = np.cross(fwd, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    down = np.cross(fwd, right)
    world_to_cam = np.stack([right, down, fwd], axis=1)  # rows: camera x (right), y (down), z (forward)
    world_to_cam = rot(2, np.deg2rad(rng.normal(0, 5, n))) @ world_to_cam  # small roll
    return Camera(world_to_cam, pos, rng.uniform(1.0, 1.6, n) * dist)


def project(points: np.ndarray, body_rot: np.ndarray, model: KinematicModel,
            cam: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image-plane coordinates [N, M, 2] (unscaled), depth [N, M] and self-occlusion [N, M] of markers."""
    rel = points - cam.position[:, None]
    pc = np.einsum("nij,nmj->nmi", cam.rotation, rel)
    uv = cam.focal[:, None, None] * pc[..., :2] / pc[..., 2:3]
    normals = np.einsum("nmij,mj->nmi", body_rot[:, model.marker_body], model.normals)
    to_cam = -rel / np.linalg.norm(rel, axis=2, keepdims=True)
    facing = np.einsum("nmi,nmi->nm", normals, to_cam)
    occluded = facing < -0.3
    return uv, pc[..., 2], occluded


def posed_markers(model: KinematicModel, angles: np.ndarray, root: np.ndarray,
                  fk: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Markers [N, M, 3] and body rotations for joint angles and root rotations.

    ``fk``: "opensim" (OpenSim's forward kinematics of the shipped model), "numpy" (its export), or
    "auto" (OpenSim when installed).
    """
    if fk == "auto":
        fk = "opensim" if importlib.util.find_spec("opensim") is not None else "numpy"
    if fk == "numpy":
        return forward_kinematics(model, angles, root)
    from .osim import OsimModel

    pts, rots = OsimModel.shared().forward_kinematics(model, angles)
    return np.einsum("nij,nmj->nmi", root, pts), root[:, None] @ rots


@dataclass
class Scene:
    """Persons placed in images: the labels (persons with a labelled point) and what rendering needs."""

    persons: Persons  # labels: v=2 visible, 1 self-occluded, 0 outside the image; ``posture`` attribute
    image_wh: np.ndarray  # [I, 2] image sizes
    person_image: np.ndarray  # [P] image index of every posed person (also those left out of ``persons``)
    xy: np.ndarray  # [P, K, 2] image coordinates of every marker, also outside the image
    depth: np.ndarray  # [P, K] distance along the camera axis
    occluded: np.ndarray  # [P, K] self-occluded markers
    stature_px: np.ndarray  # [P] stature in pixels at the person's median depth


def pose_scene(num_images: int, seed: int = 0, persons_per_image: tuple[int, int] = (1, 3),
               model: KinematicModel | None = None, skeleton: Skeleton = SPINETRACK37,
               postures: Sequence[str] = POSTURES, fk: str = "auto", spread: float = 0.45,
               population: bool = False) -> Scene:
    """``num_images`` images with posed, projected persons placed side by side. Deterministic for a seed.

    Points outside the image get v=0 and x=y=0; self-occluded points v=1. Image ids are 1..I, file names
    ``<id:012d>.jpg``; annotation ids run from 1 over the persons with a labelled point. With ``population``
    every person has its own proportions and annotator habits (``population.sample_bodies``; the model's
    numpy forward kinematics, which equals OpenSim's).
    """
    model = model or default_model()
    if model.marker_names != skeleton.names:
        raise ValueError("model markers and skeleton names differ")
    rng = np.random.default_rng(seed)
    lo, hi = persons_per_image
    counts = rng.integers(lo, hi + 1, num_images)
    n = int(counts.sum())
    angles, root, postures_ = sample_poses(model, n, rng, postures, spread)
    if population:
        prng = np.random.default_rng([seed, 1])
        bodies = sample_bodies(model, n, prng)
        angles = angles.copy()
        angles[..., 0] += spine_curves(model, n, prng)
        pts, body_rot = forward_kinematics(model, angles, root, bodies.joints, bodies.markers)
    else:
        pts, body_rot = posed_markers(model, angles, root, fk)
    stature = rng.uniform(1.5, 1.95, n)
    pts *= stature[:, None, None]  # metres
    cams = random_cameras(n, rng)
    uv, depth, occluded = project(pts, body_rot, model, cams)

    sizes = np.array([[640, 480], [480, 640], [800, 600], [1024, 768]])
    img_wh = sizes[rng.integers(0, len(sizes), num_images)]
    person_img = np.repeat(np.arange(num_images), counts)
    slot = np.concatenate([np.arange(c) for c in counts]) if n else np.zeros(0, int)
    # place each person in a horizontal slot of its image, scaled to a random height
    lo_uv, hi_uv = uv.min(axis=1), uv.max(axis=1)
    extent = np.maximum(hi_uv - lo_uv, 1e-6)
    W = img_wh[person_img, 0].astype(float)
    H = img_wh[person_img, 1].astype(float)
    slot_w = W / counts[person_img]
    scale = np.minimum(rng.uniform(0.3, 0.95, n) * H / extent[:, 1], 0.95 * slot_w / extent[:, 0])
    size = extent * scale[:, None]
    x0 = slot * slot_w + rng.uniform(0, 1, n) * np.maximum(slot_w - size[:, 0], 0)
    y0 = rng.uniform(0, 1, n) * np.maximum(H - size[:, 1], 0)
    spill = rng.random(n) < 0.1  # some persons are cut by the image border
    y0[spill] += size[spill, 1] * rng.uniform(0.1, 0.4, spill.sum())
    xy = (uv - lo_uv[:, None]) * scale[:, None, None] + np.stack([x0, y0], 1)[:, None]
    inside = (xy[..., 0] >= 0) & (xy[..., 0] < W[:, None]) & (xy[..., 1] >= 0) & (xy[..., 1] < H[:, None])
    v = np.where(inside, np.where(occluded, 1, 2), 0)
    kp = np.concatenate([np.where(v[..., None] > 0, xy, 0.0), v[..., None]], axis=2)
    kept = (v > 0).any(axis=1)
    boxes = np.array([_box(xy[p, v[p] > 0], W[p], H[p]) for p in np.flatnonzero(kept)]).reshape(-1, 4)
    images = images_table([{"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": int(img_wh[i, 0]),
                            "height": int(img_wh[i, 1])} for i in range(num_images)])
    persons = Persons.build(skeleton, kp[kept], person_img[kept] + 1, ann_ids=np.arange(1, kept.sum() + 1),
                            boxes=boxes, areas=0.55 * boxes[:, 2] * boxes[:, 3], iscrowd=np.zeros(int(kept.sum())),
                            images=images, attrs={"posture": postures_[kept].astype(object)})
    px_per_m = scale * cams.focal / np.median(depth, axis=1) if n else np.zeros(0)
    return Scene(persons, img_wh, person_img, xy, depth, occluded, stature * px_per_m)


def _box(pts: np.ndarray, width: float, height: float) -> list[float]:
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = 0.08 * (hi - lo) + 2.0
    x1, y1 = max(lo[0] - pad[0], 0.0), max(lo[1] - pad[1], 0.0)
    x2, y2 = min(hi[0] + pad[0], width), min(hi[1] + pad[1], height)
    return [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
