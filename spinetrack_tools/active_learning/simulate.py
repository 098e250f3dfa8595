"""A simulated annotator (for demos and benchmarks, not a person): it works through Label Studio's API
like one, submitting the true keypoints wherever the model's pre-annotation is off by more than a
tolerance and accepting the rest untouched."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..labelstudio.client import Connection
from ..labelstudio.convert import Person, from_result, latest_prediction, to_result
from ..skeleton import SPINETRACK37, Skeleton


def correct(prediction: list[dict[str, Any]], truth: dict[int, dict], width: float, height: float,
            tolerance: float, skeleton: Skeleton = SPINETRACK37) -> list[dict[str, Any]]:
    """The result a careful annotator would submit for one task: the true persons, with each predicted
    point kept where it lies within ``tolerance`` x the person's box size of the truth."""
    predicted, _ = from_result(prediction, width, height, skeleton)
    by_id = {p.annotation_id: p for p in predicted}
    persons = []
    for aid, a in truth.items():
        kp = np.asarray(a["keypoints"], dtype=float).reshape(-1, 3)
        box = np.asarray(a["bbox"], dtype=float)
        pred = by_id.get(aid)
        if pred is not None:
            tol = tolerance * max(box[2], box[3])
            close = (pred.keypoints[:, 2] > 0) & (kp[:, 2] > 0) & \
                (np.linalg.norm(pred.keypoints[:, :2] - kp[:, :2], axis=1) <= tol)
            kp[close, :2] = pred.keypoints[close, :2]
        persons.append(Person(aid, box, kp))
    return to_result(persons, width, height, skeleton)


def annotate(conn: Connection, project: str, truth: dict[str, Any], sample_ids: set[str] | None = None,
             tolerance: float = 0.05, skeleton: Skeleton = SPINETRACK37) -> int:
    """Annotate every unannotated task of ``project`` (optionally only ``sample_ids``) from ``truth``
    (a COCO dict with the same image ids); returns how many tasks were annotated."""
    by_image: dict[int, dict[int, dict]] = {}
    for a in truth["annotations"]:
        by_image.setdefault(int(a["image_id"]), {})[int(a["id"])] = a
    pid = conn.project_id(project)
    done = 0
    for task in conn.iter_tasks(pid):
        d = task["data"]
        if task.get("annotations") or (sample_ids is not None and str(d.get("sample_id")) not in sample_ids):
            continue
        pred = latest_prediction(task)
        result = correct((pred or {}).get("result") or [], by_image.get(int(d["image_id"]), {}),
                         float(d["width"]), float(d["height"]), tolerance, skeleton)
        conn.ls.annotations.create(id=int(task["id"]), result=result)
        done += 1
    return done
