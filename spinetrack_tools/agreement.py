"""Several annotators' labels of the same images: one consensus label per person and how well they agree.

``consensus`` takes every annotator's labels (``Persons`` with an ``annotator`` attribute: one row per
annotator and person) and returns one label per person. Per keypoint: the median of the annotators'
points, labelled when at least half of the image's annotators labelled it (a tie keeps the point), and
visible (v=2) unless more of them marked it occluded. The agreement per keypoint is the mean, over pairs
of the image's annotators, of the OKS term with the skeleton's sigmas and the person's area (the OKS
scale): 0 where only one of the pair labelled the point, NaN where neither did; a person's agreement is
the mean over its keypoints, its OKS between annotators. A person is an (image, annotation id); persons
that annotators drew themselves (attribute ``drawn``) are matched across annotators by OKS.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import combinations
from typing import Iterator

import numpy as np

from .evaluate import keypoint_similarity, oks
from .persons import Persons

ANNOTATOR = "annotator"  # Persons attribute: who labelled the row (a Label Studio user id)
DRAWN = "drawn"  # Persons attribute: a person the annotator drew (no pre-annotated person)
MATCH_OKS = 0.5  # drawn persons of two annotators are the same person above this OKS


@dataclass
class Consensus:
    """The consensus labels with the annotators' labels stacked per person."""

    persons: Persons  # one row per person; attributes ``annotators`` [P] and ``agreement`` [P]
    stack: np.ndarray  # [P, A, K, 3] each annotator's label of the person (zeros where they have none)
    annotators: np.ndarray  # [P, A] the annotator of each slot, -1 where the image has fewer annotators
    agreement: np.ndarray  # [P, K] agreement per keypoint (NaN: a single annotator, or nobody labelled it)


def consensus(labels: Persons) -> Consensus:
    """One label per person from every annotator's labels (see the module docstring)."""
    n, k = len(labels), labels.skeleton.num_keypoints
    who = np.asarray(labels.attrs.get(ANNOTATOR, np.zeros(n)), dtype=np.int64)
    key = labels.ann_ids.copy()
    drawn = np.asarray(labels.attrs.get(DRAWN, np.zeros(n)), dtype=bool)
    if drawn.any():
        key = _match_drawn(labels, who, drawn, key)
    persons, person = np.unique(np.stack([labels.image_ids, key], 1).reshape(-1, 2), axis=0, return_inverse=True)
    person = person.reshape(-1)
    pairs, pair = np.unique(np.stack([labels.image_ids, who], 1).reshape(-1, 2), axis=0, return_inverse=True)
    pair = pair.reshape(-1)
    # an annotator's slot is their rank among the image's annotators
    first = np.searchsorted(pairs[:, 0], pairs[:, 0], side="left")
    slot_of_pair = np.arange(len(pairs)) - first
    a = int(slot_of_pair.max(initial=-1)) + 1
    p = len(persons)
    stack = np.zeros((p, a, k, 3))
    stack[person, slot_of_pair[pair]] = labels.keypoints
    boxes = np.full((p, a, 4), np.nan)
    boxes[person, slot_of_pair[pair]] = labels.boxes
    areas = np.full((p, a), np.nan)
    areas[person, slot_of_pair[pair]] = labels.areas
    annotators = np.full((p, a), -1, dtype=np.int64)
    lo = np.searchsorted(persons[:, 0], pairs[:, 0], side="left")
    hi = np.searchsorted(persons[:, 0], pairs[:, 0], side="right")
    rows = np.repeat(np.arange(len(pairs)), hi - lo)
    targets = np.concatenate([np.arange(s, e) for s, e in zip(lo, hi)]) if len(pairs) else np.zeros(0, np.int64)
    annotators[targets, slot_of_pair[rows]] = pairs[rows, 1]
    present = annotators >= 0

    lab = stack[..., 2] > 0
    votes, among = lab.sum(1), present.sum(1)[:, None]
    keep = (votes > 0) & (2 * votes >= among)
    with np.errstate(invalid="ignore"), _quiet():
        xy = np.nanmedian(np.where(lab[..., None], stack[..., :2], np.nan), axis=1)
        box = np.nanmedian(boxes, axis=1)
        area = np.nanmedian(areas, axis=1)
    v = np.where(keep, np.where((stack[..., 2] == 2).sum(1) >= (stack[..., 2] == 1).sum(1), 2.0, 1.0), 0.0)
    kp = np.concatenate([np.where(keep[..., None], xy, 0.0), v[..., None]], axis=2)
    rep = np.unique(person, return_index=True)[1]  # a row of each person for its category and crowd flag
    scale = np.where(np.isfinite(area), area, np.nan_to_num(box[:, 2] * box[:, 3], nan=1.0))
    agreement = _agreement(stack, present, scale, labels.skeleton.sigmas)
    with np.errstate(invalid="ignore"), _quiet():
        per_person = np.nanmean(agreement, axis=1)
    out = Persons.build(labels.skeleton, kp, persons[:, 0], ann_ids=persons[:, 1],
                        category_ids=labels.category_ids[rep], boxes=box, areas=area, iscrowd=labels.iscrowd[rep],
                        images=labels.images, source=labels.source,
                        attrs={"annotators": among[:, 0], "agreement": per_person})
    return Consensus(out, stack, annotators, agreement)


def _agreement(stack: np.ndarray, present: np.ndarray, scale: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """[P, K] mean over pairs of annotators of the OKS term (0 where one of the pair labelled the point)."""
    lab = stack[..., 2] > 0
    terms = []
    for i, j in combinations(range(stack.shape[1]), 2):
        sim = keypoint_similarity(stack[:, i], stack[:, j], scale, sigmas)
        both, one = lab[:, i] & lab[:, j], lab[:, i] ^ lab[:, j]
        t = np.where(both, sim, np.where(one, 0.0, np.nan))
        terms.append(np.where((present[:, i] & present[:, j])[:, None], t, np.nan))
    if not terms:
        return np.full(stack.shape[:1] + stack.shape[2:3], np.nan)
    with np.errstate(invalid="ignore"), _quiet():
        return np.nanmean(np.stack(terms), axis=0)


def _match_drawn(labels: Persons, who: np.ndarray, drawn: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Persons that annotators drew themselves get a shared key where they are the same person (greedy by
    OKS, above ``MATCH_OKS``, against the persons of the annotators before them on the image)."""
    key = key.copy()
    area = np.nan_to_num(labels.boxes[:, 2] * labels.boxes[:, 3], nan=1.0)
    for image in np.unique(labels.image_ids[drawn]):
        rows = np.flatnonzero(drawn & (labels.image_ids == image))
        groups = np.zeros(0, dtype=np.int64)  # a row of each person found so far on the image
        for annotator in np.unique(who[rows]):
            mine = rows[who[rows] == annotator]
            sim = np.zeros((len(mine), len(groups)))
            for m, r in enumerate(mine):
                sim[m] = np.nan_to_num(oks(labels.keypoints[groups], np.repeat(labels.keypoints[r][None], len(groups),
                                                                             0), area[groups], labels.skeleton.sigmas))
            matched, used = set(), set()
            for flat in np.argsort(-sim, axis=None):
                m, q = np.unravel_index(flat, sim.shape)
                if sim[m, q] < MATCH_OKS:
                    break
                if m not in matched and q not in used:
                    key[mine[m]] = key[groups[q]]
                    matched.add(m)
                    used.add(q)
            groups = np.concatenate([groups, [r for m, r in enumerate(mine) if m not in matched]]).astype(np.int64)
    return key


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's warnings about all-NaN slices (an unlabelled keypoint is NaN on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@dataclass
class AgreementTable:
    """Per person: who agreed how well, per keypoint (the file ``agreement.json`` of a round)."""

    keypoints: tuple[str, ...]
    image_ids: np.ndarray  # [P]
    ann_ids: np.ndarray  # [P]
    annotators: np.ndarray  # [P] how many annotators labelled the person's image
    oks: np.ndarray  # [P] OKS between the annotators (NaN with one annotator)
    per_keypoint: np.ndarray  # [P, K]

    @classmethod
    def of(cls, persons: Persons, per_keypoint: np.ndarray) -> "AgreementTable":
        """The table of consensus ``persons`` (attributes annotators, agreement) and their [P, K] agreement."""
        p = persons
        return cls(p.skeleton.names, p.image_ids, p.ann_ids, p.attrs["annotators"], p.attrs["agreement"], per_keypoint)

    def to_json(self) -> dict:
        return {"keypoints": list(self.keypoints), "image_id": self.image_ids.tolist(),
                "annotation_id": self.ann_ids.tolist(), "annotators": self.annotators.astype(int).tolist(),
                "agreement": _nulls(self.oks), "keypoint_agreement": _nulls(self.per_keypoint)}

    @classmethod
    def from_json(cls, d: dict) -> "AgreementTable":
        names = tuple(d["keypoints"])
        n = len(d["annotation_id"])
        return cls(names, np.array(d["image_id"], dtype=np.int64), np.array(d["annotation_id"], dtype=np.int64),
                   np.array(d["annotators"], dtype=np.int64), _floats(d["agreement"]).reshape(n),
                   _floats(d["keypoint_agreement"]).reshape(n, len(names)))


def _nulls(a: np.ndarray) -> list:
    """Rounded floats as (nested) lists with None for NaN (JSON has no NaN)."""
    return np.where(np.isfinite(a), np.round(a, 4), None).tolist()


def _floats(v: list) -> np.ndarray:
    return np.array(v, dtype=object).astype(np.float64) if len(v) else np.zeros(0)
