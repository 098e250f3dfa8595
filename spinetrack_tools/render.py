"""Draw synthetic people: shaded limbs and torso, a head, and the spine as a back line with vertebral marks.

Painter's algorithm over body parts sorted by depth; parts further away are darker. Where the back
faces the camera the spine chain is drawn as a dark line with a mark at each of its nine points (the
cue a small CNN needs to find it); where the front faces the camera a faint midline is drawn instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .skeleton import Skeleton

# (from, to, width as a fraction of stature, part) drawn as capsules
_LIMBS = (
    ("left_shoulder", "left_elbow", 0.055, "shirt"), ("left_elbow", "left_wrist", 0.045, "skin"),
    ("right_shoulder", "right_elbow", 0.055, "shirt"), ("right_elbow", "right_wrist", 0.045, "skin"),
    ("left_hip", "left_knee", 0.08, "trousers"), ("left_knee", "left_ankle", 0.065, "trousers"),
    ("right_hip", "right_knee", 0.08, "trousers"), ("right_knee", "right_ankle", 0.065, "trousers"),
    ("left_heel", "left_big_toe", 0.04, "shoes"), ("right_heel", "right_big_toe", 0.04, "shoes"),
    ("neck", "neck_03", 0.06, "skin"),
)


@dataclass
class Person:
    xy: np.ndarray  # [K, 2] image coordinates of every keypoint, also those outside the image
    depth: np.ndarray  # [K] distance along the camera axis
    back_visible: bool  # the back faces the camera
    stature_px: float


def background(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A varied background: a colour gradient with soft shapes (drawn at a quarter of the size and
    enlarged, which blurs them) and sensor-like noise."""
    w4, h4 = max(width // 4, 1), max(height // 4, 1)
    c0, c1 = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
    t = np.linspace(0, 1, h4, dtype=np.float32)[:, None, None]
    small = Image.fromarray(np.broadcast_to(c0 * (1 - t) + c1 * t, (h4, w4, 3)).astype(np.uint8))
    d = ImageDraw.Draw(small)
    for _ in range(int(rng.integers(3, 12))):
        x, y = rng.uniform(0, w4), rng.uniform(0, h4)
        w, h = rng.uniform(5, w4 / 2), rng.uniform(5, h4 / 2)
        color = tuple(int(c) for c in rng.uniform(30, 230, 3))
        (d.rectangle if rng.random() < 0.5 else d.ellipse)([x, y, x + w, y + h], fill=color)
    im = np.asarray(small.resize((width, height), Image.BILINEAR), dtype=np.int16)
    noise = rng.integers(-10, 11, (height, width, 1), dtype=np.int16)  # grey sensor noise
    return Image.fromarray(np.clip(im + noise, 0, 255).astype(np.uint8))


def draw_people(im: Image.Image, people: list[Person], sk: Skeleton, rng: np.random.Generator) -> None:
    """Draw ``people`` onto ``im``, the farthest first."""
    for p in sorted(people, key=lambda p: -float(np.mean(p.depth))):
        _draw_person(ImageDraw.Draw(im), p, sk, rng)


def _draw_person(d: ImageDraw.ImageDraw, p: Person, sk: Skeleton, rng: np.random.Generator) -> None:
    idx = {n: i for i, n in enumerate(sk.names)}
    palette = {
        "shirt": rng.uniform(30, 230, 3), "trousers": rng.uniform(20, 160, 3), "shoes": rng.uniform(10, 80, 3),
        "skin": np.array([rng.uniform(120, 235), rng.uniform(90, 190), rng.uniform(70, 160)]),
    }
    near, far = float(p.depth.min()), float(p.depth.max())

    def shade(part: str, depth: float, left: bool) -> tuple[int, int, int]:
        k = 1.0 - 0.35 * (depth - near) / max(far - near, 1e-6)
        c = palette[part] * k * (1.12 if left else 0.92)
        return tuple(int(v) for v in np.clip(c, 0, 255))

    items: list[tuple[float, str, tuple]] = []
    for a, b, w, part in _LIMBS:
        ia, ib = idx[a], idx[b]
        items.append(((p.depth[ia] + p.depth[ib]) / 2, "limb", (ia, ib, w, part, a.startswith("left"))))
    torso = [idx[n] for n in ("left_shoulder", "right_shoulder", "right_hip", "left_hip")]
    items.append((float(np.mean(p.depth[torso])), "torso", tuple(torso)))
    items.append((float(p.depth[idx["head"]]), "head", ()))
    for depth, kind, args in sorted(items, key=lambda t: -t[0]):
        if kind == "limb":
            ia, ib, w, part, left = args
            width = max(int(w * p.stature_px), 2)
            color = shade(part, depth, left)
            d.line([tuple(p.xy[ia]), tuple(p.xy[ib])], fill=color, width=width, joint="curve")
            for i in (ia, ib):
                x, y = p.xy[i]
                d.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=color)
        elif kind == "torso":
            _draw_torso(d, p, idx, args, shade("shirt", depth, False))
        else:
            _draw_head(d, p, idx, shade("skin", depth, False))


def _draw_torso(d: ImageDraw.ImageDraw, p: Person, idx: dict[str, int], corners: tuple, color: tuple) -> None:
    pts = p.xy[list(corners)]
    d.polygon([tuple(x) for x in pts], fill=color)
    mid_s, mid_h = (pts[0] + pts[1]) / 2, (pts[2] + pts[3]) / 2
    width = max(int(0.16 * p.stature_px), 3)  # a torso seen from the side still has depth
    d.line([tuple(mid_s), tuple(mid_h)], fill=color, width=width)
    chain = [idx[n] for n in ("hip", "spine_01", "spine_02", "spine_03", "spine_04", "spine_05", "neck",
                              "neck_02", "neck_03")]
    line = [tuple(p.xy[i]) for i in chain]
    if p.back_visible:  # back line and vertebral marks
        ink = tuple(int(c * 0.25) for c in color)
        d.line(line, fill=ink, width=max(int(0.012 * p.stature_px), 2), joint="curve")
        r = max(0.008 * p.stature_px, 1.5)
        for x, y in line:
            d.ellipse([x - r, y - r, x + r, y + r], fill=(235, 235, 235), outline=ink)
    else:  # the front: a faint midline
        ink = tuple(int(min(255, c * 1.25)) for c in color)
        d.line(line[1:7], fill=ink, width=max(int(0.006 * p.stature_px), 1))


def _draw_head(d: ImageDraw.ImageDraw, p: Person, idx: dict[str, int], color: tuple) -> None:
    top, c1 = p.xy[idx["head"]], p.xy[idx["neck_03"]]
    centre = (top + c1) / 2
    r = max(0.065 * p.stature_px, 2)
    d.ellipse([centre[0] - r, centre[1] - r, centre[0] + r, centre[1] + r], fill=color)
    if p.depth[idx["nose"]] < p.depth[idx["head"]]:  # the face is towards the camera
        for n in ("left_eye", "right_eye"):
            x, y = p.xy[idx[n]]
            e = max(0.008 * p.stature_px, 1)
            d.ellipse([x - e, y - e, x + e, y + e], fill=(30, 30, 30))
        x, y = p.xy[idx["nose"]]
        d.ellipse([x - r / 5, y - r / 5, x + r / 5, y + r / 5], fill=tuple(int(c * 0.8) for c in color))
