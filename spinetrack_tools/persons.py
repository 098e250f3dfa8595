"""``Persons``: people with keypoints as arrays, the one in-memory shape of labels and predictions.

One row per person: image id, annotation id, category, box, keypoints ``[N, K, 3]`` and score, plus the
images they stand on and the ``Skeleton`` that names the keypoints. The third keypoint column is COCO's
visibility (0, 1, 2) for labels and the model's confidence for predictions (``predicted``), exactly as
COCO keypoint files and COCO results files store them. ``from_coco`` / ``from_results`` read those two
formats (validating, raising one ``InputError``), ``to_coco`` / ``to_results`` write them.

``parse_coco`` is the lenient reader behind ``from_coco``: it never fails on a malformed annotation but
marks it (NaN values and a per-row status), so ``validate`` can report what ``from_coco`` refuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .io import MISSING_ID, InputError
from .skeleton import Skeleton, skeleton_for_names

# Status codes of a parsed list field (``keypoints``, ``bbox``).
OK, MISSING, BAD_LENGTH, BAD_TYPE = 0, 1, 2, 3
IMAGE_COLUMNS = ("id", "file_name", "width", "height")


def images_table(images: Sequence[dict] | None = None, ids: Iterable[int] = ()) -> pd.DataFrame:
    """The image table (id, file_name, width, height) of COCO image dicts, or of bare ids (no name or size)."""
    if images is None:
        ids = np.unique(np.asarray(list(ids), dtype=np.int64))
        return pd.DataFrame({"id": ids, "file_name": [None] * len(ids), "width": np.full(len(ids), np.nan),
                             "height": np.full(len(ids), np.nan)})
    dicts = [i if isinstance(i, dict) else {} for i in images]
    return pd.DataFrame({"id": _id_column(dicts, "id"), "file_name": [i.get("file_name") for i in dicts],
                         "width": _float_column(dicts, "width"), "height": _float_column(dicts, "height")})


@dataclass(eq=False)
class Persons:
    """People with keypoints (labels or predictions) and the images they are on."""

    skeleton: Skeleton
    keypoints: np.ndarray  # [N, K, 3] float64: x, y and visibility (labels) or confidence (predictions)
    image_ids: np.ndarray  # [N] int64
    ann_ids: np.ndarray  # [N] int64; MISSING_ID where a person has none (e.g. a detector's box)
    category_ids: np.ndarray  # [N] int64
    boxes: np.ndarray  # [N, 4] float64 xywh; NaN where unknown
    scores: np.ndarray  # [N] float64 instance score; NaN for labels
    areas: np.ndarray  # [N] float64 COCO area (the OKS scale); NaN where unknown
    iscrowd: np.ndarray  # [N] float64 as stored (NaN where missing); see ``crowd``
    images: pd.DataFrame = field(repr=False)  # id, file_name, width, height: every image, with persons or not
    predicted: bool = False  # keypoints[..., 2] holds model confidences, not visibilities
    source: str = "<memory>"  # where they came from (for messages and reports)
    attrs: dict[str, np.ndarray] = field(default_factory=dict)  # optional extra per-person columns

    def __len__(self) -> int:
        return len(self.image_ids)

    @classmethod
    def empty(cls, skeleton: Skeleton, predicted: bool = False, images: pd.DataFrame | None = None) -> "Persons":
        k = skeleton.num_keypoints
        z = np.zeros(0)
        return cls(skeleton, np.zeros((0, k, 3)), z.astype(np.int64), z.astype(np.int64), z.astype(np.int64),
                   np.zeros((0, 4)), z, z, z, images if images is not None else images_table(ids=()), predicted)

    @classmethod
    def build(cls, skeleton: Skeleton, keypoints: np.ndarray, image_ids: Sequence[int], *,
              ann_ids: Sequence[int] | None = None, category_ids: Sequence[int] | None = None,
              boxes: np.ndarray | None = None, scores: np.ndarray | None = None, areas: np.ndarray | None = None,
              iscrowd: np.ndarray | None = None, images: pd.DataFrame | None = None, predicted: bool = False,
              source: str = "<memory>", attrs: dict[str, np.ndarray] | None = None) -> "Persons":
        """Persons from arrays; what is not given gets its neutral value (no id, category 1, NaN box, ...)."""
        kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, skeleton.num_keypoints, 3)
        n = len(kp)
        ids = np.asarray(image_ids, dtype=np.int64).reshape(n)

        def col(v: Any, default: float, dtype: Any = np.float64, shape: tuple[int, ...] = ()) -> np.ndarray:
            return np.full((n, *shape), default, dtype=dtype) if v is None else \
                np.asarray(v, dtype=dtype).reshape(n, *shape)

        return cls(skeleton, kp, ids, col(ann_ids, MISSING_ID, np.int64), col(category_ids, 1, np.int64),
                   col(boxes, np.nan, shape=(4,)), col(scores, np.nan), col(areas, np.nan), col(iscrowd, 0),
                   images if images is not None else images_table(ids=ids), predicted, source,
                   {k: np.asarray(v) for k, v in (attrs or {}).items()})

    # views -------------------------------------------------------------------------------------------------
    @property
    def crowd(self) -> np.ndarray:
        """[N] bool: crowd regions (iscrowd == 1)."""
        return self.iscrowd == 1

    def labelled(self) -> np.ndarray:
        """[N, K] keypoints with v > 0 (labels) or a positive confidence (predictions)."""
        return self.keypoints[..., 2] > 0

    def select(self, rows: np.ndarray | Sequence[int]) -> "Persons":
        """The persons at ``rows`` (a boolean mask or indices), on the same images."""
        r = np.asarray(rows)
        if r.dtype != bool:
            r = r.astype(np.int64)
        return replace(self, keypoints=self.keypoints[r], image_ids=self.image_ids[r], ann_ids=self.ann_ids[r],
                       category_ids=self.category_ids[r], boxes=self.boxes[r], scores=self.scores[r],
                       areas=self.areas[r], iscrowd=self.iscrowd[r], attrs={k: v[r] for k, v in self.attrs.items()})

    def on_images(self, image_ids: Iterable[int]) -> "Persons":
        """The persons of some images, with only those images in the image table."""
        ids = np.asarray(sorted({int(i) for i in image_ids}), dtype=np.int64)
        out = self.select(np.isin(self.image_ids, ids))
        out.images = self.images[self.images["id"].isin(ids)].reset_index(drop=True)
        return out

    def image_size(self) -> tuple[np.ndarray, np.ndarray]:
        """Width and height of each person's image (NaN where the image or its size is unknown)."""
        img = self.images.drop_duplicates("id").set_index("id")
        w = img["width"].reindex(self.image_ids).to_numpy(dtype=np.float64)
        h = img["height"].reindex(self.image_ids).to_numpy(dtype=np.float64)
        return w, h

    def rows_by_image(self) -> dict[int, np.ndarray]:
        """Image id -> the rows of its persons, in row order."""
        if not len(self):
            return {}
        order = np.argsort(self.image_ids, kind="stable")
        ids = self.image_ids[order]
        cuts = np.flatnonzero(np.diff(ids)) + 1
        return {int(g[0]): rows for g, rows in zip(np.split(ids, cuts), np.split(order, cuts))}

    def as_labels(self, threshold: float = 0.0, inside_image: bool = False) -> "Persons":
        """Predictions as labels: points with confidence above ``threshold`` (and, with ``inside_image``,
        within their image) become visible (v=2), the others unlabelled (v=0 at 0, 0)."""
        if not self.predicted:
            return self
        kp = self.keypoints.copy()
        keep = kp[..., 2] > threshold
        if inside_image:
            w, h = self.image_size()
            x, y = kp[..., 0], kp[..., 1]
            with np.errstate(invalid="ignore"):
                keep &= ~((x < 0) | (y < 0) | (x > w[:, None]) | (y > h[:, None]))
        kp[..., 2] = np.where(keep, 2.0, 0.0)
        kp[~keep, :2] = 0.0
        return replace(self, keypoints=kp, predicted=False)

    # COCO keypoint files ------------------------------------------------------------------------------------
    @classmethod
    def from_coco(cls, raw: Any, skeleton: Skeleton | None = None, path: str | Path | None = None,
                  attrs: Sequence[str] = ()) -> "Persons":
        """Labels from a COCO keypoint dict; ``InputError`` (naming ``path``) for the first malformed
        annotation. ``attrs``: extra annotation keys to keep as columns (e.g. ``posture``)."""
        persons, status = parse_coco(raw, skeleton, path, attrs)
        status.raise_first(persons)
        return persons

    def to_coco(self, categories: list[dict] | None = None, info: dict | None = None) -> dict[str, Any]:
        """A COCO keypoint dict: the image table and one annotation per person (labels, x = y = 0 where
        v = 0, ``num_keypoints`` counted, area from the box where unknown); ``attrs`` become keys."""
        lab = self.as_labels()
        kp = lab.keypoints.copy()
        kp[kp[..., 2] <= 0, :2] = 0.0
        area = np.where(np.isfinite(lab.areas), lab.areas, lab.boxes[:, 2] * lab.boxes[:, 3])
        flat = kp.reshape(len(lab), 3 * lab.skeleton.num_keypoints).tolist()
        boxes, nk = lab.boxes.tolist(), (kp[..., 2] > 0).sum(axis=1).tolist()
        attrs = {k: v.tolist() for k, v in lab.attrs.items()}
        known = lab.ann_ids != MISSING_ID
        ids = lab.ann_ids.copy()  # persons without an id get new ones above the known ids
        ids[~known] = lab.ann_ids[known].max(initial=0) + 1 + np.arange(int((~known).sum()))
        anns = []
        for i in range(len(lab)):
            row = flat[i]
            row[2::3] = [int(v) for v in row[2::3]]
            a = {"id": int(ids[i]), "image_id": int(lab.image_ids[i]),
                 "category_id": int(lab.category_ids[i]), "bbox": boxes[i], "area": _json_float(area[i]),
                 "iscrowd": int(lab.crowd[i]), "num_keypoints": nk[i], "keypoints": row}
            a.update({k: v[i] for k, v in attrs.items()})
            anns.append(a)
        images = [{"id": int(r.id), "file_name": r.file_name, "width": _json_number(r.width),
                   "height": _json_number(r.height)} for r in self.images.itertuples(index=False)]
        return {"info": info or {}, "images": images, "annotations": anns,
                "categories": categories or [self.skeleton.to_category()]}

    # COCO results files -------------------------------------------------------------------------------------
    @classmethod
    def from_results(cls, results: Any, skeleton: Skeleton, path: str | Path | None = None,
                     images: pd.DataFrame | None = None) -> "Persons":
        """Predictions from a COCO results list (``image_id``, ``keypoints`` as x, y, confidence, ``score``;
        optional ``category_id``, ``bbox``, ``person_box`` and ``annotation_id`` as ``predict`` writes them).

        As pycocotools' ``loadRes``: the area is the ``bbox`` area when results carry one, else unknown.
        """
        k = skeleton.num_keypoints
        if not isinstance(results, list):
            raise InputError(path, "expected a JSON list of results (image_id, keypoints, score)")
        for i, r in enumerate(results):
            if not isinstance(r, dict) or not _is_int(r.get("image_id")) or not _is_number(r.get("score")) \
                    or not isinstance(r.get("keypoints"), list) or len(r["keypoints"]) != 3 * k:
                raise InputError(path, f"result {i} needs an integer image_id, a score and {3 * k} keypoint numbers")
        n = len(results)
        kp, st = _numeric_rows([r["keypoints"] for r in results], 3 * k)
        if (st != OK).any():
            raise InputError(path, f"result {int(np.argmax(st != OK))}: keypoints are not all numbers")
        has_bbox = n > 0 and all("bbox" in r for r in results)
        box_lists = [r.get("bbox") if has_bbox else r.get("person_box") for r in results]
        boxes, bst = _numeric_rows(box_lists, 4)
        if (bst == BAD_LENGTH).any() or (bst == BAD_TYPE).any():
            raise InputError(path, f"result {int(np.argmax((bst == BAD_LENGTH) | (bst == BAD_TYPE)))}: "
                                   "its box is not 4 numbers")
        ann = [r.get("annotation_id") for r in results]
        image_ids = np.array([r["image_id"] for r in results], dtype=np.int64)
        return cls.build(
            skeleton, kp.reshape(n, k, 3), image_ids,
            ann_ids=[a if _is_int(a) else MISSING_ID for a in ann],
            category_ids=[r.get("category_id", 1) for r in results], boxes=boxes,
            scores=np.array([r["score"] for r in results], dtype=np.float64),
            areas=boxes[:, 2] * boxes[:, 3] if has_bbox else None,
            images=images if images is not None else images_table(ids=image_ids), predicted=True,
            source=str(path) if path else "<memory>")

    def to_results(self) -> list[dict[str, Any]]:
        """A COCO results list: image_id, category_id, keypoints (x, y, confidence), score, and the person box
        used (``person_box``) and source annotation id (``annotation_id``) where known."""
        trip = self.keypoints.reshape(len(self), 3 * self.skeleton.num_keypoints).tolist()
        boxes = self.boxes.tolist()
        out = []
        for i in range(len(self)):
            r: dict[str, Any] = {"image_id": int(self.image_ids[i]), "category_id": int(self.category_ids[i]),
                                 "keypoints": trip[i], "score": _json_float(self.scores[i])}
            if np.isfinite(self.boxes[i]).all():
                r["person_box"] = boxes[i]
            if self.ann_ids[i] != MISSING_ID:
                r["annotation_id"] = int(self.ann_ids[i])
            out.append(r)
        return out


def concat(parts: Sequence[Persons], skeleton: Skeleton, predicted: bool = False,
           images: pd.DataFrame | None = None) -> Persons:
    """Persons of several parts in order (their image tables joined unless ``images`` is given)."""
    parts = [p for p in parts if len(p)] or list(parts[:1])
    if not parts:
        return Persons.empty(skeleton, predicted, images)

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    imgs = images if images is not None else pd.concat([p.images for p in parts]).drop_duplicates("id") \
        .reset_index(drop=True)
    keys = set.intersection(*(set(p.attrs) for p in parts))
    return Persons(skeleton, cat("keypoints"), cat("image_ids"), cat("ann_ids"), cat("category_ids"), cat("boxes"),
                   cat("scores"), cat("areas"), cat("iscrowd"), imgs, parts[0].predicted, parts[0].source,
                   {k: np.concatenate([p.attrs[k] for p in parts]) for k in keys})


# the lenient parser -------------------------------------------------------------------------------------------
@dataclass
class ParseStatus:
    """What ``parse_coco`` could not read, per annotation row."""

    keypoints: np.ndarray  # [N] int8: OK, MISSING, BAD_LENGTH, BAD_TYPE
    boxes: np.ndarray  # [N] int8
    num_keypoints: np.ndarray  # [N] float64 as stored, NaN where missing
    category_names: tuple[str, ...] | None  # the file's own keypoint names, if any
    raw_lengths: np.ndarray  # [N] length of each 'keypoints' list (-1 when not a list)

    def raise_first(self, p: Persons) -> None:
        """``InputError`` for the first annotation ``from_coco`` cannot use."""
        k3 = 3 * p.skeleton.num_keypoints
        bad_kp = self.keypoints != OK
        nonfinite = (self.keypoints == OK) & ~np.isfinite(p.keypoints).all(axis=(1, 2))
        no_img = ~np.isin(p.image_ids, p.images["id"].to_numpy())
        bad_box = (self.boxes == BAD_LENGTH) | (self.boxes == BAD_TYPE)
        problems = [
            (bad_kp, lambda r: "has no 'keypoints' list" if self.keypoints[r] == MISSING else
             f"'keypoints' has {self.raw_lengths[r]} numbers, expected {k3}" if self.keypoints[r] == BAD_LENGTH
             else "'keypoints' is not a list of numbers"),
            (nonfinite, lambda r: "has non-finite keypoint values"),
            (p.image_ids == MISSING_ID, lambda r: "has no integer 'image_id'"),
            (no_img & (p.image_ids != MISSING_ID), lambda r: f"refers to image {p.image_ids[r]}, which is not in 'images'"),
            (bad_box, lambda r: "'bbox' is not 4 numbers [x, y, w, h]"),
        ]
        first = min(((int(np.argmax(m)), i) for i, (m, _) in enumerate(problems) if m.any()), default=None)
        if first is not None:
            r, i = first
            aid = p.ann_ids[r]
            name = f"annotation {aid}" if aid != MISSING_ID else f"annotation at index {r}"
            raise InputError(p.source, f"{name} {problems[i][1](r)} (spinetrack validate lists every problem)")


def parse_coco(raw: Any, skeleton: Skeleton | None = None, path: str | Path | None = None,
               attrs: Sequence[str] = ()) -> tuple[Persons, ParseStatus]:
    """Labels from a COCO dict without trusting it: unparseable values become NaN / ``MISSING_ID`` and a status.

    Raises ``InputError`` only when it is not a COCO keypoint dict at all, or its category names no layout.
    """
    if not isinstance(raw, dict):
        raise InputError(path, f"top level is a JSON {type(raw).__name__}, expected an object with "
                               "'images', 'annotations' and 'categories'")
    anns = raw.get("annotations")
    if not isinstance(anns, list):
        raise InputError(path, "no 'annotations' list: not a COCO keypoint file")
    names = _category_keypoint_names(raw.get("categories"))
    if skeleton is None:
        try:
            skeleton = skeleton_for_names(names)
        except ValueError as e:
            raise InputError(path, str(e)) from None
    k = skeleton.num_keypoints
    dicts = [a if isinstance(a, dict) else {} for a in anns]
    kp_lists = [a.get("keypoints") for a in dicts]
    kp, kp_status = _numeric_rows(kp_lists, 3 * k)
    boxes, box_status = _numeric_rows([a.get("bbox") for a in dicts], 4)
    images = raw.get("images") if isinstance(raw.get("images"), list) else []
    persons = Persons(
        skeleton, kp.reshape(len(dicts), k, 3), _id_column(dicts, "image_id"), _id_column(dicts, "id"),
        _id_column(dicts, "category_id"), boxes, np.full(len(dicts), np.nan), _float_column(dicts, "area"),
        _float_column(dicts, "iscrowd"), images_table(images), False, str(path) if path else "<memory>",
        {a: np.array([d.get(a) for d in dicts], dtype=object) for a in attrs})
    lengths = np.array([len(v) if isinstance(v, list) else -1 for v in kp_lists], dtype=np.int64)
    return persons, ParseStatus(kp_status, box_status, _float_column(dicts, "num_keypoints"), names, lengths)


def _category_keypoint_names(categories: Any) -> tuple[str, ...] | None:
    if not isinstance(categories, list):
        return None
    for c in categories:
        if isinstance(c, dict) and isinstance(c.get("keypoints"), list) and c["keypoints"]:
            return tuple(str(n) for n in c["keypoints"])
    return None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    return type(x) is int


def _json_float(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _json_number(x: float) -> int | float | None:
    return None if not np.isfinite(x) else int(x) if float(x).is_integer() else float(x)


def _to_float(x: Any) -> float:
    """A JSON number as float (integers too large for a float become inf); NaN for anything else."""
    if not _is_number(x):
        return np.nan
    try:
        return float(x)
    except OverflowError:
        return np.inf if x > 0 else -np.inf


def _numeric_rows(values: Sequence[Any], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``width`` numbers from a list of JSON lists; NaN rows and a status code where they are not."""
    n = len(values)
    out = np.full((n, width), np.nan)
    status = np.full(n, OK, dtype=np.int8)
    lens = np.fromiter((len(v) if isinstance(v, list) else -1 if v is None else -2 for v in values),
                       dtype=np.int64, count=n)
    status[lens >= 0] = np.where(lens[lens >= 0] == width, OK, BAD_LENGTH)
    status[lens == -1] = MISSING
    status[lens == -2] = BAD_TYPE
    rows = np.flatnonzero(lens == width)
    if len(rows) == 0:
        return out, status
    good = [values[i] for i in rows]
    try:
        arr = np.array(good)
    except (ValueError, OverflowError):
        arr = np.array([], dtype=object)
    if arr.dtype.kind in "iuf" and arr.shape == (len(rows), width):
        out[rows] = arr
        return out, status
    for i in rows:  # slow path: some row holds null, a string or a nested value
        v = values[i]
        if not all(_is_number(x) for x in v):
            status[i] = BAD_TYPE
        out[i] = [_to_float(x) for x in v]
    return out, status


def _float_column(dicts: Sequence[dict], key: str) -> np.ndarray:
    vals = [d.get(key) for d in dicts]
    if all(v is None or type(v) in (int, float) for v in vals):
        try:
            return np.array(vals, dtype=np.float64)  # None becomes NaN
        except OverflowError:
            pass
    return np.array([_to_float(v) for v in vals], dtype=np.float64)


def _id_column(dicts: Sequence[dict], key: str) -> np.ndarray:
    vals = [d.get(key) for d in dicts]
    if all(type(v) is int for v in vals):
        try:
            return np.array(vals, dtype=np.int64)
        except OverflowError:
            pass
    return np.array([v if type(v) is int and -(2**63) < v < 2**63 else MISSING_ID for v in vals], dtype=np.int64)
