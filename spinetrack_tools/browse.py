"""The one module that talks to FiftyOne: a persistent dataset of labels, predictions and findings.

One sample per image. Ground truth as ``gt_keypoints`` (``fo.Keypoint`` per person, v=0 points NaN, the
COCO visibility kept in ``visible``) and ``gt_boxes``; each prediction file as ``pred_<name>`` with
per-point confidences and the OKS against its ground-truth person; findings of validate / flag /
validate-biomech reports as sample tags (``<check>``) and as a ``findings`` list on the person's labels.
The samples are written in bulk as the documents FiftyOne stores (as its own importers do), not through
``fo.Sample`` / ``fo.Keypoint`` objects: a mongoengine document per label took minutes for 60k persons.
FiftyOne's own configuration (``FIFTYONE_DATABASE_URI``, ``FIFTYONE_DATABASE_DIR``, ...) is honoured,
so ``fiftyone`` commands and Python sessions see the same datasets; ``use_database`` points it at a MongoDB
server of the user's (FiftyOne then starts no mongod of its own).
"""

from __future__ import annotations

import os
import re
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from .coco import read_results
from .evaluate import oks
from .gcpause import gc_paused
from .io import InputError, load_json
from .persons import Persons
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


def use_database(uri: str, timeout_s: float = 5.0) -> None:
    """Keep the datasets in the MongoDB server at ``uri`` (``mongodb://HOST:PORT``, as ``FIFTYONE_DATABASE_URI``);
    checks that it answers, so that a wrong address is one clear error rather than FiftyOne's retries."""
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise InputError(None, f"not a MongoDB URI (mongodb://HOST:PORT): {uri}")
    import pymongo  # comes with fiftyone
    from pymongo.errors import PyMongoError

    try:
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=int(timeout_s * 1000)) as client:
            client.admin.command("ping")
    except (PyMongoError, ValueError) as e:
        raise InputError(None, f"cannot reach MongoDB at {uri}: {str(e).split(',')[0]}") from None
    os.environ["FIFTYONE_DATABASE_URI"] = uri  # also for the App's server process
    if "fiftyone" in sys.modules:  # already configured in this process
        sys.modules["fiftyone"].config.database_uri = uri


def skeleton_edges(sk: Skeleton) -> list[list[int]]:
    """Skeleton links as polylines, the spine chain as one."""
    chain = sk.spine_chain
    in_chain = set(zip(chain, chain[1:])) | set(zip(chain[1:], chain))
    return ([list(chain)] if len(chain) > 1 else []) + [[a, b] for a, b in sk.links if (a, b) not in in_chain]


def build(ds: Persons, images_dir: Path, predictions: Sequence[Path] = (), reports: Sequence[Path] = (),
          name: str | None = None, sample_fields: dict[int, dict[str, Any]] | None = None,
          echo: Callable[[str], None] = print) -> Any:
    """Create (or rebuild) the persistent dataset and its saved views; returns the ``fo.Dataset``.

    ``sample_fields``: extra top-level fields per image id, plain values (int, float, str, ...).
    """
    fo = _fo()
    import fiftyone.core.odm as foo

    sk = ds.skeleton
    name = name or dataset_name(Path(ds.source if ds.source != "<memory>" else "dataset"))
    findings = _findings_by_annotation(reports)
    pred_paths = {_pred_field(p): p for p in predictions}
    preds = {f: _prediction_labels(read_results(p, ds.skeleton), ds) for f, p in pred_paths.items()}
    images = ds.images.drop_duplicates("id")
    extra = sample_fields or {}
    # a value per field, from which FiftyOne infers its type (as add_samples does from the first non-None one)
    schema: dict[str, Any] = {"coco_id": 0, "gt_keypoints": fo.Keypoints(), "gt_boxes": fo.Detections()}
    for field in preds:
        schema.update({field: fo.Keypoints(), f"{field}_min_oks": 0.0})
    for iid in images["id"].tolist():
        schema.update({k: v for k, v in extra.get(int(iid), {}).items() if v is not None and k not in schema})
    if name in fo.list_datasets():
        fo.load_dataset(name).delete()
    dataset = fo.Dataset(name, persistent=True)
    dataset.media_type = "image"  # metadata typed fo.ImageMetadata
    for field, value in schema.items():
        if not dataset.has_sample_field(field):  # filepath, tags, metadata are built in
            dataset.add_sample_field(field, **foo.get_implied_field_kwargs(value))
    docs = _sample_docs(images, images_dir, _gt_labels(ds, findings), preds, extra)
    try:
        _insert_samples(dataset, progress(docs, total=len(images), description="adding samples"))
    except BaseException:
        dataset.delete()  # rather than leave a half-built one
        raise
    dataset.default_skeleton = fo.KeypointSkeleton(labels=list(sk.names), edges=skeleton_edges(sk))
    dataset.info = {"source": ds.source, "skeleton": sk.name, "predictions": [str(p) for p in pred_paths.values()],
                    "reports": [str(r) for r in reports]}
    dataset.save()
    _saved_views(fo, dataset, list(preds))
    echo(f"FiftyOne dataset {name!r}: {len(dataset)} images, {len(ds)} persons, "
         f"{len(dataset.match_tags(dataset.distinct('tags')))} flagged images")
    return dataset


_GtLabels = Callable[[int], tuple[list[dict], list[dict], set[str]]]  # image id -> keypoints, boxes, tags
_PredLabels = Callable[[int], tuple[list[dict], float | None]]  # image id -> keypoints, lowest OKS


def _sample_docs(images: pd.DataFrame, images_dir: Path, gt: _GtLabels, preds: dict[str, _PredLabels],
                 extra: dict[int, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One sample per image, as ``fo.Sample(...).to_mongo_dict()`` would give it (without the keys that
    ``_insert_samples`` adds)."""
    for im in images.itertuples(index=False):
        iid = int(im.id)
        kps, dets, tags = gt(iid)
        doc = {"filepath": str((images_dir / str(im.file_name)).resolve()), "tags": sorted(tags),
               "metadata": {"_cls": "ImageMetadata", "width": int(im.width), "height": int(im.height)},
               "coco_id": iid, "gt_keypoints": {"_cls": "Keypoints", "keypoints": kps},
               "gt_boxes": {"_cls": "Detections", "detections": dets}}
        for field, labels in preds.items():
            pk, worst = labels(iid)
            doc.update({field: {"_cls": "Keypoints", "keypoints": pk}, f"{field}_min_oks": worst})
        doc.update(extra.get(iid, {}))
        yield {k: v for k, v in doc.items() if v is not None}  # None and missing are the same to FiftyOne


def _label(cls: str, **fields: Any) -> dict[str, Any]:
    """A person label as FiftyOne stores an ``fo.<cls>(label="person", **fields)``."""
    from bson import ObjectId  # comes with fiftyone

    return {"_id": ObjectId(), "_cls": cls, "attributes": {}, "tags": [], "label": "person", **fields}


def _normalised(kp: np.ndarray, W: np.ndarray, H: np.ndarray) -> np.ndarray:
    """[N, K, 2] points of [N, K, 3] keypoints in image fractions, NaN where v (or confidence) is not > 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = kp[..., :2] / np.stack([W, H], axis=-1)[:, None, :]
    return np.where(kp[..., 2:] > 0, xy, np.nan)


def _gt_labels(ds: Persons, findings: dict[Any, list[tuple[str, str]]]) -> _GtLabels:
    """By image id: its persons' keypoint and box labels, and the checks they or the image failed (its tags)."""
    W, H = ds.image_size()
    points = _normalised(ds.keypoints, W, H)
    with np.errstate(divide="ignore", invalid="ignore"):
        visible = ds.keypoints[..., 2].astype(int)
        boxes = ds.boxes / np.stack([W, H, W, H], axis=1)
    has_box = np.isfinite(ds.boxes).all(axis=1).tolist()
    ann_ids, rows = ds.ann_ids.tolist(), ds.rows_by_image()

    def labels(iid: int) -> tuple[list[dict], list[dict], set[str]]:
        kps, dets, tags = [], [], {c for c, _ in findings.get(("image", iid), [])}
        for r in rows.get(iid, []):
            f = findings.get(ann_ids[r], [])
            checks = sorted({c for c, _ in f})
            tags.update(checks)
            attrs = {"coco_id": ann_ids[r], "findings": checks,
                     "severity": "error" if any(sev == "error" for _, sev in f) else ("warning" if f else "")}
            kps.append(_label("Keypoint", points=points[r].tolist(), confidence=None,
                              visible=visible[r].tolist(), **attrs))
            if has_box[r]:
                dets.append(_label("Detection", bounding_box=boxes[r].tolist(), **attrs))
        return kps, dets, tags

    return labels


def _pred_field(path: Path) -> str:
    return "pred_" + re.sub(r"[^A-Za-z0-9_]+", "_", path.stem).strip("_")


def _prediction_labels(pred: Persons, ds: Persons) -> _PredLabels:
    """By image id: its predicted persons, with per-point confidence and the OKS against their ground-truth
    person (by annotation id when the prediction carries one, else the best OKS in the image), and the
    lowest of these OKS."""
    kp = pred.keypoints
    image_ids = pred.image_ids.tolist()
    scores = pred.scores.tolist()
    pred_ann = pred.ann_ids.tolist()
    gt: dict[int, dict[int, int]] = defaultdict(dict)  # image id -> annotation id -> row
    for row, (iid, aid) in enumerate(zip(ds.image_ids.tolist(), ds.ann_ids.tolist())):
        gt[iid][aid] = row
    pairs = []  # (prediction, candidate ground-truth row), in prediction order
    for p, (aid, iid) in enumerate(zip(pred_ann, image_ids)):
        cand = gt.get(iid, {})
        pairs += [(p, cand[aid])] if aid in cand else [(p, r) for r in cand.values()]
    pair_p, pair_r = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
    areas = np.where(np.isfinite(ds.areas), ds.areas, ds.boxes[:, 2] * ds.boxes[:, 3])
    o = oks(ds.keypoints[pair_r], kp[pair_p], areas[pair_r], ds.skeleton.sigmas)
    # each prediction's first best finite OKS: stable sort by prediction, then by descending OKS
    order = np.lexsort((np.where(np.isfinite(o), -o, np.inf), pair_p))
    best = order[np.unique(pair_p[order], return_index=True)[1]]
    best = best[np.isfinite(o[best])]
    best_oks = dict(zip(pair_p[best].tolist(), o[best].tolist()))
    gt_ids = dict(zip(pair_p[best].tolist(), ds.ann_ids[pair_r[best]].tolist()))
    sizes = ds.images.drop_duplicates("id").set_index("id")[["width", "height"]].astype(float).reindex(image_ids)
    points = _normalised(kp, sizes["width"].to_numpy(), sizes["height"].to_numpy())
    confidence, rows = kp[..., 2], pred.rows_by_image()

    def labels(iid: int) -> tuple[list[dict], float | None]:
        ps = rows.get(iid, [])
        kps = [_label("Keypoint", points=points[p].tolist(), confidence=confidence[p].tolist(),
                      oks=best_oks.get(p), gt_id=gt_ids.get(p), score=scores[p]) for p in ps]
        return kps, min((best_oks[p] for p in ps if p in best_oks), default=None)

    return labels


def _insert_samples(dataset: Any, docs: Iterable[dict[str, Any]]) -> None:
    """Bulk-insert sample documents, as FiftyOne's own importers do: ``add_samples`` builds and validates a
    mongoengine document per label, 10-40x slower.

    Private FiftyOne 1.x API, kept to this function: the sample collection, the dataset's id and the
    ``_rand`` value that random sampling (``take``) orders by.
    """
    import fiftyone.core.odm as foo
    from fiftyone.core.odm.sample import _generate_rand

    now, dataset_id = datetime.now(UTC), dataset._doc.id
    stamped = (d | {"created_at": now, "last_modified_at": now, "_media_type": "image", "_rand": _generate_rand(),
                    "_dataset_id": dataset_id} for d in docs)
    with gc_paused():  # labels are millions of small lists: not rescanned by the collector (5-10x)
        foo.insert_documents(stamped, dataset._sample_collection, progress=False)


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
