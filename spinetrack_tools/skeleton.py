"""Keypoint layouts as data: names, sigmas, flip pairs, links and groups.

``SPINETRACK37`` is the SpineTrack / SpinePose layout (``spinetrack-format.md`` §1.1); ``HALPE26`` and
``COCO17`` are derived from it as subsets. Nothing else in the toolkit hard-codes an index: code asks a
``Skeleton`` for names, groups and sigmas, so the same checks run on any layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

_SPINETRACK_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "head", "neck", "hip",
    "left_big_toe", "right_big_toe", "left_small_toe", "right_small_toe", "left_heel", "right_heel",
    "spine_01", "spine_02", "spine_03", "spine_04", "spine_05",
    "left_latissimus", "right_latissimus", "left_clavicle", "right_clavicle",
    "neck_02", "neck_03",
)
_SPINETRACK_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
    0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
    0.026, 0.04, 0.07,
    0.079, 0.079, 0.079, 0.079, 0.079, 0.079,
    0.10, 0.10, 0.10, 0.08, 0.08,
    0.12, 0.12, 0.07, 0.07,
    0.07, 0.06,
)
# metainfo.py skeleton_info (39 links), as index pairs.
_SPINETRACK_LINKS = (
    (15, 13), (13, 11), (11, 19), (16, 14), (14, 12), (12, 19),
    (17, 36), (36, 35), (35, 18), (18, 30), (30, 29), (29, 28), (28, 27), (27, 26), (26, 19),
    (5, 7), (7, 9), (6, 8), (8, 10),
    (1, 2), (17, 0), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    (15, 20), (15, 22), (15, 24), (16, 21), (16, 23), (16, 25),
    (30, 33), (30, 34), (5, 33), (34, 6), (29, 31), (29, 32),
)
_SPINE_CHAIN = (19, 26, 27, 28, 29, 30, 18, 35, 36)  # sacrum -> C1, bottom-up


@dataclass(frozen=True, eq=False)
class Skeleton:
    """A keypoint layout. Indices refer to positions in ``names``."""

    name: str
    names: tuple[str, ...]
    sigmas: np.ndarray
    links: tuple[tuple[int, int], ...] = ()
    groups: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sig = np.asarray(self.sigmas, dtype=np.float64)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"skeleton {self.name!r}: duplicate keypoint names")
        if sig.shape != (len(self.names),):
            raise ValueError(f"skeleton {self.name!r}: {sig.shape[0]} sigmas for {len(self.names)} keypoints")
        sig.setflags(write=False)
        object.__setattr__(self, "sigmas", sig)
        groups = dict(self.groups)
        groups["overall"] = tuple(range(len(self.names)))
        object.__setattr__(self, "groups", groups)

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def indices(self, names: Iterable[str]) -> list[int]:
        """Indices of the given names that this layout has (missing names are skipped)."""
        pos = {n: i for i, n in enumerate(self.names)}
        return [pos[n] for n in names if n in pos]

    def has(self, *names: str) -> bool:
        return all(n in self.names for n in names)

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation that maps each keypoint to its left/right mirror (itself when unpaired)."""
        pos = {n: i for i, n in enumerate(self.names)}
        out = np.arange(len(self.names))
        for i, n in enumerate(self.names):
            for a, b in (("left_", "right_"), ("right_", "left_")):
                if n.startswith(a) and b + n[len(a):] in pos:
                    out[i] = pos[b + n[len(a):]]
        return out

    @property
    def flip_pairs(self) -> list[tuple[int, int]]:
        fi = self.flip_index
        return [(i, int(j)) for i, j in enumerate(fi) if i < j]

    @property
    def spine_chain(self) -> list[int]:
        """Spine chain indices bottom-up (sacrum to C1), restricted to the points this layout has."""
        return list(self.groups.get("spine", ()))

    def subset(self, name: str, names: Sequence[str]) -> "Skeleton":
        """A layout made of some of this layout's keypoints (links and groups restricted to them)."""
        idx = [self.index(n) for n in names]
        remap = {old: new for new, old in enumerate(idx)}
        links = tuple((remap[a], remap[b]) for a, b in self.links if a in remap and b in remap)
        groups = {}
        for g, members in self.groups.items():
            kept = tuple(remap[m] for m in members if m in remap)
            if g != "overall" and kept:
                groups[g] = kept
        return Skeleton(name, tuple(names), self.sigmas[idx], links, groups)

    def to_category(self, category_id: int = 1) -> dict:
        """COCO category dict (1-based ``skeleton`` links as COCO writes them)."""
        return {
            "id": category_id,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(self.names),
            "skeleton": [[a + 1, b + 1] for a, b in self.links],
        }


SPINETRACK37 = Skeleton(
    "spinetrack37",
    _SPINETRACK_NAMES,
    np.array(_SPINETRACK_SIGMAS),
    _SPINETRACK_LINKS,
    {
        "body": tuple(range(17)),
        "feet": tuple(range(20, 26)),
        "spine": _SPINE_CHAIN,
        "experimental": (31, 32, 33, 34),
    },
)
HALPE26 = SPINETRACK37.subset("halpe26", _SPINETRACK_NAMES[:26])
COCO17 = SPINETRACK37.subset("coco17", _SPINETRACK_NAMES[:17])
KNOWN_SKELETONS = {s.name: s for s in (SPINETRACK37, HALPE26, COCO17)}


def skeleton_for_names(names: Sequence[str] | None, expected: Skeleton | None = None) -> Skeleton:
    """Select the layout named by a category's ``keypoints`` list, or verify it against ``expected``.

    Raises ``ValueError`` naming the first mismatch. With ``names`` missing, ``expected`` (default
    SpineTrack-37) is assumed. Other layouts become a custom ``Skeleton``: a SpineTrack subset (its
    sigmas, links and groups) when every name is a SpineTrack name, else one with sigma 0.07 and no links.
    """
    if not names:
        return expected or SPINETRACK37
    names = tuple(str(n) for n in names)
    if expected is not None:
        if names != expected.names:
            raise ValueError(_describe_mismatch(names, expected))
        return expected
    for sk in KNOWN_SKELETONS.values():
        if names == sk.names:
            return sk
    if len(set(names)) != len(names):
        raise ValueError("category keypoint names are not unique")
    if all(n in SPINETRACK37.names for n in names):
        return SPINETRACK37.subset("custom", names)
    return Skeleton("custom", names, np.full(len(names), 0.07))


def _describe_mismatch(names: Sequence[str], expected: Skeleton) -> str:
    if len(names) != len(expected.names):
        return f"category has {len(names)} keypoint names, the {expected.name} layout has {len(expected.names)}"
    for i, (a, b) in enumerate(zip(names, expected.names)):
        if a != b:
            return f"keypoint {i} is named {a!r}, the {expected.name} layout expects {b!r}"
    return "keypoint names differ"


def skeleton_for_count(k: int) -> Skeleton:
    """The known layout with ``k`` keypoints (a model's output count), else an unnamed one (sigma 0.07)."""
    for sk in KNOWN_SKELETONS.values():
        if sk.num_keypoints == k:
            return sk
    return Skeleton(f"custom{k}", tuple(f"keypoint_{i}" for i in range(k)), np.full(k, 0.07))
