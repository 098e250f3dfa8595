"""Synthetic SpineTrack-like keypoint data with known truth.

The SpineTrack OpenSim model (``biomech.model``: rigid bodies, joints with ranges of motion, one marker
per keypoint) is posed inside its joint limits, placed in a posture (standing, sitting, bending, lying,
inverted), seen through a random perspective camera and written as COCO keypoints. Marker positions
come from OpenSim's forward kinematics when opensim is installed, else from the model's numpy export
(identical to 1e-12, tested).

``corrupt`` injects the label corruptions a broken exporter or a careless annotator makes and returns
which annotation got which, so ``flag`` can be scored for precision and recall.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .biomech.model import KinematicModel, default_model, forward_kinematics, rot
from .coco import empty_coco, from_dict
from .io import atomic_write_bytes
from .progress import progress
from .skeleton import SPINETRACK37, Skeleton

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
    from .biomech.osim import OsimModel

    pts, rots = OsimModel.shared().forward_kinematics(model, angles)
    return np.einsum("nij,nmj->nmi", root, pts), root[:, None] @ rots


def generate(num_images: int, seed: int = 0, persons_per_image: tuple[int, int] = (1, 3),
             model: KinematicModel | None = None, skeleton: Skeleton = SPINETRACK37,
             postures: Sequence[str] = POSTURES, fk: str = "auto", spread: float = 0.45,
             image_dir: Path | None = None) -> dict[str, Any]:
    """A COCO keypoint dict of ``num_images`` images with posed, projected persons.

    Deterministic for a seed. Points outside the image get v=0 and x=y=0; self-occluded points v=1.
    With ``image_dir``, the images are rendered there as JPEG files (see ``render``).
    """
    model = model or default_model()
    if model.marker_names != skeleton.names:
        raise ValueError("model markers and skeleton names differ")
    rng = np.random.default_rng(seed)
    lo, hi = persons_per_image
    counts = rng.integers(lo, hi + 1, num_images)
    n = int(counts.sum())
    angles, root, postures_ = sample_poses(model, n, rng, postures, spread)
    pts, body_rot = posed_markers(model, angles, root, fk)
    stature = rng.uniform(1.5, 1.95, n)
    pts *= stature[:, None, None]  # metres
    cams = random_cameras(n, rng)
    uv, depth, occluded = project(pts, body_rot, model, cams)

    sizes = np.array([[640, 480], [480, 640], [800, 600], [1024, 768]])
    img_wh = sizes[rng.integers(0, len(sizes), num_images)]
    coco = empty_coco(skeleton)
    coco["info"] = {"description": "spinetrack-tools synthetic keypoints", "seed": seed}
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
    if image_dir is not None:
        px_per_m = scale * cams.focal / np.median(depth, axis=1)
        _render_images(image_dir, img_wh, person_img, xy, depth, occluded, stature * px_per_m, skeleton, seed)
    xy[v == 0] = 0.0

    for i in range(num_images):
        coco["images"].append({"id": i + 1, "file_name": f"{i + 1:012d}.jpg",
                               "width": int(img_wh[i, 0]), "height": int(img_wh[i, 1])})
    kp = np.concatenate([xy, v[..., None]], axis=2)
    for p in range(n):
        lab = v[p] > 0
        if not lab.any():
            continue
        bx = _box(xy[p, lab], W[p], H[p])
        coco["annotations"].append({
            "id": len(coco["annotations"]) + 1,
            "image_id": int(person_img[p]) + 1,
            "category_id": 1,
            "bbox": bx,
            "area": 0.55 * bx[2] * bx[3],
            "iscrowd": 0,
            "num_keypoints": int(lab.sum()),
            "keypoints": _flat(kp[p]),
            "posture": str(postures_[p]),
        })
    return coco


def _render_images(image_dir: Path, img_wh: np.ndarray, person_img: np.ndarray, xy: np.ndarray,
                   depth: np.ndarray, occluded: np.ndarray, stature_px: np.ndarray, sk: Skeleton,
                   seed: int) -> None:
    """Draw every image (background and people) and write it as a JPEG, atomically."""
    from .render import Person, background, draw_people

    image_dir.mkdir(parents=True, exist_ok=True)
    chain = sk.spine_chain
    for i, (w, h) in enumerate(progress(img_wh, total=len(img_wh), description="rendering images")):
        rng = np.random.default_rng([seed, i])
        im = background(int(w), int(h), rng)
        people = [Person(xy[p], depth[p], bool((~occluded[p, chain]).mean() > 0.5), float(stature_px[p]))
                  for p in np.flatnonzero(person_img == i)]
        draw_people(im, people, sk, rng)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        atomic_write_bytes(image_dir / f"{i + 1:012d}.jpg", buf.getvalue())


def _box(pts: np.ndarray, width: float, height: float) -> list[float]:
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = 0.08 * (hi - lo) + 2.0
    x1, y1 = max(lo[0] - pad[0], 0.0), max(lo[1] - pad[1], 0.0)
    x2, y2 = min(hi[0] + pad[0], width), min(hi[1] + pad[1], height)
    return [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]


def _flat(kp: np.ndarray) -> list[float | int]:
    out: list[float | int] = kp.reshape(-1).tolist()
    out[2::3] = [int(x) for x in out[2::3]]
    return out


CORRUPTIONS = ("lr_swap", "spine_order", "spine_detached", "collapsed", "zero_visible", "far_outside",
               "outside_box", "limb_scale", "skeleton_scale", "noise", "duplicate")

_LIMBS = {  # chains that a swap or a scale bug moves together, root first
    "arm": ("shoulder", "elbow", "wrist"),
    "leg": ("hip", "knee", "ankle", "big_toe", "small_toe", "heel"),
}


def corrupt(coco: dict[str, Any], fraction: float = 0.1, seed: int = 0,
            kinds: Sequence[str] = CORRUPTIONS) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Copy of ``coco`` with a ``fraction`` of annotations corrupted, and the truth list.

    Each corrupted annotation gets one kind; a corruption that would change nothing visible (a swap of
    two coincident points, say) is not applied. ``duplicate`` adds a near-copy with a new id.
    """
    unknown = set(kinds) - set(CORRUPTIONS)
    if unknown:
        raise ValueError(f"unknown corruption kinds: {sorted(unknown)}")
    rng = np.random.default_rng(seed)
    ds = from_dict(coco)
    sk = ds.skeleton
    anns = [dict(a) for a in ds.annotations]
    out = dict(coco)
    out["annotations"] = anns
    w, h = ds.image_size()
    truth: list[dict[str, Any]] = []
    chosen = rng.permutation(len(anns))[: int(round(fraction * len(anns)))]
    next_id = int(ds.ann_ids.max(initial=0)) + 1
    for row in chosen:
        kp = ds.keypoints[row].copy()
        lab = kp[:, 2] > 0
        if lab.sum() < 10:
            continue
        box = ds.boxes[row]
        torso = 0.3 * max(box[2], box[3])
        detail: list[str] = []
        for kind in rng.permutation(np.array(kinds)):
            new = _apply(str(kind), kp.copy(), lab, box, torso, (w[row], h[row]), sk, rng, detail)
            if new is not None:
                break
        else:
            continue
        if kind == "duplicate":
            dup = dict(anns[row], id=next_id, keypoints=_flat(new))
            anns.append(dup)
            truth.append({"annotation_id": next_id, "image_id": dup["image_id"], "kind": "duplicate",
                          "duplicate_of": anns[row]["id"]})
            next_id += 1
        else:
            anns[row]["keypoints"] = _flat(new)
            truth.append({"annotation_id": anns[row]["id"], "image_id": anns[row]["image_id"], "kind": str(kind),
                          **({"detail": detail[0]} if detail else {})})
    return out, truth


def _apply(kind: str, kp: np.ndarray, lab: np.ndarray, box: np.ndarray, torso: float,
           image_wh: tuple[float, float], sk: Skeleton, rng: np.random.Generator,
           detail: list[str]) -> np.ndarray | None:
    """One corruption of one annotation's [K, 3] keypoints, or None when it does not apply."""
    xy = kp[:, :2]
    labelled = np.flatnonzero(lab)
    if kind == "lr_swap":
        limb = str(rng.choice(list(_LIMBS)))
        start = int(rng.integers(0, 2))  # from the root joint, or from the next joint down
        parts = _LIMBS[limb][start:]
        left, right = sk.indices(f"left_{p}" for p in parts), sk.indices(f"right_{p}" for p in parts)
        both = lab[left] & lab[right]
        left, right = np.array(left)[both], np.array(right)[both]
        if len(left) < 2 or np.linalg.norm(xy[left] - xy[right], axis=1).mean() < 0.5 * torso:
            return None
        kp[left], kp[right] = kp[right].copy(), kp[left].copy()
        detail[:] = [f"{limb} from {parts[0]}"]
    elif kind == "spine_order":
        chain = [i for i in sk.spine_chain if lab[i]]
        if len(chain) < 6:
            return None
        i = int(rng.integers(1, len(chain) - 3))
        j = i + int(rng.integers(2, 4))
        a, b = chain[i], chain[min(j, len(chain) - 1)]
        if np.linalg.norm(xy[a] - xy[b]) < 0.2 * torso:
            return None
        kp[[a, b], :2] = kp[[b, a], :2]
    elif kind == "spine_detached":
        chain = [i for i in sk.spine_chain if lab[i]]
        if len(chain) < 5:
            return None
        ang = rng.uniform(0, 2 * np.pi)
        xy[chain] += rng.uniform(0.7, 1.3) * torso * np.array([np.cos(ang), np.sin(ang)])
    elif kind == "collapsed":
        pts = rng.choice(labelled, size=max(6, int(len(labelled) * rng.uniform(0.6, 1.0))), replace=False)
        xy[pts] = xy[rng.choice(labelled)] + rng.normal(0, 0.3, (len(pts), 2))
    elif kind == "zero_visible":
        pts = rng.choice(labelled, size=int(rng.integers(1, 5)), replace=False)
        if np.linalg.norm(xy[pts], axis=1).min() < 0.5 * torso:
            return None
        xy[pts] = 0.0
    elif kind == "far_outside":
        pts = rng.choice(labelled, size=int(rng.integers(1, 4)), replace=False)
        wh = np.array(image_wh)
        direction = rng.choice([-1.0, 1.0], size=(len(pts), 2)) * (rng.random((len(pts), 2)) < 0.7)
        direction[~direction.any(axis=1), 0] = 1.0
        xy[pts] = np.where(direction > 0, wh, 0) + direction * rng.uniform(0.3, 1.0, (len(pts), 2)) * wh
    elif kind == "outside_box":
        pts = rng.choice(labelled, size=int(rng.integers(1, 4)), replace=False)
        x, y, bw, bh = box
        ang = rng.uniform(0, 2 * np.pi, len(pts))
        centre = np.array([x + bw / 2, y + bh / 2])
        moved = centre + np.stack([np.cos(ang) * bw, np.sin(ang) * bh], 1) * rng.uniform(0.9, 1.4, (len(pts), 1))
        moved = np.clip(moved, 0, np.array(image_wh) - 1)
        outside = (moved[:, 0] < x - 0.3 * bw) | (moved[:, 0] > x + 1.3 * bw) | \
                  (moved[:, 1] < y - 0.3 * bh) | (moved[:, 1] > y + 1.3 * bh)
        if not outside.all():
            return None
        xy[pts] = moved
    elif kind == "limb_scale":
        limb = _LIMBS[str(rng.choice(list(_LIMBS)))]
        side = str(rng.choice(["left", "right"]))
        idx = sk.indices(f"{side}_{p}" for p in limb)
        if not lab[idx[0]] or lab[idx[1:]].sum() < 2:
            return None
        moved = [i for i in idx[1:] if lab[i]]
        xy[moved] = xy[idx[0]] + (xy[moved] - xy[idx[0]]) * rng.uniform(2.5, 4.0)
    elif kind == "skeleton_scale":
        factor = rng.choice([rng.uniform(0.25, 0.4), rng.uniform(2.5, 3.5)])
        centre = box[:2] + box[2:] / 2
        xy[labelled] = centre + (xy[labelled] - centre) * factor
    elif kind == "noise":
        xy[labelled] += rng.normal(0, rng.uniform(0.12, 0.25) * torso, (len(labelled), 2))
    elif kind == "duplicate":
        xy[labelled] += rng.normal(0, 0.005 * torso, (len(labelled), 2))
    else:
        raise ValueError(kind)
    kp[:, :2] = xy
    return kp
