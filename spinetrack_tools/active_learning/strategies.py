"""Selection strategies: score the unlabelled pool with the current model and pick a batch of images.

Each strategy maps the pool's predictions to one score per image (higher = more worth labelling); an
image's score is its most uncertain person (Lightly's aggregation). ``hybrid`` ranks by the mean rank of
three signals and keeps a diverse batch (greedy k-centre over pose embeddings among the top candidates).
New strategies register with ``@strategy("name")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..evaluate import oks
from ..io import InputError
from ..persons import Persons

STRATEGIES: dict[str, Callable[["PoolScores", np.random.Generator], np.ndarray]] = {}


def strategy(name: str) -> Callable:
    def register(fn: Callable) -> Callable:
        STRATEGIES[name] = fn
        return fn
    return register


@dataclass
class PoolScores:
    """The pool's predictions (and flipped predictions) with the per-image index."""

    image_ids: np.ndarray  # [I] pool images, in order
    preds: Persons
    flipped: Persons | None

    def per_image(self, person_scores: np.ndarray) -> np.ndarray:
        """Max over each image's persons (0 for images without persons)."""
        pos = np.searchsorted(self.image_ids, self.preds.image_ids)
        out = np.zeros(len(self.image_ids))
        np.maximum.at(out, pos, np.nan_to_num(person_scores, nan=1.0))
        return out


@strategy("random")
def random_scores(p: PoolScores, rng: np.random.Generator) -> np.ndarray:
    return rng.random(len(p.image_ids))


def _uncertainty(p: PoolScores) -> np.ndarray:
    conf = np.clip(p.preds.keypoints[..., 2], 0, 1)
    return 1 - conf.mean(axis=1)


@strategy("least_confidence")
def least_confidence(p: PoolScores, rng: np.random.Generator) -> np.ndarray:
    return p.per_image(_uncertainty(p))


def _flip_disagreement(p: PoolScores) -> np.ndarray:
    if p.flipped is None:
        raise ValueError("the flip strategy needs flipped predictions")
    a = p.preds.keypoints.copy()
    a[..., 2] = 2.0  # every predicted point counts
    area = np.maximum(p.preds.boxes[:, 2] * p.preds.boxes[:, 3] * 0.53, 1.0)
    return 1 - oks(a, p.flipped.keypoints, area, p.preds.skeleton.sigmas)


@strategy("flip")
def flip_scores(p: PoolScores, rng: np.random.Generator) -> np.ndarray:
    return p.per_image(_flip_disagreement(p))


def _implausibility(p: PoolScores) -> np.ndarray:
    from ..biomech.rules import plausibility

    return 1 - plausibility(p.preds.as_labels())


@strategy("biomech")
def biomech_scores(p: PoolScores, rng: np.random.Generator) -> np.ndarray:
    return p.per_image(_implausibility(p))


@strategy("hybrid")
def hybrid_scores(p: PoolScores, rng: np.random.Generator) -> np.ndarray:
    """Mean rank of least confidence, flip disagreement and implausibility (diversity at selection)."""
    parts = [p.per_image(_uncertainty(p)), p.per_image(_implausibility(p))]
    if p.flipped is not None:
        parts.append(p.per_image(_flip_disagreement(p)))
    ranks = np.mean([np.argsort(np.argsort(s)) for s in parts], axis=0)
    return ranks / max(len(p.image_ids) - 1, 1)


def select(p: PoolScores, name: str, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Image ids of the batch and the score of every pool image."""
    if name not in STRATEGIES:
        raise InputError(None, f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}")
    scores = STRATEGIES[name](p, rng)
    order = np.argsort(-scores, kind="stable")
    if name == "hybrid":
        cand = order[:min(len(order), 3 * k)]
        chosen = _k_center(_embeddings(p)[cand], scores[cand], k)
        return p.image_ids[cand[chosen]], scores
    return p.image_ids[order[:k]], scores


def _embeddings(p: PoolScores) -> np.ndarray:
    """One vector per image: its first person's keypoints normalised to the person's box."""
    pos = np.searchsorted(p.image_ids, p.preds.image_ids)
    emb = np.zeros((len(p.image_ids), p.preds.skeleton.num_keypoints * 2))
    box = p.preds.boxes
    norm = (p.preds.keypoints[..., :2] - box[:, None, :2]) / np.maximum(box[:, None, 2:], 1)
    first = np.unique(pos, return_index=True)[1]
    emb[pos[first]] = norm[first].reshape(len(first), -1)
    return emb


def _k_center(emb: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Greedy k-centre: start from the top score, then repeatedly the candidate farthest from the chosen
    ones, ties broken by score."""
    if len(emb) <= k:
        return np.arange(len(emb))
    chosen = [int(np.argmax(scores))]
    dist = np.linalg.norm(emb - emb[chosen[0]], axis=1)
    for _ in range(k - 1):
        nxt = int(np.argmax(dist + 1e-6 * scores))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(emb - emb[nxt], axis=1))
    return np.array(chosen)
