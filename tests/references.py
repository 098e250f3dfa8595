"""Reference implementations the tests and benchmarks compare the toolkit against (not part of the library)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pycocotools_reference(gt: dict, results: list[dict], indices: Sequence[int], sigmas: np.ndarray) -> np.ndarray:
    """pycocotools' 10 figures for the keypoints at ``indices`` (the protocol done by hand: inputs sliced,
    ``num_keypoints`` recomputed): the oracle the tests and the benchmark compare against."""
    import contextlib
    import copy
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    idx = list(indices)
    g = copy.deepcopy(gt)
    for a in g["annotations"]:
        kp = np.array(a["keypoints"]).reshape(-1, 3)[idx]
        a["keypoints"], a["num_keypoints"] = kp.ravel().tolist(), int((kp[:, 2] > 0).sum())
    d = copy.deepcopy(results)
    for r in d:
        r["keypoints"] = np.array(r["keypoints"]).reshape(-1, 3)[idx].ravel().tolist()
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = g
        cg.createIndex()
        if d:
            cd = cg.loadRes(d)
        else:  # pycocotools' loadRes fails on an empty list: build the empty result set by hand
            cd = COCO()
            cd.dataset = {"images": g["images"], "annotations": [], "categories": g["categories"]}
            cd.createIndex()
        e = COCOeval(cg, cd, "keypoints")
        e.params.kpt_oks_sigmas = np.asarray(sigmas)[idx] if len(sigmas) != len(idx) else np.asarray(sigmas)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return np.array(e.stats)
