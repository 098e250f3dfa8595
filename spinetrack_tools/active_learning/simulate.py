"""A simulated annotator (for demos and benchmarks, not a person): it works through Label Studio's API
like one, submitting the true keypoints wherever the model's pre-annotation is off by more than a
tolerance and accepting the rest untouched."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..labelstudio.client import Connection
from ..labelstudio.convert import from_result, latest_prediction, to_result
from ..persons import Persons


def correct(prediction: list[dict[str, Any]], truth: Persons, width: float, height: float,
            tolerance: float) -> list[dict[str, Any]]:
    """The result a careful annotator would submit for one task: the true persons (``truth``, one image),
    with each predicted point kept where it lies within ``tolerance`` x the person's box size of the truth."""
    predicted, _ = from_result(prediction, width, height, truth.skeleton)
    row_of = {int(a): r for r, a in enumerate(predicted.ann_ids)}
    kp = truth.keypoints.copy()
    for t, aid in enumerate(truth.ann_ids):
        r = row_of.get(int(aid))
        if r is None:
            continue
        pred = predicted.keypoints[r]
        tol = tolerance * truth.boxes[t, 2:].max()
        close = (pred[:, 2] > 0) & (kp[t, :, 2] > 0) & (np.linalg.norm(pred[:, :2] - kp[t, :, :2], axis=1) <= tol)
        kp[t, close, :2] = pred[close, :2]
    return to_result(replace(truth, keypoints=kp), range(len(truth)), width, height)


def annotate(conn: Connection, project: str, truth: Persons, sample_ids: set[str] | None = None,
             tolerance: float = 0.05) -> int:
    """Annotate every unannotated task of ``project`` (optionally only ``sample_ids``) from ``truth`` (labels on
    the same image ids); returns how many tasks were annotated."""
    rows = truth.rows_by_image()
    pid = conn.project_id(project)
    done = 0
    for task in conn.iter_tasks(pid):
        d = task["data"]
        if task.get("annotations") or (sample_ids is not None and str(d.get("sample_id")) not in sample_ids):
            continue
        pred = latest_prediction(task)
        mine = truth.select(rows.get(int(d["image_id"]), np.zeros(0, np.int64)))
        result = correct((pred or {}).get("result") or [], mine, float(d["width"]), float(d["height"]), tolerance)
        conn.create_annotation(int(task["id"]), result)
        done += 1
    return done
