"""The one module that talks to FiftyOne: a persistent dataset of labels, predictions and findings.

One sample per image. Ground truth as ``gt_keypoints`` (``fo.Keypoint`` per person, v=0 points NaN, the
COCO visibility kept in ``visible``) and ``gt_boxes``; each prediction file as ``pred_<name>`` with
per-point confidences and the OKS against its ground-truth person; findings of validate / flag /
validate-biomech reports as sample tags (``<check>``) and as a ``findings`` list on the person's labels.
FiftyOne's own configuration (``FIFTYONE_DATABASE_URI``, ``FIFTYONE_DATABASE_DIR``, ...) is honoured,
so ``fiftyone`` commands and Python sessions see the same datasets.
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .coco import CocoKeypoints
from .evaluate import oks
from .io import InputError, load_json
from .progress import progress
from .skeleton import Skeleton

SAVED_VIEWS = ("flagged", "failed-biomech", "worst-oks")


def dataset_name(path: Path) -> str:
    return "spinetrack-" + re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem).strip("-")


def _fo() -> Any:
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")  # no analytics prompt or calls home
    try:
        import fiftyone as fo
    except ImportError:
        raise InputError(None, "FiftyOne is not installed: pip install 'spinetrack-tools[fiftyone]'") from None
    return fo


def skeleton_edges(sk: Skeleton) -> list[list[int]]:
    """Skeleton links as polylines, the spine chain as one."""
    chain = sk.spine_chain
    in_chain = set(zip(chain, chain[1:])) | set(zip(chain[1:], chain))
    return ([list(chain)] if len(chain) > 1 else []) + [[a, b] for a, b in sk.links if (a, b) not in in_chain]


def build(ds: CocoKeypoints, images_dir: Path, predictions: Sequence[Path] = (), reports: Sequence[Path] = (),
          name: str | None = None, sample_fields: dict[int, dict[str, Any]] | None = None,
          echo: Callable[[str], None] = print) -> Any:
    """Create (or rebuild) the persistent dataset and its saved views; returns the ``fo.Dataset``."""
    fo = _fo()
    sk = ds.skeleton
    name = name or dataset_name(ds.path or Path("dataset"))
    findings = _findings_by_annotation(reports)
    preds = {_pred_field(p): (p, load_json(p)) for p in predictions}
    by_image: dict[int, list[int]] = defaultdict(list)
    for row, iid in enumerate(ds.image_ids.tolist()):
        by_image[iid].append(row)
    pred_rows = {f: _group(res) for f, (_, res) in preds.items()}
    samples = []
    images = ds.images.drop_duplicates("id")
    for im in progress(images.itertuples(index=False), total=len(images), description="building samples"):
        iid = int(im.id)
        W, H = float(im.width), float(im.height)
        s = fo.Sample(filepath=str((images_dir / str(im.file_name)).resolve()),
                      metadata=fo.ImageMetadata(width=int(W), height=int(H)), coco_id=iid)
        rows = by_image.get(iid, [])
        kps, dets, tags = [], [], set()
        for r in rows:
            aid = int(ds.ann_ids[r])
            f = findings.get(aid, [])
            tags.update(c for c, _ in f)
            attrs = {"coco_id": aid, "findings": sorted({c for c, _ in f}),
                     "severity": "error" if any(sev == "error" for _, sev in f) else ("warning" if f else "")}
            kp = ds.keypoints[r]
            kps.append(fo.Keypoint(label="person", points=_points(kp, W, H), visible=kp[:, 2].astype(int).tolist(),
                                   **attrs))
            x, y, w, h = ds.boxes[r]
            if np.isfinite(ds.boxes[r]).all():
                dets.append(fo.Detection(label="person", bounding_box=[x / W, y / H, w / W, h / H], **attrs))
        tags.update(c for c, _ in findings.get(("image", iid), []))
        s["gt_keypoints"] = fo.Keypoints(keypoints=kps)
        s["gt_boxes"] = fo.Detections(detections=dets)
        s.tags = sorted(tags)
        for field, groups in pred_rows.items():
            pk, worst = _prediction_labels(fo, groups.get(iid, []), ds, rows, W, H, sk)
            s[field] = fo.Keypoints(keypoints=pk)
            s[f"{field}_min_oks"] = worst
        for k, v in (sample_fields or {}).get(iid, {}).items():
            s[k] = v
        samples.append(s)
    if name in fo.list_datasets():
        fo.load_dataset(name).delete()
    dataset = fo.Dataset(name, persistent=True)
    dataset.add_samples(samples, progress=False, validate=False)  # the labels were built by us, typed
    dataset.default_skeleton = fo.KeypointSkeleton(labels=list(sk.names), edges=skeleton_edges(sk))
    dataset.info = {"source": ds.source, "skeleton": sk.name, "predictions": [str(p) for p, _ in preds.values()],
                    "reports": [str(r) for r in reports]}
    dataset.save()
    _saved_views(fo, dataset, list(preds))
    echo(f"FiftyOne dataset {name!r}: {len(dataset)} images, {len(ds)} persons, "
         f"{len(dataset.match_tags(dataset.distinct('tags')))} flagged images")
    return dataset


def _points(kp: np.ndarray, W: float, H: float) -> list[tuple[float, float]]:
    return [(float(x) / W, float(y) / H) if v > 0 else (math.nan, math.nan) for x, y, v in kp]


def _pred_field(path: Path) -> str:
    return "pred_" + re.sub(r"[^A-Za-z0-9_]+", "_", path.stem).strip("_")


def _group(results: Any) -> dict[int, list[dict]]:
    if not isinstance(results, list):
        raise InputError(None, "a predictions file is not a JSON list of results")
    out: dict[int, list[dict]] = defaultdict(list)
    for r in results:
        out[int(r["image_id"])].append(r)
    return out


def _prediction_labels(fo: Any, results: list[dict], ds: CocoKeypoints, gt_rows: list[int], W: float, H: float,
                       sk: Skeleton) -> tuple[list[Any], float | None]:
    """Predicted persons with per-point confidence and the OKS against their ground-truth person (by
    annotation id when the prediction carries one, else the best OKS in the image)."""
    labels, scores = [], []
    gt = {int(ds.ann_ids[r]): r for r in gt_rows}
    for res in results:
        kp = np.asarray(res["keypoints"], dtype=float).reshape(-1, 3)
        best = None
        rows = [gt[res["annotation_id"]]] if res.get("annotation_id") in gt else list(gt.values())
        for r in rows:
            area = ds.areas[r] if np.isfinite(ds.areas[r]) else ds.boxes[r, 2] * ds.boxes[r, 3]
            o = oks(ds.keypoints[r][None], kp[None], np.array([area]), sk.sigmas)[0]
            if np.isfinite(o) and (best is None or o > best[0]):
                best = (float(o), int(ds.ann_ids[r]))
        pts = [(float(x) / W, float(y) / H) if c > 0 else (math.nan, math.nan) for x, y, c in kp]
        labels.append(fo.Keypoint(label="person", points=pts, confidence=kp[:, 2].tolist(),
                                  oks=best[0] if best else None, gt_id=best[1] if best else None,
                                  score=float(res.get("score", 0.0))))
        if best:
            scores.append(best[0])
    return labels, (min(scores) if scores else None)


def _findings_by_annotation(reports: Sequence[Path]) -> dict[Any, list[tuple[str, str]]]:
    out: dict[Any, list[tuple[str, str]]] = defaultdict(list)
    for path in reports:
        data = load_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
            raise InputError(path, "not a spinetrack report ({'summary': ..., 'findings': [...]})")
        for f in data["findings"]:
            if f.get("severity") == "info":
                continue
            key = f["annotation_id"] if f.get("annotation_id") is not None else ("image", f.get("image_id"))
            out[key].append((str(f["check"]), str(f["severity"])))
    return out


def _saved_views(fo: Any, dataset: Any, pred_fields: list[str]) -> None:
    from fiftyone import ViewField as F

    tags = dataset.distinct("tags")
    dataset.save_view("flagged", dataset.match_tags(tags) if tags else dataset.limit(0), overwrite=True)
    bio = [t for t in tags if t.startswith("biomech_")]
    dataset.save_view("failed-biomech", dataset.match_tags(bio) if bio else dataset.limit(0), overwrite=True)
    if pred_fields:
        f = f"{pred_fields[0]}_min_oks"
        dataset.save_view("worst-oks", dataset.exists(f).sort_by(F(f)), overwrite=True)
    if dataset.has_sample_field("al_round"):
        for r in sorted(x for x in dataset.distinct("al_round") if x is not None):
            dataset.save_view(f"round-{r}", dataset.match(F("al_round") == r), overwrite=True)


def launch(name: str, port: int = 5151, wait: bool = True) -> Any:
    """Serve the FiftyOne App for a dataset on 127.0.0.1 (``wait`` blocks until interrupted)."""
    fo = _fo()
    session = fo.launch_app(fo.load_dataset(name), remote=True, address="127.0.0.1", port=port, auto=False)
    if wait:
        session.wait(-1)
    return session
