"""Body geometry of annotated persons, shared by ``flag`` (quality) and ``validate-biomech`` (rules).

Lengths are normalised by a per-person body scale: each rigid segment's 2D length divided by its
reference length (fraction of stature, from the kinematic model's rest pose). Foreshortening only
shortens, so a high order statistic of these ratios estimates stature in pixels and is robust to one
corrupted limb. The torso length (mid-hip to mid-shoulder) is the unit most rules measure in.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import numpy as np

from ..persons import Persons
from .model import default_model

# Segments whose length estimates the body scale: (name, from, to); "mid_*" are midpoints of left/right.
SCALE_SEGMENTS = (
    ("shoulder_width", "left_shoulder", "right_shoulder"),
    ("hip_width", "left_hip", "right_hip"),
    ("torso", "mid_shoulder", "mid_hip"),
    ("left_upper_arm", "left_shoulder", "left_elbow"),
    ("right_upper_arm", "right_shoulder", "right_elbow"),
    ("left_forearm", "left_elbow", "left_wrist"),
    ("right_forearm", "right_elbow", "right_wrist"),
    ("left_thigh", "left_hip", "left_knee"),
    ("right_thigh", "right_hip", "right_knee"),
    ("left_shank", "left_knee", "left_ankle"),
    ("right_shank", "right_knee", "right_ankle"),
    ("spine", "hip", "neck"),
    ("head", "neck", "head"),
)
LIMB_OF = {  # scale segment -> the limb it belongs to
    "left_upper_arm": "left_arm", "left_forearm": "left_arm", "right_upper_arm": "right_arm",
    "right_forearm": "right_arm", "left_thigh": "left_leg", "left_shank": "left_leg",
    "right_thigh": "right_leg", "right_shank": "right_leg",
}
# Segments bounded from above by validate-biomech (2D length / (reference length x body scale)).
BOUNDED_SEGMENTS = (
    ("hip", "spine_01"), ("spine_01", "spine_02"), ("spine_02", "spine_03"), ("spine_03", "spine_04"),
    ("spine_04", "spine_05"), ("spine_05", "neck"), ("neck", "neck_02"), ("neck_02", "neck_03"),
    ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"), ("left_elbow", "left_wrist"),
    ("right_elbow", "right_wrist"), ("left_hip", "left_knee"), ("right_hip", "right_knee"),
    ("left_knee", "left_ankle"), ("right_knee", "right_ankle"), ("left_shoulder", "right_shoulder"),
    ("left_hip", "right_hip"), ("neck_03", "head"),
)
# Parent/child joint pairs for the left/right crossing test; True where crossing is a natural pose
# (crossed forearms, crossed ankles), which then needs stronger evidence.
CROSSINGS = (("shoulder", "elbow", False), ("elbow", "wrist", True), ("hip", "knee", False),
             ("knee", "ankle", True))
# Left/right pairs on the rigid torso whose left-right orientation must agree.
TORSO_PAIRS = ("shoulder", "hip", "clavicle", "latissimus")


@contextmanager
def quiet() -> Iterator[None]:
    """Silence numpy's warnings about all-NaN rows (absent keypoints are expected)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@lru_cache(maxsize=None)
def reference_length(a: str, b: str) -> float:
    """Distance between two markers (or ``mid_*`` midpoints) in the model's rest pose, fraction of stature."""
    model = default_model()
    pos = dict(zip(model.marker_names, model.markers))

    def at(name: str) -> np.ndarray:
        if name.startswith("mid_"):
            return (pos[f"left_{name[4:]}"] + pos[f"right_{name[4:]}"]) / 2
        return pos[name]

    return float(np.linalg.norm(at(a) - at(b)))


def torso_fraction() -> float:
    """Mid-hip to mid-shoulder in the rest pose, as a fraction of stature."""
    return reference_length("mid_hip", "mid_shoulder")


class BodyGeometry:
    """Per-person quantities shared by the label checks: usable points, segment lengths, stature, torso."""

    def __init__(self, persons: Persons, noise: float | None = None):
        self.persons = persons
        sk = persons.skeleton
        kp = persons.keypoints
        self.xy = kp[..., :2]
        self.lab = (kp[..., 2] > 0) & np.isfinite(kp).all(axis=2)
        self.zero = self.lab & (self.xy == 0).all(axis=2)
        self.usable = self.lab & ~self.zero  # labelled points with real coordinates
        self.n_usable = self.usable.sum(axis=1)
        self.sk = sk
        n = len(persons)
        self.seg_len, self.seg_ok = {}, {}
        for name, a, b in SCALE_SEGMENTS:
            (pa, oa), (pb, ob) = self.point(a), self.point(b)
            if oa is None or ob is None:
                continue
            self.seg_len[name] = np.linalg.norm(pa - pb, axis=1)
            self.seg_ok[name] = oa & ob
        refs = {name: reference_length(a, b) for name, a, b in SCALE_SEGMENTS}
        ratios = np.stack([np.where(self.seg_ok[s], self.seg_len[s] / refs[s], np.nan) for s in self.seg_len], 1) \
            if self.seg_len else np.full((n, 1), np.nan)
        # third largest ratio (or the largest when fewer are available): stature in pixels
        srt = -np.sort(-np.nan_to_num(ratios, nan=-np.inf), axis=1)
        avail = np.isfinite(ratios).sum(axis=1)
        pick = np.clip(np.minimum(avail, 3) - 1, 0, None)
        stature = np.where(avail > 0, srt[np.arange(n), pick], np.nan)
        box = persons.boxes
        box_stature = np.maximum(box[:, 2], box[:, 3])
        self.stature = np.where(np.isfinite(stature) & (stature > 0), stature, box_stature)
        self.torso = torso_fraction() * self.stature
        self.box_diag = np.hypot(box[:, 2], box[:, 3])
        # the OKS scale s = sqrt(area): annotators' spread of keypoint k is about sigma_k x s
        area = np.where(np.isfinite(persons.areas) & (persons.areas > 0), persons.areas, 0.53 * box[:, 2] * box[:, 3])
        self.scale = np.sqrt(area)
        self.noise = noise_level(self) if noise is None else float(noise)  # the file's annotation noise

    def point(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """[N, 2] coordinates of a keypoint or midpoint and its usable mask (None if the layout lacks it)."""
        if name.startswith("mid_"):
            part = name[4:]
            (a, oa), (b, ob) = self.point(f"left_{part}"), self.point(f"right_{part}")
            if oa is None or ob is None:
                return np.zeros((len(self.persons), 2)), None
            return (a + b) / 2, oa & ob
        if name not in self.sk.names:
            return np.zeros((len(self.persons), 2)), None
        i = self.sk.index(name)
        return self.xy[:, i], self.usable[:, i]

    def signed_widths(self, parts: tuple[str, ...] = TORSO_PAIRS) -> dict[str, np.ndarray]:
        """Per left/right pair, its signed width across the hip -> shoulder axis in torso lengths (positive
        when the left point lies to the left of the axis as seen in the image); NaN where not judged."""
        mh, oh = self.point("mid_hip")
        ms, os_ = self.point("mid_shoulder")
        if oh is None or os_ is None:
            return {}
        axis = ms - mh
        axis_len = np.linalg.norm(axis, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            up = axis / axis_len[:, None]
        out = {}
        for part in parts:
            (lp, ol), (rp, or_) = self.point(f"left_{part}"), self.point(f"right_{part}")
            if ol is None or or_ is None:
                continue
            d = lp - rp
            with np.errstate(invalid="ignore", divide="ignore"):
                s = (up[:, 0] * d[:, 1] - up[:, 1] * d[:, 0]) / self.torso
            out[part] = np.where(ol & or_ & oh & os_ & (axis_len > 0.3 * self.torso), s, np.nan)
        return out

    def crossing_costs(self, parent: str, child: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Left+right limb lengths as labelled and with the children swapped, and where both are known."""
        (pl, a), (pr, b) = self.point(f"left_{parent}"), self.point(f"right_{parent}")
        (cl, c), (cr, d) = self.point(f"left_{child}"), self.point(f"right_{child}")
        if any(o is None for o in (a, b, c, d)):
            return None
        cur = np.linalg.norm(pl - cl, axis=1) + np.linalg.norm(pr - cr, axis=1)
        swp = np.linalg.norm(pl - cr, axis=1) + np.linalg.norm(pr - cl, axis=1)
        return cur, swp, a & b & c & d


DEFAULT_NOISE = 0.25  # annotation noise assumed for files too small to measure it (x sigma_k x sqrt(area))
HALF_NORMAL_MEDIAN = 0.6744897501960817  # median of |N(0, 1)|


def person_noise(g: BodyGeometry) -> np.ndarray:
    """[N] each person's annotation noise in units of the SpineTrack sigmas (noise x sigma_k x sqrt(area) per
    coordinate), from the spine chain: the median over its interior points of each one's offset from the line
    through its two neighbours, over what that noise would give it (real spines are smooth at the chain's
    spacing, so the offsets are mostly noise); NaN with fewer than three such points."""
    n = len(g.persons)
    chain = g.sk.spine_chain
    if len(chain) < 3:
        return np.full(n, np.nan)
    xy, ok = g.xy[:, chain], g.usable[:, chain]
    sig = g.sk.sigmas[chain]
    a, m, b = xy[:, :-2], xy[:, 1:-1], xy[:, 2:]
    ab = b - a
    length = np.linalg.norm(ab, axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.abs(ab[..., 0] * (m - a)[..., 1] - ab[..., 1] * (m - a)[..., 0]) / length
        unit = g.scale[:, None] * np.sqrt(sig[1:-1] ** 2 + 0.25 * sig[:-2] ** 2 + 0.25 * sig[2:] ** 2)[None]
        ok3 = ok[:, 2:] & ok[:, 1:-1] & ok[:, :-2] & (unit > 0) & (length > 0)
    with quiet():
        per = np.nanmedian(np.where(ok3, off / unit, np.nan), axis=1) / HALF_NORMAL_MEDIAN
    return np.where(ok3.sum(axis=1) >= 3, per, np.nan)


def noise_level(g: BodyGeometry, min_persons: int = 20, default: float = DEFAULT_NOISE) -> float:
    """The file's annotation noise (see ``person_noise``): the median over its persons (robust to the corrupted
    few); ``default`` for files with fewer than ``min_persons`` measurable chains; at most 1 (the annotators'
    whole spread)."""
    per = person_noise(g)
    per = per[np.isfinite(per)]
    if len(per) < min_persons:
        return default
    return float(min(np.median(per), 1.0))


def point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points p [N, K, 2] from segments a->b ([N, 2] each)."""
    ab = (b - a)[:, None]
    ap = p - a[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.clip((ap * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
    return np.linalg.norm(ap - s[..., None] * ab, axis=-1)
