"""Batch pre-annotation: person boxes (from a COCO file or a detector) -> keypoints, as COCO results.

Images are read (BGR, as ``cv2.imread``), cropped and normalised by worker threads, one image per thread,
between network runs; crops of several images share a batch.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

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


Group = list[tuple[Path, _Job]]


@dataclass
class Batch:
    """One network batch's predictions: its images (in job order, with their sizes as read), the number of
    persons of each, and their keypoints [N, K, 2] and confidences [N, K] (after flip and post-process)."""

    jobs: list[_Job]
    sizes: list[tuple[int, int]]
    counts: list[int]
    keypoints: np.ndarray
    confidences: np.ndarray


def groups(jobs: Iterable[tuple[Path, _Job]], batch_size: int, detector: bool) -> Iterator[Group]:
    """Consecutive jobs, each group whole images whose known boxes just reach ``batch_size`` crops (with a
    detector, whose boxes are not known yet: ``batch_size`` images)."""
    group, need = [], batch_size
    for path, job in jobs:
        group.append((path, job))
        need -= 1 if detector else max(1, len(job.boxes))
        if need <= 0:
            yield group
            group, need = [], batch_size
    if group:
        yield group


@contextmanager
def single_threaded_cv2() -> Iterator[None]:
    """OpenCV on one thread inside the block (images are prepared in parallel instead); the process-wide
    setting is restored after."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def predict_group(model: PoseModel, skeleton: Skeleton, group: Group, detector: PersonDetector | None,
                  pool: ThreadPoolExecutor, rgb: bool = False, score_mode: str = "mean", flip: bool = False) -> Batch:
    """Predict one group of images as one batch: the images are read, detected, cropped and normalised by the
    ``pool``'s threads while the network is idle, then the network runs on all cores (preparing during
    inference would only take the cores from onnxruntime, whose threads wait for each other at every layer).

    The one per-batch step of every path (in-process ``predict``, ``distributed``'s Ray actors)."""
    jobs, sizes, *arrays = zip(*pool.map(lambda pj: _prepare(*pj, model, detector, rgb, flip), group))
    counts = [len(a) for a in arrays[0]]
    x, center, scale, width = (np.concatenate(a) for a in arrays)
    k = model.num_keypoints
    if len(x):
        kp, conf = model.decode(model.run(x), center, scale, score_mode)
        if flip:
            kp[..., 0] = width[:, None] - 1 - kp[..., 0]
            kp, conf = kp[:, skeleton.flip_index], conf[:, skeleton.flip_index]
        kp = model.postprocess(kp)
    else:
        kp, conf = np.zeros((0, k, 2)), np.zeros((0, k))
    return Batch(list(jobs), list(sizes), counts, kp, conf)


def check_skeleton(model: PoseModel, skeleton: Skeleton | None) -> Skeleton:
    """The layout of the model's keypoints: ``skeleton`` (checked) or the default for their count."""
    sk = skeleton or skeleton_for_count(model.num_keypoints)
    if sk.num_keypoints != model.num_keypoints:
        raise InputError(model.path, f"the model predicts {model.num_keypoints} keypoints, the layout "
                                     f"{sk.name} has {sk.num_keypoints}")
    return sk


def assemble(batches: Iterable[Batch], skeleton: Skeleton, source: str) -> Persons:
    """The predictions of the batches, in their order, as one ``Persons`` (with every image)."""
    parts: list[Persons] = []
    images: list[dict] = []
    for b in batches:
        start = 0
        for job, (w, h), c in zip(b.jobs, b.sizes, b.counts):
            sl = slice(start, start + c)
            images.append({"id": job.image_id, "file_name": job.file_name, "width": w, "height": h})
            parts.append(Persons.build(skeleton, np.concatenate([b.keypoints[sl], b.confidences[sl, :, None]], axis=2),
                                       np.full(c, job.image_id), ann_ids=job.source_ids, category_ids=job.category_ids,
                                       boxes=job.boxes, scores=instance_scores(b.confidences[sl], job.box_scores),
                                       predicted=True, source=source))
            start += c
    return concat(parts, skeleton, predicted=True, images=images_table(images))


def session_threads(model: PoseModel) -> int:
    """The intra-op threads of the model's session (all cores when it left the choice to onnxruntime)."""
    return model.session.get_session_options().intra_op_num_threads or os.cpu_count() or 1


def predict(model: PoseModel, jobs: list[tuple[Path, _Job]], skeleton: Skeleton | None = None,
            detector: PersonDetector | None = None, batch_size: int = 16, rgb: bool = False, score_mode: str = "mean",
            flip: bool = False) -> Persons:
    """Run ``model`` on every job's boxes (or the detector's) and return the predictions in job order: keypoints
    with the raw confidences, the box used, the source annotation id, the authors' instance score, and the
    images (with their sizes as read).

    Batches of at least ``batch_size`` crops (whole images, see ``groups``), in this process (``distributed``
    runs the same batches on Ray). ``skeleton`` names the model's keypoints (default: the SpineTrack layout
    when the model has 37, else a custom one). With ``flip`` the images are mirrored before cropping and the
    keypoints mirrored back with left and right swapped (flip test).
    """
    sk = check_skeleton(model, skeleton)

    def run() -> Iterator[Batch]:
        todo = progress(jobs, total=len(jobs), description="predicting")
        with single_threaded_cv2(), ThreadPoolExecutor(session_threads(model)) as pool:
            for group in groups(todo, batch_size, detector is not None):
                yield predict_group(model, sk, group, detector, pool, rgb, score_mode, flip)

    return assemble(run(), sk, str(model.path))


def evaluate_model(model: PoseModel | Path, val: Persons, images_dir: Path,
                   threads: int = 2) -> dict[str, dict[str, float]]:
    """OKS AP per group of a pose model (or an ONNX file) on validation labels, predicting on their boxes."""
    from ..evaluate import evaluate

    model = model if isinstance(model, PoseModel) else PoseModel.load(model, threads)
    return evaluate(val, predict(model, jobs_from_coco(val, images_dir), val.skeleton, batch_size=32))
