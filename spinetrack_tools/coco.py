"""COCO keypoint files: the raw dict on disk, numpy arrays in memory.

``load_coco`` never trusts the file: malformed entries become NaN / ``MISSING_ID`` in the arrays and a
per-annotation status, so ``validate`` can report them instead of the loader crashing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .io import MISSING_ID, InputError, load_json, save_json
from .skeleton import SPINETRACK37, Skeleton, skeleton_for_names

# Status codes of a parsed list field (``keypoints``, ``bbox``).
OK, MISSING, BAD_LENGTH, BAD_TYPE = 0, 1, 2, 3


@dataclass
class CocoKeypoints:
    """A COCO keypoint file as arrays (one row per entry of ``raw["annotations"]``) plus the raw dict."""

    raw: dict[str, Any]
    skeleton: Skeleton
    path: Path | None
    ann_ids: np.ndarray  # [N] int64, MISSING_ID where absent or not an integer
    image_ids: np.ndarray  # [N] int64
    category_ids: np.ndarray  # [N] int64
    keypoints: np.ndarray  # [N, K, 3] float64 (x, y, v); NaN where unparseable
    keypoints_status: np.ndarray  # [N] int8: OK, MISSING, BAD_LENGTH, BAD_TYPE
    boxes: np.ndarray  # [N, 4] float64 xywh; NaN where unparseable
    boxes_status: np.ndarray  # [N] int8
    areas: np.ndarray  # [N] float64, NaN where missing
    iscrowd: np.ndarray  # [N] float64, NaN where missing
    num_keypoints: np.ndarray  # [N] float64, NaN where missing
    images: pd.DataFrame = field(repr=False)  # id, file_name, width, height in file order
    category_names: tuple[str, ...] | None = None  # the file's own keypoint names, if any

    def __len__(self) -> int:
        return len(self.ann_ids)

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "<memory>"

    @property
    def annotations(self) -> list[Any]:
        return self.raw.get("annotations") or []

    def image_size(self) -> tuple[np.ndarray, np.ndarray]:
        """Width and height of each annotation's image (NaN where the image is unknown)."""
        img = self.images.drop_duplicates("id").set_index("id")
        w = img["width"].reindex(self.image_ids).to_numpy(dtype=np.float64)
        h = img["height"].reindex(self.image_ids).to_numpy(dtype=np.float64)
        return w, h

    def labelled(self) -> np.ndarray:
        """[N, K] mask of keypoints with v > 0."""
        return self.keypoints[..., 2] > 0

    def subset_dict(self, keep: np.ndarray) -> dict[str, Any]:
        """The raw dict with only the annotations where ``keep`` is true (other keys shared, not copied)."""
        anns = self.annotations
        out = dict(self.raw)
        out["annotations"] = [a for a, k in zip(anns, keep) if k]
        return out


def load_coco(path: str | Path, skeleton: Skeleton | None = None) -> CocoKeypoints:
    """Load a COCO keypoint file. Raises ``InputError`` when it is not a COCO-shaped JSON object."""
    path = Path(path)
    return from_dict(load_json(path), skeleton=skeleton, path=path)


def save_coco(path: str | Path, data: dict[str, Any]) -> None:
    """Write a COCO dict atomically (non-finite numbers become null)."""
    save_json(path, data)


def from_dict(raw: Any, skeleton: Skeleton | None = None, path: Path | None = None) -> CocoKeypoints:
    """Arrays from a COCO dict. The skeleton comes from the keypoint category unless one is given."""
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
    kp, kp_status = _numeric_rows([a.get("keypoints") for a in dicts], 3 * k)
    boxes, box_status = _numeric_rows([a.get("bbox") for a in dicts], 4)
    images = raw.get("images") if isinstance(raw.get("images"), list) else []
    img_dicts = [i if isinstance(i, dict) else {} for i in images]
    return CocoKeypoints(
        raw=raw,
        skeleton=skeleton,
        path=path,
        ann_ids=_id_column(dicts, "id"),
        image_ids=_id_column(dicts, "image_id"),
        category_ids=_id_column(dicts, "category_id"),
        keypoints=kp.reshape(len(dicts), k, 3),
        keypoints_status=kp_status,
        boxes=boxes,
        boxes_status=box_status,
        areas=_float_column(dicts, "area"),
        iscrowd=_float_column(dicts, "iscrowd"),
        num_keypoints=_float_column(dicts, "num_keypoints"),
        images=pd.DataFrame({
            "id": _id_column(img_dicts, "id"),
            "file_name": [i.get("file_name") for i in img_dicts],
            "width": _float_column(img_dicts, "width"),
            "height": _float_column(img_dicts, "height"),
        }),
        category_names=names,
    )


def _category_keypoint_names(categories: Any) -> tuple[str, ...] | None:
    if not isinstance(categories, list):
        return None
    for c in categories:
        if isinstance(c, dict) and isinstance(c.get("keypoints"), list) and c["keypoints"]:
            return tuple(str(n) for n in c["keypoints"])
    return None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


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
    arr = np.array(good)
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


def empty_coco(skeleton: Skeleton = SPINETRACK37) -> dict[str, Any]:
    """A COCO dict with no images or annotations and the skeleton's person category."""
    return {"info": {}, "images": [], "annotations": [], "categories": [skeleton.to_category()]}
