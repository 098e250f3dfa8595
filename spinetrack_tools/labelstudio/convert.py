"""Lossless COCO keypoints <-> Label Studio tasks.

Per person: a rectangle region (id ``a<annotation id>``, or ``n<k>`` for a person without one) and one
keypoint region per labelled joint (id ``<rect id>_k<joint>``, ``parentID`` = the rectangle), a
per-region ``occluded`` choice for v=1, percentages of the original image size as floats, and the
model's confidence as the region ``score`` (clipped to [0, 1], the range Label Studio accepts). Each task carries the image's COCO fields and the persons'
``area`` / ``iscrowd`` / ``category_id`` in its data, so the way back restores them exactly. Keypoints
without a parent go to the unique rectangle containing them; any that cannot be placed, and duplicate
joints, come back as findings, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..findings import Finding
from ..gcpause import gc_paused
from ..skeleton import SPINETRACK37, Skeleton
from .config import IMAGE, KEYPOINTS, OCCLUDED, PERSON, VISIBILITY

KEYPOINT_SIZE = 0.4  # the keypoint region's drawn width in percent (display only)


@dataclass
class Person:
    """One person of one image: box xywh in pixels, keypoints [K, 3] (x, y, v), optional scores."""

    annotation_id: int | None
    box: np.ndarray
    keypoints: np.ndarray
    keypoint_scores: np.ndarray | None = None  # [K] model confidences (predictions only)
    score: float | None = None  # person score (predictions only)
    area: float | None = None
    iscrowd: int = 0
    category_id: int = 1
    origins: dict[int, str] = field(default_factory=dict)  # joint -> LS origin (prediction, prediction-changed, manual)


def _unit(score: float) -> float:
    """Label Studio accepts scores in [0, 1]; raw model confidences (SimCC maxima) can exceed 1."""
    return float(min(max(score, 0.0), 1.0))


def sample_id(image: dict[str, Any]) -> str:
    """The idempotency key of an image's task: its file name."""
    return str(image["file_name"])


def to_result(persons: Sequence[Person], width: float, height: float, skeleton: Skeleton = SPINETRACK37,
              ) -> list[dict[str, Any]]:
    """Label Studio result regions (annotation or prediction) for one image's persons."""
    out: list[dict[str, Any]] = []
    common = {"to_name": IMAGE, "original_width": width, "original_height": height, "image_rotation": 0}
    for n, p in enumerate(persons):
        rid = f"a{p.annotation_id}" if p.annotation_id is not None else f"n{n}"
        x, y, w, h = (float(v) for v in p.box)
        rect = {"id": rid, "from_name": PERSON, "type": "rectanglelabels", **common,
                "value": {"x": x / width * 100, "y": y / height * 100, "width": w / width * 100,
                          "height": h / height * 100, "rotation": 0, "rectanglelabels": ["person"]}}
        if p.score is not None:
            rect["score"] = _unit(p.score)
        out.append(rect)
        for k in np.flatnonzero(p.keypoints[:, 2] > 0):
            kid = f"{rid}_k{k}"
            region = {"id": kid, "parentID": rid, "from_name": KEYPOINTS, "type": "keypointlabels", **common,
                      "value": {"x": float(p.keypoints[k, 0]) / width * 100,
                                "y": float(p.keypoints[k, 1]) / height * 100,
                                "width": KEYPOINT_SIZE, "keypointlabels": [skeleton.names[k]]}}
            if p.keypoint_scores is not None and np.isfinite(p.keypoint_scores[k]):
                region["score"] = _unit(p.keypoint_scores[k])
            out.append(region)
            if p.keypoints[k, 2] == 1:
                out.append({"id": kid, "from_name": VISIBILITY, "to_name": IMAGE, "type": "choices",
                            "value": {"choices": [OCCLUDED]}})
    return out


def from_result(result: Sequence[dict[str, Any]], width: float, height: float, skeleton: Skeleton = SPINETRACK37,
                where: tuple[int | None, int | None] = (None, None)) -> tuple[list[Person], list[Finding]]:
    """Persons from one annotation's (or prediction's) result regions, plus findings for what does not fit."""
    task_id, image_id = where
    k = skeleton.num_keypoints
    index = {n: i for i, n in enumerate(skeleton.names)}
    occluded = {r.get("id") for r in result if r.get("from_name") == VISIBILITY
                and OCCLUDED in (r.get("value") or {}).get("choices", [])}
    persons: dict[str, Person] = {}
    findings: list[Finding] = []
    for r in result:
        if r.get("type") == "rectanglelabels":
            v = r["value"]
            W, H = r.get("original_width", width), r.get("original_height", height)
            rid = str(r.get("id"))
            persons[rid] = Person(
                int(rid[1:]) if rid[:1] == "a" and rid[1:].isdigit() else None,
                np.array([v["x"] / 100 * W, v["y"] / 100 * H, v["width"] / 100 * W, v["height"] / 100 * H]),
                np.zeros((k, 3)), np.full(k, np.nan), r.get("score"))
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
        if parent not in persons:
            holders = [pid for pid, p in persons.items()
                       if p.box[0] <= x <= p.box[0] + p.box[2] and p.box[1] <= y <= p.box[1] + p.box[3]]
            if len(holders) != 1:
                findings.append(Finding(
                    "ls_ungrouped_keypoint", "error", None, image_id,
                    f"task {task_id}: {name} at ({x:.1f}, {y:.1f}) has no person "
                    f"({'inside no box' if not holders else 'inside several boxes'}); group it under a person",
                    keypoints=[name], values={"x": x, "y": y, "task_id": task_id, "region_id": r.get("id")}))
                continue
            parent = holders[0]
        p = persons[parent]
        j = index[name]
        if p.keypoints[j, 2] > 0:
            findings.append(Finding("ls_duplicate_keypoint", "error", p.annotation_id, image_id,
                                    f"task {task_id}: {name} placed twice for one person; the first is kept",
                                    keypoints=[name], values={"x": x, "y": y, "task_id": task_id}))
            continue
        p.keypoints[j] = (x, y, 1 if r.get("id") in occluded else 2)
        if "score" in r and p.keypoint_scores is not None:
            p.keypoint_scores[j] = r["score"]
        if "origin" in r:
            p.origins[j] = r["origin"]
    return list(persons.values()), findings


@gc_paused()  # a million small dicts for 5,000 tasks: 2.5 -> 1.2 s (see gcpause)
def to_labelstudio(coco: dict[str, Any], persons_by_image: dict[int, list[Person]] | None = None,
                   image_url: Callable[[dict[str, Any]], str] = lambda im: str(im["file_name"]),
                   model_version: str = "spinetrack", skeleton: Skeleton = SPINETRACK37) -> list[dict[str, Any]]:
    """One task per image of ``coco``, its persons as a prediction.

    The prediction shows ``persons_by_image`` (model output) when given, else the file's own annotations
    (reviewing an existing dataset); its score is the lowest person confidence, so Label Studio's
    uncertainty sampling serves the least confident images first.
    """
    if persons_by_image is None:
        persons_by_image = persons_from_coco(coco)
    tasks = []
    for im in coco["images"]:
        persons = persons_by_image.get(int(im["id"]), [])
        W, H = float(im["width"]), float(im["height"])
        scores = [p.score for p in persons if p.score is not None]
        meta = {str(p.annotation_id): {"area": p.area, "iscrowd": p.iscrowd, "category_id": p.category_id}
                for p in persons if p.annotation_id is not None}
        tasks.append({
            "data": {IMAGE: image_url(im), "sample_id": sample_id(im), "image_id": int(im["id"]),
                     "file_name": im["file_name"], "width": im["width"], "height": im["height"], "persons": meta},
            "predictions": [{"model_version": model_version, "score": _unit(min(scores)) if scores else 1.0,
                             "result": to_result(persons, W, H, skeleton)}],
        })
    return tasks


def persons_from_coco(coco: dict[str, Any]) -> dict[int, list[Person]]:
    """The file's annotations grouped per image (file order)."""
    out: dict[int, list[Person]] = {}
    for a in coco["annotations"]:
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        out.setdefault(int(a["image_id"]), []).append(Person(
            int(a["id"]), np.asarray(a["bbox"], dtype=np.float64), kp, None, None, a.get("area"),
            int(a.get("iscrowd", 0)), int(a.get("category_id", 1))))
    return out


def latest_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The most recently updated annotation of a task that was not cancelled (skipped)."""
    anns = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not anns:
        return None
    return max(anns, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))


def from_labelstudio(tasks: Iterable[dict[str, Any]], skeleton: Skeleton = SPINETRACK37,
                     categories: list[dict] | None = None, first_new_id: int = 1) -> tuple[dict[str, Any], list[Finding]]:
    """COCO keypoints from annotated tasks (each task's latest non-cancelled annotation).

    Persons keep their annotation id, area, iscrowd and category from the task data; persons drawn in
    Label Studio get new ids (above the largest known and ``first_new_id``) and the box area.
    """
    coco: dict[str, Any] = {"images": [], "annotations": [],
                            "categories": categories or [skeleton.to_category()]}
    findings: list[Finding] = []
    pending: list[tuple[Person, int]] = []
    for task in tasks:
        ann = latest_annotation(task)
        if ann is None:
            continue
        d = task["data"]
        iid = int(d["image_id"])
        coco["images"].append({"id": iid, "file_name": d["file_name"], "width": d["width"], "height": d["height"]})
        persons, f = from_result(ann.get("result") or [], float(d["width"]), float(d["height"]), skeleton,
                                 (task.get("id"), iid))
        findings.extend(f)
        meta = d.get("persons") or {}
        for p in persons:
            known = meta.get(str(p.annotation_id))
            if known:
                p.area, p.iscrowd, p.category_id = known["area"], known["iscrowd"], known["category_id"]
            else:
                p.annotation_id = None
            pending.append((p, iid))
    next_id = max([p.annotation_id + 1 for p, _ in pending if p.annotation_id is not None] + [first_new_id])
    for p, iid in pending:
        if p.annotation_id is None:
            p.annotation_id, next_id = next_id, next_id + 1
        coco["annotations"].append(coco_annotation(p, iid))
    return coco, findings


def coco_annotation(p: Person, image_id: int) -> dict[str, Any]:
    kp = p.keypoints.copy()
    kp[kp[:, 2] == 0, :2] = 0.0
    return {"id": int(p.annotation_id), "image_id": image_id, "category_id": p.category_id,
            "bbox": [float(v) for v in p.box],
            "area": float(p.area) if p.area is not None else float(p.box[2] * p.box[3]),
            "iscrowd": p.iscrowd, "num_keypoints": int((kp[:, 2] > 0).sum()),
            "keypoints": [float(v) if i % 3 < 2 else int(v) for i, v in enumerate(kp.ravel())]}


def latest_prediction(task: dict[str, Any]) -> dict[str, Any] | None:
    preds = task.get("predictions") or []
    return max(preds, key=lambda p: (str(p.get("created_at") or ""), p.get("id") or 0)) if preds else None


def edits(task: dict[str, Any], skeleton: Skeleton = SPINETRACK37) -> list[dict[str, Any]]:
    """Per joint of the task's annotation against its prediction: ``kept`` (untouched prediction),
    ``moved`` (prediction changed, with the correction distance in pixels), ``added`` (not predicted),
    ``removed`` (predicted, deleted by the annotator), with Label Studio's region ``origin`` when it
    reports one."""
    ann, pred = latest_annotation(task), latest_prediction(task)
    if ann is None:
        return []
    d = task["data"]
    W, H = float(d["width"]), float(d["height"])
    got = {_key(r): r for r in ann.get("result") or [] if r.get("type") == "keypointlabels"}
    had = {_key(r): r for r in (pred or {}).get("result") or [] if r.get("type") == "keypointlabels"}
    out = []
    for key in sorted(set(got) | set(had)):
        a, p = got.get(key), had.get(key)
        e: dict[str, Any] = {"task_id": task.get("id"), "image_id": d.get("image_id"), "region": key[0],
                             "keypoint": key[1]}
        if a is not None and p is not None:
            dist = float(np.hypot((a["value"]["x"] - p["value"]["x"]) / 100 * W,
                                  (a["value"]["y"] - p["value"]["y"]) / 100 * H))
            e.update(edit="moved" if dist > 0 else "kept", distance_px=dist)
        else:
            e.update(edit="added" if p is None else "removed", distance_px=None)
        if a is not None and "origin" in a:
            e["origin"] = a["origin"]
        out.append(e)
    return out


def _key(region: dict[str, Any]) -> tuple[str, str]:
    return str(region.get("parentID") or region.get("id")), (region["value"].get("keypointlabels") or [""])[0]


def persons_from_results(results: Sequence[dict[str, Any]], k: int,
                         image_sizes: dict[int, tuple[float, float]] | None = None) -> dict[int, list[Person]]:
    """Model predictions (COCO results as ``spinetrack predict`` writes them) grouped per image; a person
    predicted on an annotation's box keeps that annotation's id, so corrections map back to it. Points the
    model marks invalid (score <= 0) or places outside the image (``image_sizes``) are not shown."""
    out: dict[int, list[Person]] = {}
    for r in results:
        kp = np.asarray(r["keypoints"], dtype=np.float64).reshape(k, 3)
        xy, conf = kp[:, :2], kp[:, 2]
        valid = conf > 0
        if image_sizes and int(r["image_id"]) in image_sizes:
            w, h = image_sizes[int(r["image_id"])]
            valid &= (xy[:, 0] >= 0) & (xy[:, 0] <= w) & (xy[:, 1] >= 0) & (xy[:, 1] <= h)
        box = r.get("person_box") or r.get("bbox")
        if box is None and valid.any():
            lo, hi = xy[valid].min(0), xy[valid].max(0)
            box = [lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]
        pts = np.concatenate([np.where(valid[:, None], xy, 0.0), np.where(valid, 2.0, 0.0)[:, None]], axis=1)
        aid = r.get("annotation_id")
        out.setdefault(int(r["image_id"]), []).append(Person(
            int(aid) if aid is not None else None, np.asarray(box if box is not None else [0, 0, 1, 1], float), pts,
            conf, float(r.get("score", 1.0)), None, 0, int(r.get("category_id", 1))))
    return out


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
