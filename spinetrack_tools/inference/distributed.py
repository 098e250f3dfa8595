"""``predict`` on Ray Data: the very batches of the in-process path, run by actors that each hold one onnxruntime
session (CUDA when the actor's onnxruntime has it, CPU otherwise), results in job order.

The jobs are cut into the in-process path's groups (``predict.groups``: whole images, about ``batch_size``
crops), one group per block; ``map_batches`` hands each group to an actor, which reads, detects, crops and runs
it with ``predict.predict_group`` (the one per-batch step of both paths), so the predictions are identical by
construction. The images (and nothing else) must be readable at the same paths on every node of the cluster;
the models travel as bytes. Ray is imported only here, and only when used.
"""

from __future__ import annotations

import dataclasses
import pickle
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..io import InputError
from ..persons import Persons
from ..skeleton import Skeleton
from .model import PersonDetector, PoseModel, best_providers, make_session
from .predict import _Job, assemble, check_skeleton, groups, predict, predict_group, session_threads

LOCAL = "local"  # as ray.init(): RAY_ADDRESS, else this machine's latest cluster, else a new local one


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Ray connected inside the block: None does nothing (the in-process path); a connection already made
    is used as it is; else ``ray.init`` at ``address`` (``LOCAL``, ``auto``, ``ray://host:10001``) and
    ``ray.shutdown`` after."""
    if address is None:
        yield
        return
    import ray

    if ray.is_initialized():
        yield
        return
    _probe(address)
    try:
        if address == LOCAL:
            ray.init(include_dashboard=False, logging_level="warning")
        else:
            ray.init(address=address, logging_level="warning")
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise InputError(None, f"cannot connect to Ray at {address!r}: {str(e).splitlines()[0]}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """A ``host:port`` or ``ray://host:port`` address that takes no connection is an error now (``ray.init``
    would wait minutes for it)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout_s).close()
    except OSError as e:
        raise InputError(None, f"cannot connect to Ray at {address!r}: {e.strerror or e}") from None


def _portable(obj: Any, threads: int | None = None) -> tuple[Any, bytes | None, int]:
    """A copy of a model or detector without its onnxruntime session (which does not pickle), the ONNX bytes
    and the intra-op threads to rebuild it with (``threads``, default: its session's); other objects as they
    are."""
    if obj is None or not dataclasses.is_dataclass(obj) or getattr(obj, "session", None) is None \
            or getattr(obj, "path", None) is None:
        return obj, None, 0
    threads = threads or obj.session.get_session_options().intra_op_num_threads
    return dataclasses.replace(obj, session=None), Path(obj.path).read_bytes(), threads


def _revive(obj: Any, onnx: bytes | None, threads: int, providers: list[str]) -> Any:
    return obj if onnx is None else dataclasses.replace(obj, session=make_session(onnx, threads, providers))


class _Predictor:
    """A Ray actor: one session of the pose model (and of the detector), threads to prepare the images."""

    def __init__(self, payload: Any) -> None:
        """``payload``: a Ray reference to (portable model, portable detector, skeleton, rgb, score_mode, flip),
        one object in Ray's store (Ray Data keys its actor pools by the constructor arguments, and takes the
        ``repr`` of ones it cannot hash: megabytes of ONNX bytes, rendered and shipped with the plan)."""
        import cv2
        import ray

        model, detector, skeleton, rgb, score_mode, flip = ray.get(payload)
        providers = best_providers()
        self.model: PoseModel = _revive(*model, providers)
        self.detector: PersonDetector | None = _revive(*detector, providers)
        self.args = (skeleton, rgb, score_mode, flip)
        cv2.setNumThreads(1)  # this process only prepares images in parallel, as the in-process path does
        self.pool = ThreadPoolExecutor(session_threads(self.model))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sk, rgb, score_mode, flip = self.args
        out = [pickle.dumps(predict_group(self.model, sk, pickle.loads(g), self.detector, self.pool, rgb, score_mode,
                                          flip)) for g in batch["group"]]
        return {"batch": np.array(out, dtype=object)}


def predict_ray(model: PoseModel, jobs: list[tuple[Path, _Job]], skeleton: Skeleton | None = None,
                detector: PersonDetector | None = None, batch_size: int = 16, rgb: bool = False,
                score_mode: str = "mean", flip: bool = False, actors: int | None = None,
                threads: int | None = None) -> Persons:
    """``predict.predict`` on the connected Ray cluster (a local one is started when none is): the same
    predictions in the same order. ``threads``: onnxruntime intra-op threads of each actor's sessions (default:
    1 on a cluster without GPUs: single-threaded processes start in parallel and prepare images while the
    others infer, where one process of many threads idles between its batches; the model's own with GPUs);
    the predictions do not depend on it. ``actors``: how many (default: one per GPU, else one per ``threads``
    CPUs), each reserving ``threads`` CPUs (and one GPU when the cluster has GPUs). Progress: Ray Data's bars."""
    import ray

    sk = check_skeleton(model, skeleton)
    blobs = [pickle.dumps(g) for g in groups(jobs, batch_size, detector is not None)]
    if not blobs:
        return assemble([], sk, str(model.path))
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    threads = threads or (session_threads(model) if gpus else 1)
    n = actors or (gpus or max(1, int(resources.get("CPU", 1)) // threads))
    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        ds = ray.data.from_items([{"group": b} for b in blobs], override_num_blocks=len(blobs))
        ds = ds.map_batches(_Predictor, batch_size=1, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=min(n, len(blobs))),
                            num_cpus=threads, num_gpus=1 if gpus else 0,
                            fn_constructor_args=(ray.put((_portable(model, threads), _portable(detector, threads), sk,
                                                          rgb, score_mode, flip)),))
        return assemble((pickle.loads(r["batch"]) for r in ds.iter_rows()), sk, str(model.path))
    finally:
        ctx.execution_options.preserve_order = before


def run_predict(ray_address: str | None, model: PoseModel, jobs: list[tuple[Path, _Job]],
                skeleton: Skeleton | None = None, detector: PersonDetector | None = None, batch_size: int = 16,
                rgb: bool = False, score_mode: str = "mean", flip: bool = False) -> Persons:
    """``predict`` in this process (``ray_address`` None) or on Ray (``LOCAL``, ``auto``, ``ray://...``)."""
    if ray_address is None:
        return predict(model, jobs, skeleton, detector, batch_size, rgb, score_mode, flip)
    with ray_session(ray_address):
        return predict_ray(model, jobs, skeleton, detector, batch_size, rgb, score_mode, flip)

