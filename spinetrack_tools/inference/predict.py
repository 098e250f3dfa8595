"""Batch pre-annotation: person boxes (from a COCO file or a detector) -> keypoints, as COCO results.

Images are read (BGR, as ``cv2.imread``), cropped and normalised by worker threads, one image per thread,
between network runs; crops of several images share a batch.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from ..io import MISSING_ID, InputError
from ..persons import Persons, concat, images_table
from ..pool import image_ids, list_images
from ..progress import progress
from ..skeleton import Skeleton, skeleton_for_count
from . import transforms as T
from .model import PersonDetector, PoseModel


def instance_scores(confidences: np.ndarray, box_scores: np.ndarray, thr: float = 0.2) -> np.ndarray:
    """The SpineTrack metric's instance score: box score x mean of the keypoint scores above ``thr``."""
    above = confidences > thr
    n = above.sum(axis=1)
    mean = np.where(n > 0, (confidences * above).sum(axis=1) / np.maximum(n, 1), 0.0)
    return box_scores * mean


@dataclass
class _Job:
    """One image to predict: its id and file, and the boxes to use (none: the detector finds them)."""

    image_id: int
    file_name: str
    category_ids: np.ndarray
    source_ids: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray


def jobs_from_coco(persons: Persons, images_dir: Path) -> list[tuple[Path, _Job]]:
    """One job per image that has non-crowd boxes (with their annotation ids)."""
    p = persons
    ok = np.isfinite(p.boxes).all(axis=1) & (p.boxes[:, 2] > 0) & (p.boxes[:, 3] > 0) & ~p.crowd
    names = dict(zip(p.images["id"].tolist(), p.images["file_name"].tolist()))
    out = []
    for iid, rows in p.rows_by_image().items():
        rows = rows[ok[rows]]
        if not len(rows):
            continue
        if iid not in names:
            raise InputError(p.source, f"annotation {int(p.ann_ids[rows[0]])} refers to image {iid}, "
                                       "which is not in 'images'")
        out.append((images_dir / str(names[iid]), _Job(iid, str(names[iid]), p.category_ids[rows], p.ann_ids[rows],
                                                       p.boxes[rows], np.ones(len(rows)))))
    return out


def jobs_from_folder(images_dir: Path) -> list[tuple[Path, _Job]]:
    """Every image in a folder, for a detector; ids as ``pool.image_ids`` gives them."""
    files = list_images(images_dir)
    return jobs_for_images([(i, p, p.name) for i, p in zip(image_ids(files), files)])


def jobs_from_images(coco: dict[str, Any], images_dir: Path) -> list[tuple[Path, _Job]]:
    """Every image of a COCO dict (e.g. ``pool.pool_coco``'s, no boxes needed), for a detector."""
    return jobs_for_images([(int(im["id"]), images_dir / str(im["file_name"]), str(im["file_name"]))
                            for im in coco["images"]])


def jobs_for_images(images: list[tuple[int, Path, str]]) -> list[tuple[Path, _Job]]:
    """One box-less job per (image id, file, file name): the detector gives each image its persons."""
    return [(p, _Job(iid, name, np.zeros(0, int), np.zeros(0, int), np.zeros((0, 4)), np.zeros(0)))
            for iid, p, name in images]


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(path, "missing or unreadable image")
    return img


def _prepare(path: Path, job: _Job, model: PoseModel, detector: PersonDetector | None, rgb: bool,
             flip: bool) -> tuple[_Job, tuple[int, int], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read, detect, crop and normalise one image: (job, image size, network input, centres, scales, widths)."""
    img = _read(path)
    if detector is not None:
        boxes, scores = detector(img)
        job = _Job(job.image_id, job.file_name, np.ones(len(boxes), int), np.full(len(boxes), MISSING_ID), boxes,
                   scores)
    boxes = job.boxes
    if flip:  # mirror the image and the boxes; the keypoints are mirrored back after decoding
        img = np.ascontiguousarray(img[:, ::-1])
        boxes = boxes.copy()
        boxes[:, 0] = img.shape[1] - boxes[:, 0] - boxes[:, 2]
    center, scale = T.box_center_scale(boxes, model.input_wh)
    crops = np.stack([T.crop(img, c, s, model.input_wh) for c, s in zip(center, scale)]) if len(center) \
        else np.zeros((0, model.input_wh[1], model.input_wh[0], 3), np.uint8)
    size = (img.shape[1], img.shape[0])
    return job, size, T.normalize(crops, rgb, model.layout), center, scale, np.full(len(center), img.shape[1])


def _batches(jobs: list[tuple[Path, _Job]], model: PoseModel, detector: PersonDetector | None, rgb: bool, flip: bool,
             batch_size: int, threads: int) -> Iterator[tuple[list[_Job], list[tuple[int, int]], list[int],
                                                                 np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Batches of at least ``batch_size`` crops (whole images), in job order.

    The images of each batch are prepared by ``threads`` worker threads while the network is idle, then the
    network runs on all cores: preparing during inference would only take the cores from onnxruntime,
    whose threads wait for each other at every layer.
    """
    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # parallel across images instead (a process-wide setting: restored below)
    todo = iter(progress(jobs, total=len(jobs), description="predicting"))
    try:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            while True:
                group, need = [], batch_size
                for path, job in todo:  # images until their known boxes fill a batch (detector: one each)
                    group.append((path, job))
                    need -= 1 if detector is not None else max(1, len(job.boxes))
                    if need <= 0:
                        break
                if not group:
                    return
                jobs_, sizes, *arrays = zip(*pool.map(lambda pj: _prepare(*pj, model, detector, rgb, flip), group))
                yield (list(jobs_), list(sizes), [len(x) for x in arrays[0]], *(np.concatenate(a) for a in arrays))
    finally:
        cv2.setNumThreads(cv2_threads)


def predict(model: PoseModel, jobs: list[tuple[Path, _Job]], skeleton: Skeleton | None = None,
            detector: PersonDetector | None = None, batch_size: int = 16, rgb: bool = False, score_mode: str = "mean",
            flip: bool = False) -> Persons:
    """Run ``model`` on every job's boxes (or the detector's) and return the predictions in job order: keypoints
    with the raw confidences, the box used, the source annotation id, the authors' instance score, and the
    images (with their sizes as read).

    ``skeleton`` names the model's keypoints (default: the SpineTrack layout when the model has 37, else a
    custom one). With ``flip`` the images are mirrored before cropping and the keypoints mirrored back with
    left and right swapped (flip test).
    """
    sk = skeleton or skeleton_for_count(model.num_keypoints)
    if sk.num_keypoints != model.num_keypoints:
        raise InputError(model.path, f"the model predicts {model.num_keypoints} keypoints, the layout "
                                     f"{sk.name} has {sk.num_keypoints}")
    parts: list[Persons] = []
    images: list[dict] = []
    threads = model.session.get_session_options().intra_op_num_threads or os.cpu_count() or 1
    k = model.num_keypoints
    for batch_jobs, sizes, counts, x, center, scale, width in _batches(jobs, model, detector, rgb, flip,
                                                                       batch_size, threads):
        if len(x):
            kp, conf = model.decode(model.run(x), center, scale, score_mode)
            if flip:
                kp[..., 0] = width[:, None] - 1 - kp[..., 0]
                kp, conf = kp[:, sk.flip_index], conf[:, sk.flip_index]
            kp = model.postprocess(kp)
        else:
            kp, conf = np.zeros((0, k, 2)), np.zeros((0, k))
        start = 0
        for job, (w, h), c in zip(batch_jobs, sizes, counts):
            sl = slice(start, start + c)
            images.append({"id": job.image_id, "file_name": job.file_name, "width": w, "height": h})
            parts.append(Persons.build(sk, np.concatenate([kp[sl], conf[sl, :, None]], axis=2),
                                       np.full(c, job.image_id), ann_ids=job.source_ids, category_ids=job.category_ids,
                                       boxes=job.boxes, scores=instance_scores(conf[sl], job.box_scores),
                                       predicted=True, source=str(model.path)))
            start += c
    return concat(parts, sk, predicted=True, images=images_table(images))


def evaluate_model(model: PoseModel | Path, val: Persons, images_dir: Path,
                   threads: int = 2) -> dict[str, dict[str, float]]:
    """OKS AP per group of a pose model (or an ONNX file) on validation labels, predicting on their boxes."""
    from ..evaluate import evaluate

    model = model if isinstance(model, PoseModel) else PoseModel.load(model, threads)
    return evaluate(val, predict(model, jobs_from_coco(val, images_dir), val.skeleton, batch_size=32))
