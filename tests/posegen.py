"""An independent generator of plausible SpineTrack-style annotations, for judging the plausibility checks.

Written apart from ``spinetrack_tools.biomech`` on purpose: no OpenSim model, none of its proportions, its own
conventions (z up, x forward, y to the person's left) and its own rotations. Proportions are the Drillis &
Contini (1966) segment fractions of stature as Winter (2009, fig. 4.1) tabulates them [unverified], each varied per
person by a uniform factor; the spine is a curve of vertebral bodies (cervical, thoracic and lumbar column lengths
from textbook anatomy, lordosis and kyphosis per person, flexion, lateral bending and twist spread over the
levels), and each person's annotator places the spine points anywhere from the vertebral bodies to the skin line
of the back. Perspective cameras, five postures (standing, sitting, bending, lying, inverted) and annotation
noise per keypoint from the SpineTrack OKS sigmas (``noise`` x sigma_k x sqrt(area) per coordinate).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spinetrack_tools.skeleton import SPINETRACK37

POSTURES = ("standing", "sitting", "bending", "lying", "inverted")
# Drillis & Contini / Winter: heights and lengths as fractions of stature H
PROPORTIONS = {
    "shoulder_height": 0.818, "hip_height": 0.530, "knee_height": 0.285, "ankle_height": 0.039,
    "upper_arm": 0.186, "forearm": 0.146, "shoulder_width": 0.259, "hip_width": 0.191, "foot_length": 0.152,
    "head_height": 0.130, "neck_height": 0.870,
}
# vertebral column lengths as fractions of stature (adult column ~71 cm in a 1.75 m man: cervical 12,
# thoracic 28, lumbar 18 cm; textbook anatomy [unverified])
COLUMN = {"cervical": 0.069, "thoracic": 0.160, "lumbar": 0.103}


def _axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices [N, 3, 3] about unit axes [N, 3] (Rodrigues)."""
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    c, s, C = np.cos(angle), np.sin(angle), 1 - np.cos(angle)
    return np.stack([np.stack([c + x * x * C, x * y * C - z * s, x * z * C + y * s], -1),
                     np.stack([y * x * C + z * s, c + y * y * C, y * z * C - x * s], -1),
                     np.stack([z * x * C - y * s, z * y * C + x * s, c + z * z * C], -1)], -2)


def _about(axis: int, angle: np.ndarray) -> np.ndarray:
    a = np.zeros(np.shape(angle) + (3,))
    a[..., axis] = 1.0
    return _axis_angle(a, np.asarray(angle, dtype=float))


X, Y, Z = 0, 1, 2  # forward, left, up


class _Person:
    """One batch of people built in their pelvis frame (metres / stature: H = 1)."""

    def __init__(self, n: int, rng: np.random.Generator, posture: np.ndarray, vary: float, depth: tuple[float, float]):
        self.n, self.rng, self.posture = n, rng, posture
        u = lambda: rng.uniform(1 - vary, 1 + vary, n)  # noqa: E731
        P = {k: v * u() for k, v in PROPORTIONS.items()}
        self.P = P
        self.pts: dict[str, np.ndarray] = {}
        deg = np.deg2rad
        zeros = np.zeros(n)
        is_ = lambda *names: np.isin(posture, names)  # noqa: E731
        # --- spine: 24 vertebral bodies from L5 up to C1, the sacral point below L5
        lumbar, thoracic, cervical = COLUMN["lumbar"] * u(), COLUMN["thoracic"] * u(), COLUMN["cervical"] * u()
        lordosis = deg(rng.normal(45, 10, n))
        kyphosis = deg(rng.normal(40, 10, n))
        cervical_lordosis = deg(rng.normal(25, 10, n))
        flex_l = np.where(is_("bending"), deg(rng.uniform(20, 60, n)), deg(rng.uniform(-15, 25, n)))
        flex_l = np.where(is_("sitting"), deg(rng.uniform(0, 35, n)), flex_l)
        flex_t = deg(rng.uniform(-5, 15, n))
        flex_c = deg(rng.uniform(-30, 40, n))
        side = deg(rng.uniform(-20, 20, n))
        twist = deg(rng.uniform(-30, 30, n))
        levels = [("L", 5, lumbar, -lordosis + flex_l), ("T", 12, thoracic, kyphosis + flex_t),
                  ("C", 7, cervical, -cervical_lordosis + flex_c)]
        R = np.repeat(np.eye(3)[None], n, 0)
        pos = np.zeros((n, 3))
        sacrum = np.zeros((n, 3))
        sacrum[:, Z] = 0.045 * u()  # above and behind the hip joints (the pelvis frame's origin is their midpoint)
        sacrum[:, X] = -0.055 * u()
        pos[:] = sacrum
        R = R @ _about(Y, deg(rng.uniform(30, 45, n)))  # sacral tilt: the column starts leaning forward
        centres: dict[str, np.ndarray] = {}
        frames: dict[str, np.ndarray] = {}
        for region, count, length, bend in levels:
            step = length / count
            for k in range(count, 0, -1):  # L5 .. L1, T12 .. T1, C7 .. C1
                name = f"{region}{k}"
                R = R @ _about(Y, bend / count) @ _about(X, side / 24) @ _about(Z, twist / 24)
                pos = pos + R[:, :, Z] * step[:, None]
                centres[name], frames[name] = pos.copy(), R.copy()
        self.centres, self.frames = centres, frames
        place = rng.uniform(*depth, n)  # the annotator's habit: vertebral bodies (0) to the skin line of the back

        def back(name: str, extra: float = 0.0) -> np.ndarray:  # the neck is thinner: 0.6 of the depth there
            d = (place * (0.6 if name.startswith("C") else 1.0) + extra)[:, None]
            return centres[name] + np.einsum("nij,j->ni", frames[name], np.array([-1.0, 0, 0])) * d

        jitter = lambda a, b: (a + b) / 2 + (b - a) * rng.uniform(-0.25, 0.25, (n, 1))  # noqa: E731
        self.pts["hip"] = sacrum + np.array([-1.0, 0, 0]) * place[:, None] * 0.5
        self.pts["spine_01"] = back("L5")
        self.pts["spine_02"] = back("L3")
        self.pts["spine_03"] = jitter(back("T12"), back("L1"))
        self.pts["spine_04"] = back("T8")
        self.pts["spine_05"] = back("T3")
        self.pts["neck"] = back("C7")
        self.pts["neck_02"] = jitter(back("C3"), back("C4"))
        self.pts["neck_03"] = back("C1", -0.01)
        # --- head on C1, with its own nod and turn
        Rh = frames["C1"] @ _about(Y, deg(rng.uniform(-20, 25, n))) @ _about(Z, deg(rng.uniform(-40, 40, n)))
        c1 = centres["C1"]

        def head(v: tuple[float, float, float]) -> np.ndarray:
            return c1 + np.einsum("nij,j->ni", Rh, np.array(v)) * (P["head_height"] / 0.13)[:, None]

        self.pts["head"] = head((0.01, 0.0, 0.11))
        self.pts["nose"] = head((0.105, 0.0, 0.02))
        for s, sgn in (("left", 1), ("right", -1)):
            self.pts[f"{s}_eye"] = head((0.09, sgn * 0.032, 0.045))
            self.pts[f"{s}_ear"] = head((0.0, sgn * 0.072, 0.035))
        # --- shoulder girdle on T1
        Rt = frames["T1"]
        t1 = centres["T1"]
        drop = centres["C7"][:, Z] - t1[:, Z]

        def thorax(v: np.ndarray) -> np.ndarray:
            return t1 + np.einsum("nij,nj->ni", Rt, v)

        shoulders = {}
        for s, sgn in (("left", 1), ("right", -1)):
            w = P["shoulder_width"] / 2 - 0.012
            shoulders[s] = thorax(np.stack([np.full(n, 0.045), sgn * w, -0.03 + 0 * drop], 1))
            self.pts[f"{s}_shoulder"] = shoulders[s]
            self.pts[f"{s}_clavicle"] = thorax(np.stack([np.full(n, 0.075), sgn * w * 0.5, -0.02 + zeros], 1))
            t8 = centres["T8"]
            self.pts[f"{s}_latissimus"] = t8 + np.einsum("nij,nj->ni", frames["T8"],
                                                         np.stack([-0.04 - place, sgn * 0.09 + zeros, zeros], 1))
        # --- arms
        for s, sgn in (("left", 1), ("right", -1)):
            up = np.where(is_("inverted"), deg(rng.uniform(150, 180, n)), deg(rng.uniform(-40, 150, n)))
            abd = deg(rng.uniform(0, 100, n))
            elbow = deg(rng.uniform(0, 140, n))
            Ra = Rt @ _about(Y, -up) @ _about(X, sgn * abd)
            e = shoulders[s] + np.einsum("nij,j->ni", Ra, np.array([0.0, 0, -1])) * P["upper_arm"][:, None]
            Rf = Ra @ _about(Y, -elbow)
            wri = e + np.einsum("nij,j->ni", Rf, np.array([0.0, 0, -1])) * P["forearm"][:, None]
            self.pts[f"{s}_elbow"], self.pts[f"{s}_wrist"] = e, wri
        # --- legs from the hip joints (pelvis frame origin)
        thigh = P["hip_height"] - P["knee_height"]
        shank = P["knee_height"] - P["ankle_height"]
        for s, sgn in (("left", 1), ("right", -1)):
            hj = np.stack([zeros, sgn * (P["hip_width"] / 2 - 0.045), zeros], 1)
            hip_flex = np.select([is_("sitting"), is_("bending")],
                                 [deg(rng.uniform(70, 115, n)), deg(rng.uniform(40, 100, n))],
                                 deg(rng.uniform(-20, 35, n)))
            knee = np.select([is_("sitting")], [deg(rng.uniform(60, 120, n))], deg(rng.uniform(0, 45, n)))
            Rl = _about(Y, -hip_flex) @ _about(X, sgn * deg(rng.uniform(-5, 30, n)))
            k = hj + np.einsum("nij,j->ni", Rl, np.array([0.0, 0, -1])) * thigh[:, None]
            Rs = Rl @ _about(Y, knee)
            a = k + np.einsum("nij,j->ni", Rs, np.array([0.0, 0, -1])) * shank[:, None]
            Rp = Rs @ _about(Y, -deg(rng.uniform(-20, 30, n)))
            foot = lambda v: a + np.einsum("nij,j->ni", Rp, np.array(v)) * (P["foot_length"] / 0.152)[:, None]  # noqa
            self.pts[f"{s}_hip"], self.pts[f"{s}_knee"], self.pts[f"{s}_ankle"] = hj, k, a
            self.pts[f"{s}_heel"] = foot((-0.045, 0.0, -0.035))
            self.pts[f"{s}_big_toe"] = foot((0.105, -sgn * 0.01, -0.035))
            self.pts[f"{s}_small_toe"] = foot((0.085, sgn * 0.03, -0.035))

    def array(self) -> np.ndarray:
        return np.stack([self.pts[nm] for nm in SPINETRACK37.names], axis=1)


def generate(num_images: int, seed: int = 0, noise: float = 0.25, vary: float = 0.08,
             depth: tuple[float, float] = (0.02, 0.075), persons_per_image: tuple[int, int] = (1, 2)) -> dict[str, Any]:
    """A COCO keypoint dict of plausible people; each annotation carries its ``posture``."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(persons_per_image[0], persons_per_image[1] + 1, num_images)
    n = int(counts.sum())
    posture = rng.choice(np.array(POSTURES), n)
    body = _Person(n, rng, posture, vary, depth)
    pts = body.array()  # [n, K, 3] pelvis frame
    # whole-body orientation: lying on the back / front / side, upside down, else upright; any heading
    deg = np.deg2rad
    R = _about(Z, rng.uniform(0, 2 * np.pi, n))
    lie = posture == "lying"
    how = rng.integers(0, 3, n)
    tilt = np.where((how == 2)[:, None, None], _about(X, np.full(n, deg(90))), _about(Y, deg(np.where(how == 0, -90.0, 90.0))))
    R = np.where(lie[:, None, None], R @ tilt @ _about(Z, deg(rng.normal(0, 10, n))), R)
    inv = posture == "inverted"
    R = np.where(inv[:, None, None], R @ _about(X, deg(180 + rng.normal(0, 10, n))), R)
    stature = rng.uniform(1.45, 1.98, n)
    world = np.einsum("nij,nkj->nki", R, pts) * stature[:, None, None]
    # perspective cameras around the person
    az = rng.uniform(0, 2 * np.pi, n)
    el = deg(rng.uniform(-25, 45, n))
    dist = rng.uniform(2.5, 9.0, n) * stature
    centre = world.mean(axis=1)
    eye = centre + np.stack([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)], 1) * dist[:, None]
    fwd = centre - eye
    fwd /= np.linalg.norm(fwd, axis=1, keepdims=True)
    right = np.cross(fwd, np.array([0.0, 0, 1]))
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    down = np.cross(fwd, right)
    rel = world - eye[:, None]
    cam = np.stack([np.einsum("nkj,nj->nk", rel, right), np.einsum("nkj,nj->nk", rel, down),
                    np.einsum("nkj,nj->nk", rel, fwd)], -1)
    uv = cam[..., :2] / cam[..., 2:3]
    # far-side points are occluded: behind the body's centre as seen from the camera
    behind = (cam[..., 2] - cam[..., 2].mean(axis=1, keepdims=True)) > 0.04 * stature[:, None]
    # place each person in its image
    sizes = np.array([[640, 480], [480, 640], [1280, 720], [720, 1280], [1024, 1024]])
    wh = sizes[rng.integers(0, len(sizes), num_images)]
    img_of = np.repeat(np.arange(num_images), counts)
    W, H = wh[img_of, 0].astype(float), wh[img_of, 1].astype(float)
    lo, hi = uv.min(1), uv.max(1)
    ext = np.maximum(hi - lo, 1e-9)
    scale = np.minimum(rng.uniform(0.25, 0.9, n) * H / ext[:, 1], 0.9 * W / ext[:, 0])
    off = np.stack([rng.uniform(0, 1, n) * (W - ext[:, 0] * scale), rng.uniform(0, 1, n) * (H - ext[:, 1] * scale)], 1)
    xy = (uv - lo[:, None]) * scale[:, None, None] + off[:, None]
    box_lo, box_hi = xy.min(1), xy.max(1)
    pad = (box_hi - box_lo) * rng.uniform(0.04, 0.12, (n, 1))
    box_lo, box_hi = np.maximum(box_lo - pad, 0), np.minimum(box_hi + pad, np.stack([W, H], 1))
    boxes = np.concatenate([box_lo, box_hi - box_lo], 1)
    area = boxes[:, 2] * boxes[:, 3] * rng.uniform(0.5, 0.65, n)
    sig = SPINETRACK37.sigmas
    xy = xy + rng.normal(0, 1, xy.shape) * (noise * sig[None, :, None] * np.sqrt(area)[:, None, None])
    inside = (xy[..., 0] >= 0) & (xy[..., 0] < W[:, None]) & (xy[..., 1] >= 0) & (xy[..., 1] < H[:, None])
    v = np.where(inside, np.where(behind, 1, 2), 0)
    images = [{"id": i + 1, "file_name": f"{i + 1:06d}.jpg", "width": int(wh[i, 0]), "height": int(wh[i, 1])}
              for i in range(num_images)]
    anns = []
    for p in range(n):
        if (v[p] > 0).sum() < 5:
            continue
        kp = np.concatenate([np.where(v[p, :, None] > 0, xy[p], 0.0), v[p, :, None]], 1)
        flat = kp.ravel().tolist()
        flat[2::3] = [int(t) for t in flat[2::3]]
        anns.append({"id": len(anns) + 1, "image_id": int(img_of[p]) + 1, "category_id": 1,
                     "bbox": boxes[p].tolist(), "area": float(area[p]), "iscrowd": 0,
                     "num_keypoints": int((v[p] > 0).sum()), "keypoints": flat, "posture": str(posture[p])})
    return {"info": {"description": "tests/posegen.py", "seed": seed}, "images": images, "annotations": anns,
            "categories": [SPINETRACK37.to_category()]}
