"""Lossless COCO keypoints <-> Label Studio tasks.

Per person: a rectangle region (id ``a<annotation id>``, or ``n<k>`` for a person without one) and one
keypoint region per labelled joint (id ``<rect id>_k<joint>``, ``parentID`` = the rectangle), a
per-region ``occluded`` choice for v=1, percentages of the original image size as floats, and the
model's confidence as the region ``score`` (clipped to [0, 1], the range Label Studio accepts). Each task carries the image's COCO fields and the persons'
``area`` / ``iscrowd`` / ``category_id`` in its data, so the way back restores them exactly. Keypoints
without a parent go to the unique rectangle containing them; any that cannot be placed, and duplicate
joints, come back as findings, never dropped silently. Several annotators per task: each annotator's
latest annotation counts (``annotations_of``), every one kept with its annotator; the per-task review
decision is read from the latest annotation that carries one (``review_decision``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..findings import Finding
from ..gcpause import gc_paused
from ..io import MISSING_ID
from ..persons import Persons, concat, images_table
from ..skeleton import SPINETRACK37, Skeleton
from ..agreement import ANNOTATOR, DRAWN
from .config import IMAGE, KEYPOINTS, OCCLUDED, PERSON, REVIEW, VISIBILITY

KEYPOINT_SIZE = 0.4  # the keypoint region's drawn width in percent (display only)


def _unit(score: float) -> float:
    """Label Studio accepts scores in [0, 1]; raw model confidences (SimCC maxima) can exceed 1."""
    return float(min(max(score, 0.0), 1.0))


def sample_id(image: dict[str, Any]) -> str:
    """The idempotency key of an image's task: its file name."""
    return str(image["file_name"])


def to_result(persons: Persons, rows: Sequence[int], width: float, height: float) -> list[dict[str, Any]]:
    """Label Studio result regions (annotation or prediction) for some persons of one image.

    Labels show their labelled points (v=1 with the ``occluded`` choice); predictions show the points with a
    positive confidence inside the image, each with its confidence as the region score.
    """
    shown = persons.as_labels(inside_image=True)
    names = persons.skeleton.names
    out: list[dict[str, Any]] = []
    common = {"to_name": IMAGE, "original_width": width, "original_height": height, "image_rotation": 0}
    for n, r in enumerate(rows):
        aid = persons.ann_ids[r]
        rid = f"a{aid}" if aid != MISSING_ID else f"n{n}"
        box = persons.boxes[r]
        if not np.isfinite(box).all():  # no box: the extent of the shown points
            xy = shown.keypoints[r, shown.keypoints[r, :, 2] > 0, :2]
            box = np.r_[xy.min(0), xy.max(0) - xy.min(0)] if len(xy) else np.array([0.0, 0.0, 1.0, 1.0])
        x, y, w, h = (float(v) for v in box)
        rect = {"id": rid, "from_name": PERSON, "type": "rectanglelabels", **common,
                "value": {"x": x / width * 100, "y": y / height * 100, "width": w / width * 100,
                          "height": h / height * 100, "rotation": 0, "rectanglelabels": ["person"]}}
        if persons.predicted and np.isfinite(persons.scores[r]):
            rect["score"] = _unit(persons.scores[r])
        out.append(rect)
        kp = shown.keypoints[r]
        for k in np.flatnonzero(kp[:, 2] > 0):
            kid = f"{rid}_k{k}"
            region = {"id": kid, "parentID": rid, "from_name": KEYPOINTS, "type": "keypointlabels", **common,
                      "value": {"x": float(kp[k, 0]) / width * 100, "y": float(kp[k, 1]) / height * 100,
                                "width": KEYPOINT_SIZE, "keypointlabels": [names[k]]}}
            if persons.predicted:
                region["score"] = _unit(persons.keypoints[r, k, 2])
            out.append(region)
            if kp[k, 2] == 1:
                out.append({"id": kid, "from_name": VISIBILITY, "to_name": IMAGE, "type": "choices",
                            "value": {"choices": [OCCLUDED]}})
    return out


def from_result(result: Sequence[dict[str, Any]], width: float, height: float, skeleton: Skeleton = SPINETRACK37,
                where: tuple[int | None, int | None] = (None, None)) -> tuple[Persons, list[Finding]]:
    """The persons (labels) of one annotation's (or prediction's) result regions, plus findings for what does
    not fit. A person keeps the annotation id of its rectangle (``a<id>``); others get ``MISSING_ID``."""
    task_id, image_id = where
    k = skeleton.num_keypoints
    index = {n: i for i, n in enumerate(skeleton.names)}
    occluded = {r.get("id") for r in result if r.get("from_name") == VISIBILITY
                and OCCLUDED in (r.get("value") or {}).get("choices", [])}
    rect_ids: dict[str, int] = {}
    boxes, ann_ids = [], []
    for r in result:
        if r.get("type") == "rectanglelabels":
            v = r["value"]
            W, H = r.get("original_width", width), r.get("original_height", height)
            rid = str(r.get("id"))
            rect_ids[rid] = len(boxes)
            ann_ids.append(int(rid[1:]) if rid[:1] == "a" and rid[1:].isdigit() else MISSING_ID)
            boxes.append([v["x"] / 100 * W, v["y"] / 100 * H, v["width"] / 100 * W, v["height"] / 100 * H])
    box_arr = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    kp = np.zeros((len(boxes), k, 3))
    findings: list[Finding] = []
    for r in result:
        if r.get("type") != "keypointlabels":
            continue
        v = r["value"]
        W, H = r.get("original_width", width), r.get("original_height", height)
        x, y = v["x"] / 100 * W, v["y"] / 100 * H
        name = (v.get("keypointlabels") or [None])[0]
        if name not in index:
            findings.append(Finding("ls_unknown_label", "error", None, image_id,
                                    f"task {task_id}: keypoint label {name!r} is not in the skeleton"))
            continue
        parent = r.get("parentID")
        if parent in rect_ids:
            p = rect_ids[parent]
        else:
            b = box_arr
            holders = np.flatnonzero((b[:, 0] <= x) & (x <= b[:, 0] + b[:, 2]) & (b[:, 1] <= y) & (y <= b[:, 1] + b[:, 3]))
            if len(holders) != 1:
                findings.append(Finding(
                    "ls_ungrouped_keypoint", "error", None, image_id,
                    f"task {task_id}: {name} at ({x:.1f}, {y:.1f}) has no person "
                    f"({'inside no box' if not len(holders) else 'inside several boxes'}); group it under a person",
                    keypoints=[name], values={"x": x, "y": y, "task_id": task_id, "region_id": r.get("id")}))
                continue
            p = int(holders[0])
        j = index[name]
        if kp[p, j, 2] > 0:
            aid = ann_ids[p]
            findings.append(Finding("ls_duplicate_keypoint", "error", None if aid == MISSING_ID else aid, image_id,
                                    f"task {task_id}: {name} placed twice for one person; the first is kept",
                                    keypoints=[name], values={"x": x, "y": y, "task_id": task_id}))
            continue
        kp[p, j] = (x, y, 1 if r.get("id") in occluded else 2)
    persons = Persons.build(skeleton, kp, np.full(len(boxes), -1 if image_id is None else image_id),
                            ann_ids=ann_ids, boxes=box_arr)
    return persons, findings


@gc_paused()  # a million small dicts for 5,000 tasks: 2.5 -> 1.2 s (see gcpause)
def to_labelstudio(persons: Persons, image_url: Callable[[dict[str, Any]], str] = lambda im: str(im["file_name"]),
                   model_version: str = "spinetrack") -> list[dict[str, Any]]:
    """One task per image of ``persons.images``, its persons as a prediction.

    The persons are model output (predictions) or an existing dataset's labels (to review it); the
    prediction's score is the lowest person confidence, so Label Studio's uncertainty sampling serves the
    least confident images first. Each task carries the image's fields and, per annotation id, the
    person's area, iscrowd and category, which the way back restores.
    """
    rows = persons.rows_by_image()
    tasks = []
    for im in persons.images.itertuples(index=False):
        iid = int(im.id)
        mine = rows.get(iid, np.zeros(0, np.int64))
        W, H = float(im.width), float(im.height)
        image = {"id": iid, "file_name": im.file_name, "width": int(W) if W.is_integer() else W,
                 "height": int(H) if H.is_integer() else H}
        scores = persons.scores[mine] if persons.predicted else np.zeros(0)
        scores = scores[np.isfinite(scores)]
        meta = {str(int(persons.ann_ids[r])): {"area": _opt(persons.areas[r]), "iscrowd": int(persons.crowd[r]),
                                               "category_id": int(persons.category_ids[r])}
                for r in mine if persons.ann_ids[r] != MISSING_ID}
        tasks.append({
            "data": {IMAGE: image_url(image), "sample_id": sample_id(image), "image_id": iid,
                     "file_name": image["file_name"], "width": image["width"], "height": image["height"],
                     "persons": meta, REVIEW: ""},
            "predictions": [{"model_version": model_version, "score": _unit(scores.min()) if len(scores) else 1.0,
                             "result": to_result(persons, mine, W, H)}],
        })
    return tasks


def _opt(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def annotator_of(annotation: dict[str, Any]) -> int:
    """The Label Studio user id of an annotation's author (``completed_by``; -1 when not given)."""
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("id")
    return int(who) if isinstance(who, int) and not isinstance(who, bool) else -1


def _updated(annotation: dict[str, Any]) -> tuple[str, int]:
    return str(annotation.get("updated_at") or annotation.get("created_at") or ""), int(annotation.get("id") or 0)


def annotations_of(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Each annotator's most recently updated annotation of a task that was not cancelled (skipped), by
    annotator id."""
    latest: dict[int, dict[str, Any]] = {}
    for a in task.get("annotations") or []:
        if a.get("was_cancelled"):
            continue
        who = annotator_of(a)
        if who not in latest or _updated(a) > _updated(latest[who]):
            latest[who] = a
    return [latest[w] for w in sorted(latest)]


def latest_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The most recently updated annotation of a task that was not cancelled (skipped)."""
    return max(annotations_of(task), key=_updated, default=None)


def review_decision(task: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The reviewer's choice on a task (from the most recently updated annotation that carries one; it may be
    a value the config does not offer) and that annotation; (None, None) without a decision."""
    for a in sorted(annotations_of(task), key=_updated, reverse=True):
        for r in a.get("result") or []:
            if r.get("from_name") == REVIEW and r.get("type") == "choices":
                choices = (r.get("value") or {}).get("choices") or []
                if choices:
                    return str(choices[0]), a
    return None, None


def from_labelstudio(tasks: Iterable[dict[str, Any]], skeleton: Skeleton = SPINETRACK37,
                     first_new_id: int = 1) -> tuple[Persons, list[Finding]]:
    """Labels from annotated tasks: every annotator's latest non-cancelled annotation, on the tasks' images,
    with the attributes ``annotator`` (Label Studio user id), ``ls_annotation`` (its annotation id) and
    ``drawn`` (a person the annotator drew; ``agreement.consensus`` matches those across annotators).

    Persons keep their annotation id, area, iscrowd and category from the task data; persons drawn in
    Label Studio get new ids (above the largest known and ``first_new_id``) and the box area.
    """
    findings: list[Finding] = []
    parts: list[Persons] = []
    images: list[dict] = []
    for task in tasks:
        anns = annotations_of(task)
        if not anns:
            continue
        d = task["data"]
        iid = int(d["image_id"])
        images.append({"id": iid, "file_name": d["file_name"], "width": d["width"], "height": d["height"]})
        meta = d.get("persons") or {}
        for ann in anns:
            persons, f = from_result(ann.get("result") or [], float(d["width"]), float(d["height"]), skeleton,
                                     (task.get("id"), iid))
            findings.extend(f)
            drawn = np.zeros(len(persons), dtype=bool)
            for r in range(len(persons)):
                known = meta.get(str(int(persons.ann_ids[r])))
                if known:
                    persons.areas[r] = np.nan if known["area"] is None else known["area"]
                    persons.iscrowd[r], persons.category_ids[r] = known["iscrowd"], known["category_id"]
                else:
                    persons.ann_ids[r] = MISSING_ID
                    drawn[r] = True
            persons.attrs = {ANNOTATOR: np.full(len(persons), annotator_of(ann), dtype=np.int64),
                             "ls_annotation": np.full(len(persons), int(ann.get("id") or 0), dtype=np.int64),
                             DRAWN: drawn}
            parts.append(persons)
    out = concat(parts, skeleton, images=images_table(images))
    if not parts:
        out.attrs = {ANNOTATOR: np.zeros(0, np.int64), "ls_annotation": np.zeros(0, np.int64),
                     DRAWN: np.zeros(0, bool)}
    new = out.ann_ids == MISSING_ID
    start = max(int(out.ann_ids[~new].max(initial=0)) + 1, first_new_id)
    out.ann_ids[new] = start + np.arange(int(new.sum()))
    return out, findings


def latest_prediction(task: dict[str, Any]) -> dict[str, Any] | None:
    preds = task.get("predictions") or []
    return max(preds, key=lambda p: (str(p.get("created_at") or ""), p.get("id") or 0)) if preds else None


def edits(task: dict[str, Any], skeleton: Skeleton = SPINETRACK37) -> list[dict[str, Any]]:
    """Per joint of each annotator's annotation against the task's prediction: ``kept`` (untouched
    prediction), ``moved`` (prediction changed, with the correction distance in pixels and, for a
    pre-annotated person, relative to the square root of its area, the OKS scale), ``added`` (not
    predicted), ``removed`` (predicted, deleted by the annotator), with the annotation, its annotator and
    Label Studio's region ``origin`` when it reports one."""
    pred = latest_prediction(task)
    d = task["data"]
    W, H = float(d["width"]), float(d["height"])
    had = {_key(r): r for r in (pred or {}).get("result") or [] if r.get("type") == "keypointlabels"}
    meta = d.get("persons") or {}
    out = []
    for ann in annotations_of(task):
        got = {_key(r): r for r in ann.get("result") or [] if r.get("type") == "keypointlabels"}
        for key in sorted(set(got) | set(had)):
            a, p = got.get(key), had.get(key)
            e: dict[str, Any] = {"task_id": task.get("id"), "image_id": d.get("image_id"), "region": key[0],
                                 "keypoint": key[1], "annotation_id": ann.get("id"), "annotator": annotator_of(ann)}
            if a is not None and p is not None:
                dist = float(np.hypot((a["value"]["x"] - p["value"]["x"]) / 100 * W,
                                      (a["value"]["y"] - p["value"]["y"]) / 100 * H))
                area = (meta.get(key[0][1:]) or {}).get("area") if key[0][:1] == "a" else None
                e.update(edit="moved" if dist > 0 else "kept", distance_px=dist,
                         distance_rel=dist / np.sqrt(area) if area else None)
            else:
                e.update(edit="added" if p is None else "removed", distance_px=None, distance_rel=None)
            if a is not None and "origin" in a:
                e["origin"] = a["origin"]
            out.append(e)
    return out


def _key(region: dict[str, Any]) -> tuple[str, str]:
    return str(region.get("parentID") or region.get("id")), (region["value"].get("keypointlabels") or [""])[0]


def merge_pulls(previous: dict[str, Any] | None, new: dict[str, Any], watermark: str | None) -> dict[str, Any]:
    """An earlier pull updated with a newer one: images pulled again replace their earlier persons."""
    out = {"info": {}, "images": [], "annotations": [], "categories": new["categories"]}
    if previous:
        fresh = {im["id"] for im in new["images"]}
        out["images"] = [im for im in previous.get("images", []) if im["id"] not in fresh]
        out["annotations"] = [a for a in previous.get("annotations", []) if a["image_id"] not in fresh]
    out["images"] += new["images"]
    out["annotations"] += new["annotations"]
    out["info"] = {**((previous or {}).get("info") or {}),
                   "labelstudio_watermark": watermark or ((previous or {}).get("info") or {}).get(
                       "labelstudio_watermark")}
    return out
