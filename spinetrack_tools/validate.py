"""Schema and referential checks of a COCO keypoint file (``spinetrack validate``), vectorised."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .coco import BAD_LENGTH, BAD_TYPE, MISSING, CocoFile, load_coco
from .findings import Finding, Report, findings_from_mask, findings_per_keypoint
from .io import MISSING_ID
from .progress import progress
from .skeleton import SPINETRACK37, Skeleton, skeleton_for_names

_TOP_LEVEL = {"images": list, "annotations": list, "categories": list}
_OPTIONAL_TOP_LEVEL = {"info": dict, "licenses": list}


def validate_file(path: str | Path, skeleton: Skeleton | None = SPINETRACK37,
                  images_dir: str | Path | None = None) -> Report:
    """Load and validate a file. ``skeleton=None`` accepts whatever layout the category names."""
    ds = load_coco(path, skeleton=skeleton)  # parse with the expected layout so lengths are checked against it
    return validate(ds, expected=skeleton, images_dir=images_dir)


def validate(ds: CocoFile, expected: Skeleton | None = SPINETRACK37,
             images_dir: str | Path | None = None) -> Report:
    """All checks on a loaded file; returns one ``Report``."""
    report = Report(ds.source, stats={
        "images": len(ds.persons.images), "annotations": len(ds), "skeleton": ds.persons.skeleton.name,
    })
    for check in CHECKS:
        report.extend(check(ds, expected))
    if images_dir is not None:
        report.extend(check_image_files(ds, Path(images_dir)))
    return report


def _top_level(ds: CocoFile, expected: Skeleton | None) -> list[Finding]:
    out = []
    for key, typ in {**_TOP_LEVEL, **_OPTIONAL_TOP_LEVEL}.items():
        required = key in _TOP_LEVEL
        if key not in ds.raw:
            if required:
                out.append(_file_finding("top_level", "error", f"missing top-level key '{key}'"))
        elif not isinstance(ds.raw[key], typ):
            out.append(_file_finding("top_level", "error" if required else "warning",
                                     f"'{key}' is a {type(ds.raw[key]).__name__}, expected a {typ.__name__}"))
    for name in ("images", "annotations", "categories"):
        entries = ds.raw.get(name)
        if isinstance(entries, list):
            bad = [i for i, e in enumerate(entries) if not isinstance(e, dict)]
            if bad:
                out.append(_file_finding("top_level", "error",
                                         f"{len(bad)} entries of '{name}' are not objects (first at index {bad[0]})"))
    return out


def _categories(ds: CocoFile, expected: Skeleton | None) -> list[Finding]:
    cats = [c for c in ds.raw.get("categories") or [] if isinstance(c, dict)]
    out = []
    ids = [c.get("id") for c in cats]
    if len(set(map(repr, ids))) != len(ids):
        out.append(_file_finding("categories", "error", "duplicate category ids"))
    kp_cats = [c for c in cats if isinstance(c.get("keypoints"), list)]
    if not kp_cats:
        out.append(_file_finding("categories", "warning" if expected else "error",
                                 "no category lists keypoint names"
                                 + (f"; assuming the {expected.name} layout" if expected else "")))
    for c in kp_cats:
        try:
            skeleton_for_names(c["keypoints"], expected)
        except ValueError as e:
            out.append(_file_finding("categories", "error", f"category {c.get('id')!r}: {e}"))
        links = c.get("skeleton")
        if isinstance(links, list):
            k = len(c["keypoints"])
            if any(not (isinstance(p, list) and len(p) == 2 and all(_int_in(x, 1, k) for x in p)) for p in links):
                out.append(_file_finding("categories", "warning",
                                         f"category {c.get('id')!r}: 'skeleton' links must be pairs of 1-based "
                                         f"keypoint numbers in 1..{k}"))
    return out


def _int_in(x: Any, lo: int, hi: int) -> bool:
    return type(x) is int and lo <= x <= hi


def _images(ds: CocoFile, expected: Skeleton | None) -> list[Finding]:
    img = ds.persons.images
    ids = img["id"].to_numpy()
    out = []
    missing = ids == MISSING_ID
    for r in np.flatnonzero(missing):
        out.append(Finding("image_id", "error", None, None, f"image entry {r} has no integer 'id'"))
    dup = img["id"].duplicated(keep="first").to_numpy() & ~missing
    out += [Finding("image_id", "error", None, int(i), f"duplicate image id {int(i)}") for i in ids[dup]]
    names = img["file_name"]
    bad_name = ~names.map(lambda v: isinstance(v, str) and v != "").to_numpy(dtype=bool)
    out += findings_from_mask("image_fields", "error", bad_name, np.full(len(ids), MISSING_ID), ids,
                              "image has no 'file_name' string")
    dup_name = names.duplicated(keep="first").to_numpy() & ~bad_name
    out += findings_from_mask("image_fields", "warning", dup_name, np.full(len(ids), MISSING_ID), ids,
                              lambda r: f"file_name {names.iat[r]!r} used by more than one image")
    for col in ("width", "height"):
        v = img[col].to_numpy()
        bad = ~(np.isfinite(v) & (v > 0))
        out += findings_from_mask("image_fields", "error", bad, np.full(len(ids), MISSING_ID), ids,
                                  f"image '{col}' missing or not a positive number")
    used = np.isin(ids, ds.persons.image_ids)
    out += findings_from_mask("image_without_annotations", "info", ~used & ~missing,
                              np.full(len(ids), MISSING_ID), ids, "image has no annotations")
    return out


def _annotation_refs(ds: CocoFile, expected: Skeleton | None) -> list[Finding]:
    out = []
    p = ds.persons
    aid, iid = p.ann_ids, p.image_ids
    dup = _duplicated(aid) & (aid != MISSING_ID)
    out += findings_from_mask("annotation_id", "error", aid == MISSING_ID, aid, iid, "annotation has no integer 'id'")
    out += findings_from_mask("annotation_id", "error", dup, aid, iid, "duplicate annotation id")
    known_images = p.images["id"].to_numpy()
    no_img = ~np.isin(iid, known_images)
    out += findings_from_mask("image_ref", "error", no_img, aid, iid,
                              lambda r: "annotation has no integer 'image_id'" if iid[r] == MISSING_ID
                              else f"image_id {iid[r]} is not in 'images'")
    cats = {c.get("id"): c for c in ds.raw.get("categories") or [] if isinstance(c, dict)}
    cat_ids = np.array([c for c in cats if type(c) is int], dtype=np.int64)
    no_cat = ~np.isin(p.category_ids, cat_ids)
    out += findings_from_mask("category_ref", "error", no_cat, aid, iid,
                              lambda r: f"category_id {_id_str(p.category_ids[r])} is not in 'categories'")
    kp_cat_ids = np.array([i for i, c in cats.items() if type(i) is int and isinstance(c.get("keypoints"), list)],
                          dtype=np.int64)
    if len(kp_cat_ids):
        not_kp = ~no_cat & ~np.isin(p.category_ids, kp_cat_ids)
        out += findings_from_mask("category_ref", "warning", not_kp, aid, iid,
                                  "annotation's category has no keypoint names")
    return out


def _duplicated(a: np.ndarray) -> np.ndarray:
    """Mask of entries whose value occurred earlier in ``a``."""
    _, first = np.unique(a, return_index=True)
    mask = np.ones(len(a), dtype=bool)
    mask[first] = False
    return mask


def _keypoints(ds: CocoFile, expected: Skeleton | None) -> list[Finding]:
    p = ds.persons
    aid, iid, k3 = p.ann_ids, p.image_ids, 3 * p.skeleton.num_keypoints
    st = ds.status.keypoints
    out = findings_from_mask("keypoints_shape", "error", st == MISSING, aid, iid, "annotation has no 'keypoints' list")
    out += findings_from_mask("keypoints_shape", "error", st == BAD_LENGTH, aid, iid,
                              lambda r: f"'keypoints' has {ds.status.raw_lengths[r]} numbers, "
                                        f"expected {k3} ({k3 // 3} x 3)")
    out += findings_from_mask("keypoints_type", "error", st == BAD_TYPE, aid, iid,
                              "'keypoints' is not a list of numbers")
    kp = p.keypoints
    parsed = st == 0
    nonfinite = ~np.isfinite(kp).all(axis=2) & parsed[:, None]
    out += _kp_findings("keypoints_nonfinite", "error", nonfinite, ds, "non-finite keypoint values (NaN/Infinity)")
    v = kp[..., 2]
    bad_v = np.isfinite(v) & ~np.isin(v, (0, 1, 2))
    out += _kp_findings("visibility_value", "error", bad_v, ds, "visibility not in {0, 1, 2}")
    zero_v_coords = (v == 0) & ((kp[..., 0] != 0) | (kp[..., 1] != 0)) & np.isfinite(kp[..., :2]).all(axis=2)
    out += _kp_findings("unlabelled_with_coordinates", "warning", zero_v_coords, ds,
                         "v=0 keypoints with non-zero coordinates (COCO expects x=y=0)")
    counted = (v > 0).sum(axis=1)
    nk = ds.status.num_keypoints
    missing_nk = np.isnan(nk)
    wrong_nk = ~missing_nk & (nk != counted) & parsed
    out += findings_from_mask("num_keypoints", "error", missing_nk, aid, iid, "'num_keypoints' missing")
    out += findings_from_mask("num_keypoints", "error", wrong_nk, aid, iid,
                              lambda r: f"num_keypoints is {_fmt(nk[r])} but {counted[r]} keypoints have v>0",
                              values={"num_keypoints": nk, "labelled": counted})
    return out


def _kp_findings(check: str, severity: str, mask: np.ndarray, ds: CocoFile, what: str) -> list[Finding]:
    p = ds.persons
    return findings_per_keypoint(check, severity, mask, p.ann_ids, p.image_ids, p.skeleton.names, what)


def _id_str(i: int) -> str:
    return "missing" if i == MISSING_ID else str(i)


def _fmt(x: float) -> str:
    return str(int(x)) if np.isfinite(x) and x == int(x) else str(x)


def _boxes(ds: CocoFile, expected: Skeleton | None) -> list[Finding]:
    p = ds.persons
    aid, iid, st = p.ann_ids, p.image_ids, ds.status.boxes
    out = findings_from_mask("bbox", "error", st == MISSING, aid, iid, "annotation has no 'bbox'")
    out += findings_from_mask("bbox", "error", (st == BAD_LENGTH) | (st == BAD_TYPE), aid, iid,
                              "'bbox' is not a list of 4 numbers [x, y, w, h]")
    b = p.boxes
    finite = np.isfinite(b).all(axis=1)
    out += findings_from_mask("bbox", "error", (st == 0) & ~finite, aid, iid, "'bbox' has non-finite values")
    x, y, w, h = b.T
    with np.errstate(invalid="ignore"):
        nonpos = finite & ((w <= 0) | (h <= 0))
        out += findings_from_mask("bbox", "error", nonpos, aid, iid,
                                  lambda r: f"bbox has non-positive size w={_fmt(w[r])} h={_fmt(h[r])}")
        iw, ih = p.image_size()
        known = finite & np.isfinite(iw) & np.isfinite(ih) & ~nonpos
        tol = 1.0  # pixels: exporters round box corners
        disjoint = known & ((x >= iw) | (y >= ih) | (x + w <= 0) | (y + h <= 0))
        partial = known & ~disjoint & ((x < -tol) | (y < -tol) | (x + w > iw + tol) | (y + h > ih + tol))
    out += findings_from_mask("bbox_outside_image", "error", disjoint, aid, iid, "bbox lies entirely outside the image")
    out += findings_from_mask("bbox_outside_image", "warning", partial, aid, iid,
                              "bbox extends beyond the image border")
    return out


def _scalars(ds: CocoFile, expected: Skeleton | None) -> list[Finding]:
    p = ds.persons
    aid, iid = p.ann_ids, p.image_ids
    area = p.areas
    out = findings_from_mask("area", "error", np.isnan(area), aid, iid,
                             "'area' missing (the OKS metric needs it)")
    with np.errstate(invalid="ignore"):
        out += findings_from_mask("area", "error", ~np.isnan(area) & ~(np.isfinite(area) & (area > 0)), aid, iid,
                                  lambda r: f"'area' is {_fmt(area[r])}, expected a positive number")
    crowd = p.iscrowd
    out += findings_from_mask("iscrowd", "warning", np.isnan(crowd), aid, iid, "'iscrowd' missing (assumed 0)")
    out += findings_from_mask("iscrowd", "error", ~np.isnan(crowd) & ~np.isin(crowd, (0, 1)), aid, iid,
                              lambda r: f"'iscrowd' is {_fmt(crowd[r])}, expected 0 or 1")
    return out


def check_image_files(ds: CocoFile, images_dir: Path, workers: int = 8) -> list[Finding]:
    """Missing or unreadable image files, and sizes that disagree with the file's width/height."""
    if not images_dir.is_dir():
        return [_file_finding("image_file", "error", f"images folder {images_dir} does not exist")]
    img = ds.persons.images
    rows = [r for r in img.itertuples(index=False) if isinstance(r.file_name, str) and r.file_name]

    def probe(r: Any) -> Finding | None:
        return _probe_image(images_dir, r.id, r.file_name, r.width, r.height)

    out: list[Finding] = []
    with ThreadPoolExecutor(workers) as pool:
        for f in progress(pool.map(probe, rows), total=len(rows), description="reading image headers"):
            if f is not None:
                out.append(f)
    return out


def _probe_image(root: Path, image_id: int, file_name: str, width: float, height: float) -> Finding | None:
    from PIL import Image, UnidentifiedImageError

    p = (root / file_name)
    iid = None if image_id == MISSING_ID else int(image_id)
    if not p.resolve().is_relative_to(root.resolve()):
        return Finding("image_file", "error", None, iid, f"file_name {file_name!r} points outside {root}")
    try:
        with Image.open(p) as im:
            w, h = im.size
            im.verify()
    except FileNotFoundError:
        return Finding("image_file", "error", None, iid, f"image file {p} not found")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return Finding("image_file", "error", None, iid, f"image file {p} unreadable: {e}")
    if (w, h) != (width, height):
        return Finding("image_size", "error", None, iid,
                       f"{p.name} is {w}x{h} but the file says {_fmt(width)}x{_fmt(height)}",
                       values={"actual_width": w, "actual_height": h})
    return None


def _file_finding(check: str, severity: str, message: str) -> Finding:
    return Finding(check, severity, None, None, message)


CHECKS = (_top_level, _categories, _images, _annotation_refs, _keypoints, _boxes, _scalars)
