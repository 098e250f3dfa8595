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

from ..coco import CocoKeypoints
from ..io import MISSING_ID, InputError, save_json
from ..pool import image_ids, list_images
from ..progress import progress
from . import transforms as T
from .model import PersonDetector, PoseModel


@dataclass
class Predictions:
    """Per-person predictions: keypoints [N, K, 2] in image pixels, raw confidences [N, K], instance scores."""

    image_ids: np.ndarray  # [N]
    category_ids: np.ndarray  # [N]
    source_ids: np.ndarray  # [N] the annotation whose box was used, MISSING_ID for detector boxes
    boxes: np.ndarray  # [N, 4] xywh
    keypoints: np.ndarray  # [N, K, 2]
    confidences: np.ndarray  # [N, K] raw model confidences (SimCC maxima or heatmap peaks)
    scores: np.ndarray  # [N] box score x mean of the confidences above 0.2 (the authors' instance score)

    def __len__(self) -> int:
        return len(self.image_ids)

    def keypoint_triplets(self) -> np.ndarray:
        """[N, K, 3]: x, y, confidence."""
        return np.concatenate([self.keypoints, self.confidences[..., None]], axis=2)

    def to_results(self) -> list[dict[str, Any]]:
        """COCO keypoint results: image_id, category_id, keypoints (x, y, confidence), score, plus the
        source annotation id and the person box used."""
        trip = self.keypoint_triplets().reshape(len(self), -1).tolist()
        out = []
        for i in range(len(self)):
            r: dict[str, Any] = {"image_id": int(self.image_ids[i]), "category_id": int(self.category_ids[i]),
                                 "keypoints": trip[i], "score": float(self.scores[i]),
                                 "person_box": self.boxes[i].tolist()}
            if self.source_ids[i] != MISSING_ID:
                r["annotation_id"] = int(self.source_ids[i])
            out.append(r)
        return out

    def save(self, path: str | Path) -> None:
        save_json(path, self.to_results())


def instance_scores(confidences: np.ndarray, box_scores: np.ndarray, thr: float = 0.2) -> np.ndarray:
    """The SpineTrack metric's instance score: box score x mean of the keypoint scores above ``thr``."""
    above = confidences > thr
    n = above.sum(axis=1)
    mean = np.where(n > 0, (confidences * above).sum(axis=1) / np.maximum(n, 1), 0.0)
    return box_scores * mean


@dataclass
class _Job:
    image_id: int
    category_ids: np.ndarray
    source_ids: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray


def jobs_from_coco(ds: CocoKeypoints, images_dir: Path) -> list[tuple[Path, _Job]]:
    """One job per image of a COCO file that has non-crowd boxes (with their annotation ids)."""
    ok = np.isfinite(ds.boxes).all(axis=1) & (ds.boxes[:, 2] > 0) & (ds.boxes[:, 3] > 0) & (ds.iscrowd != 1)
    names = dict(zip(ds.images["id"].tolist(), ds.images["file_name"].tolist()))
    out = []
    order = np.argsort(ds.image_ids, kind="stable")
    order = order[ok[order]]
    if len(order) == 0:
        return out
    splits = np.flatnonzero(np.diff(ds.image_ids[order])) + 1
    for rows in np.split(order, splits):
        iid = int(ds.image_ids[rows[0]])
        if iid not in names:
            raise InputError(ds.source, f"annotation {int(ds.ann_ids[rows[0]])} refers to image {iid}, "
                                        "which is not in 'images'")
        out.append((images_dir / str(names[iid]), _Job(iid, ds.category_ids[rows], ds.ann_ids[rows],
                                                        ds.boxes[rows], np.ones(len(rows)))))
    return out


def jobs_from_folder(images_dir: Path) -> list[tuple[Path, _Job]]:
    """Every image in a folder, for a detector; ids as ``pool.image_ids`` gives them."""
    files = list_images(images_dir)
    return jobs_for_images(list(zip(image_ids(files), files)))


def jobs_from_images(coco: dict[str, Any], images_dir: Path) -> list[tuple[Path, _Job]]:
    """Every image of a COCO dict (e.g. ``pool.pool_coco``'s, no boxes needed), for a detector."""
    return jobs_for_images([(int(im["id"]), images_dir / str(im["file_name"])) for im in coco["images"]])


def jobs_for_images(images: list[tuple[int, Path]]) -> list[tuple[Path, _Job]]:
    """One box-less job per (image id, file): the detector gives each image its persons."""
    return [(p, _Job(iid, np.zeros(0, int), np.zeros(0, int), np.zeros((0, 4)), np.zeros(0))) for iid, p in images]


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(path, "missing or unreadable image")
    return img


def _prepare(path: Path, job: _Job, model: PoseModel, detector: PersonDetector | None, rgb: bool,
             flip: bool) -> tuple[_Job, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read, detect, crop and normalise one image: (job, network input, centres, scales, image widths)."""
    img = _read(path)
    if detector is not None:
        boxes, scores = detector(img)
        job = _Job(job.image_id, np.ones(len(boxes), int), np.full(len(boxes), MISSING_ID), boxes, scores)
    boxes = job.boxes
    if flip:  # mirror the image and the boxes; the keypoints are mirrored back after decoding
        img = np.ascontiguousarray(img[:, ::-1])
        boxes = boxes.copy()
        boxes[:, 0] = img.shape[1] - boxes[:, 0] - boxes[:, 2]
    center, scale = T.box_center_scale(boxes, model.input_wh)
    crops = np.stack([T.crop(img, c, s, model.input_wh) for c, s in zip(center, scale)]) if len(center) \
        else np.zeros((0, model.input_wh[1], model.input_wh[0], 3), np.uint8)
    return job, T.normalize(crops, rgb, model.layout), center, scale, np.full(len(center), img.shape[1])


def _batches(jobs: list[tuple[Path, _Job]], model: PoseModel, detector: PersonDetector | None, rgb: bool, flip: bool,
             batch_size: int, threads: int) -> Iterator[tuple[list[_Job], list[int], np.ndarray, np.ndarray,
                                                                 np.ndarray, np.ndarray]]:
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
                jobs_, *arrays = zip(*pool.map(lambda pj: _prepare(*pj, model, detector, rgb, flip), group))
                yield (list(jobs_), [len(x) for x in arrays[0]], *(np.concatenate(a) for a in arrays))
    finally:
        cv2.setNumThreads(cv2_threads)


def predict(model: PoseModel, jobs: list[tuple[Path, _Job]], detector: PersonDetector | None = None,
            batch_size: int = 16, rgb: bool = False, score_mode: str = "mean",
            flip_index: np.ndarray | None = None) -> Predictions:
    """Run ``model`` on every job's boxes (or the detector's) and return the predictions in job order.

    With ``flip_index`` the images are mirrored before cropping and the keypoints mirrored back with
    left and right swapped (flip test).
    """
    parts: list[tuple] = []
    flip = flip_index is not None
    threads = model.session.get_session_options().intra_op_num_threads or os.cpu_count() or 1
    for batch_jobs, counts, x, center, scale, width in _batches(jobs, model, detector, rgb, flip, batch_size,
                                                                threads):
        if len(x):
            kp, conf = model.decode(model.run(x), center, scale, score_mode)
            if flip:
                kp[..., 0] = width[:, None] - 1 - kp[..., 0]
                kp, conf = kp[:, flip_index], conf[:, flip_index]
            kp = model.postprocess(kp)
        else:
            kp, conf = np.zeros((0, model.num_keypoints, 2)), np.zeros((0, model.num_keypoints))
        start = 0
        for job, c in zip(batch_jobs, counts):
            sl = slice(start, start + c)
            parts.append((np.full(c, job.image_id), job.category_ids, job.source_ids, job.boxes, kp[sl], conf[sl],
                          job.box_scores))
            start += c
    k = model.num_keypoints

    def cat(i: int, shape: tuple[int, ...]) -> np.ndarray:
        return np.concatenate([p[i] for p in parts]) if parts else np.zeros(shape)

    conf = cat(5, (0, k))
    return Predictions(cat(0, (0,)).astype(np.int64), cat(1, (0,)).astype(np.int64), cat(2, (0,)).astype(np.int64),
                       cat(3, (0, 4)), cat(4, (0, k, 2)), conf, instance_scores(conf, cat(6, (0,))))
