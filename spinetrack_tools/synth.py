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

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .biomech.geometry import torso_fraction
from .biomech.model import KinematicModel
from .biomech.poses import POSTURES, Scene, pose_scene
from .io import atomic_write_bytes
from .persons import Persons
from .progress import progress
from .skeleton import SPINETRACK37, Skeleton

def generate(num_images: int, seed: int = 0, persons_per_image: tuple[int, int] = (1, 3),
             model: KinematicModel | None = None, skeleton: Skeleton = SPINETRACK37,
             postures: Sequence[str] = POSTURES, fk: str = "auto", spread: float = 0.45,
             image_dir: Path | None = None) -> dict[str, Any]:
    """A COCO keypoint dict of ``num_images`` images with posed, projected persons (``poses.pose_scene``),
    each annotation with its ``posture``. With ``image_dir``, the images are rendered there as JPEG files
    (see ``render``). Deterministic for a seed."""
    scene = pose_scene(num_images, seed, persons_per_image, model, skeleton, postures, fk, spread)
    if image_dir is not None:
        _render_images(image_dir, scene, skeleton, seed)
    return scene.persons.to_coco(info={"description": "spinetrack-tools synthetic keypoints", "seed": seed})


def _render_images(image_dir: Path, scene: Scene, sk: Skeleton, seed: int) -> None:
    """Draw every image (background and people) and write it as a JPEG, atomically."""
    from .render import Person, background, draw_people

    image_dir.mkdir(parents=True, exist_ok=True)
    chain = sk.spine_chain
    for i, (w, h) in enumerate(progress(scene.image_wh, total=len(scene.image_wh), description="rendering images")):
        rng = np.random.default_rng([seed, i])
        im = background(int(w), int(h), rng)
        people = [Person(scene.xy[p], scene.depth[p], bool((~scene.occluded[p, chain]).mean() > 0.5),
                         float(scene.stature_px[p])) for p in np.flatnonzero(scene.person_image == i)]
        draw_people(im, people, sk, rng)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        atomic_write_bytes(image_dir / f"{i + 1:012d}.jpg", buf.getvalue())


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
    ds = Persons.from_coco(coco)
    sk = ds.skeleton
    anns = [dict(a) for a in coco["annotations"]]
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
        torso = torso_fraction() * max(box[2], box[3])
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
