"""Selection strategies on hand-built pool predictions: each picks what its signal says."""

from __future__ import annotations

import numpy as np
import pytest

from spinetrack_tools import synth
from spinetrack_tools.active_learning import DEFAULT_STRATEGY, STRATEGY_NAMES
from spinetrack_tools.active_learning.strategies import STRATEGIES, PoolScores, select
from spinetrack_tools.io import InputError
from spinetrack_tools.persons import Persons
from spinetrack_tools.skeleton import SPINETRACK37


def pool(confidence: np.ndarray, jitter_flip: np.ndarray) -> PoolScores:
    """One person per image, true synthetic poses as predictions; ``jitter_flip`` moves the flipped
    prediction's points by that many pixels."""
    coco = synth.generate(len(confidence), seed=3, persons_per_image=(1, 1), fk="numpy")
    kp = np.array([a["keypoints"] for a in coco["annotations"]], float).reshape(len(confidence), -1, 3)[..., :2]
    boxes = np.array([a["bbox"] for a in coco["annotations"]], float)
    ids = np.array([a["image_id"] for a in coco["annotations"]])
    conf = np.repeat(confidence[:, None], kp.shape[1], axis=1)

    def preds(points: np.ndarray) -> Persons:
        return Persons.build(SPINETRACK37, np.concatenate([points, conf[..., None]], axis=2), ids, boxes=boxes,
                             scores=confidence, predicted=True)

    return PoolScores(np.sort(ids), preds(kp), preds(kp + jitter_flip[:, None, None]))


def test_registry_matches_the_names_the_cli_offers():
    assert set(STRATEGIES) == set(STRATEGY_NAMES) and DEFAULT_STRATEGY in STRATEGIES


HARD = np.array([3, 11, 17, 25, 38])


def hard_pool(n: int = 40) -> PoolScores:
    confidence, jitter = np.full(n, 0.9), np.zeros(n)
    confidence[HARD] = 0.2  # the model is unsure here
    jitter[HARD] = 40.0  # and its flipped prediction disagrees
    return pool(confidence, jitter)


@pytest.mark.parametrize("name", ["least_confidence", "flip"])
def test_uncertainty_strategies_pick_the_uncertain_images(name):
    p = hard_pool()
    chosen, scores = select(p, name, len(HARD), np.random.default_rng(0))
    assert len(scores) == len(p.image_ids)
    assert sorted(chosen.tolist()) == sorted(p.image_ids[HARD].tolist())


def test_hybrid_takes_a_diverse_batch_from_its_top_candidates():
    p = hard_pool()
    k = 4
    chosen, scores = select(p, "hybrid", k, np.random.default_rng(0))
    top = p.image_ids[np.argsort(-scores, kind="stable")[:3 * k]]
    assert len(set(chosen.tolist())) == k and set(chosen.tolist()) <= set(top.tolist())
    assert p.image_ids[np.argmax(scores)] in chosen


def test_random_is_seeded_and_unknown_names_are_refused():
    p = pool(np.full(30, 0.5), np.zeros(30))
    a, _ = select(p, "random", 10, np.random.default_rng(1))
    b, _ = select(p, "random", 10, np.random.default_rng(1))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 10
    with pytest.raises(InputError, match="unknown strategy"):
        select(p, "nope", 5, np.random.default_rng(0))
