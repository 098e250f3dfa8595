"""Training loop: top-down crops with augmentation, SimCC KL loss, validation OKS AP through ``evaluate``
each epoch (on the exported ONNX model, run by ``predict``), checkpoints, resume and ONNX export.

Two kinds of model: the small reference ``SimCCNet`` (new, or its checkpoint) and ``RTMPose`` (an RTMPose /
SpinePose ONNX export loaded by ``onnx_import``, or its checkpoint), exported back with the original I/O."""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import torch

from ..coco import read_persons
from ..inference import transforms as T
from ..inference.predict import evaluate_model
from ..io import InputError, atomic_write_bytes, atomic_write_text
from ..persons import Persons
from ..progress import progress
from .model import ModelConfig, OnnxIO, SimCCNet, export_onnx
from .rtmpose import RTMPose, RTMPoseConfig

# SimCC label widths (x, y) in bins by input size (w, h), as the RTMPose / SpinePose configs
SIGMAS = {(192, 256): (4.9, 5.66), (288, 384): (6.93, 7.99)}
# learning rate by model kind: the reference model from scratch; a released RTMPose fine-tuned (the recipe's
# AdamW 5e-4 at batch 1024, scaled by the square root of the batch ratio to batch 32: 8.8e-5)
LR = {"simcc": 3e-3, "rtmpose": 1e-4}
KINDS = {"simcc": (SimCCNet, ModelConfig), "rtmpose": (RTMPose, RTMPoseConfig)}


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float | None = None  # None: LR of the model kind
    weight_decay: float = 0.05
    seed: int = 0
    threads: int = 2
    augment: bool = True
    max_samples: int | None = None  # cap on training persons per epoch (random subset)


@dataclass
class Samples:
    """The training persons and the image file of each."""

    persons: Persons
    paths: list[Path]

    def __len__(self) -> int:
        return len(self.persons)


def load_samples(persons: Persons, images_dir: Path) -> Samples:
    """Non-crowd persons with a valid box and at least one labelled keypoint."""
    names = dict(zip(persons.images["id"].tolist(), persons.images["file_name"].tolist()))
    b = persons.boxes
    ok = (np.isfinite(b).all(1) & (b[:, 2] > 1) & (b[:, 3] > 1) & ~persons.crowd & persons.labelled().any(1)
          & np.isin(persons.image_ids, list(names)))
    chosen = persons.select(ok)
    return Samples(chosen, [images_dir / str(names[int(i)]) for i in chosen.image_ids])


@lru_cache(maxsize=64)
def _image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(path, "missing or unreadable image")
    return img


def make_batch(samples: Samples, rows: np.ndarray, cfg: ModelConfig, flip_index: np.ndarray,
               rng: np.random.Generator, augment: bool) -> tuple[np.ndarray, ...]:
    """Network input [B, 3, H, W], SimCC targets [B, K, W*r] and [B, K, H*r], and weights [B, K] of the samples
    at ``rows``."""
    wh = (cfg.input_w, cfg.input_h)
    r = cfg.split_ratio
    crops, tx, ty, wts = [], [], [], []
    sigma = simcc_sigma(cfg.input_w, cfg.input_h)
    bins_x = np.arange(int(cfg.input_w * r))
    bins_y = np.arange(int(cfg.input_h * r))
    for i in rows:
        img = _image(samples.paths[i])
        kp = samples.persons.keypoints[i].copy()
        center, scale = T.box_center_scale(samples.persons.boxes[i], wh)
        center, scale = center[0], scale[0]
        rot = 0.0
        if augment:
            scale = scale * rng.uniform(0.8, 1.25)
            center = center + rng.uniform(-0.08, 0.08, 2) * scale
            rot = rng.uniform(-30, 30) if rng.random() < 0.5 else 0.0
            if rng.random() < 0.5:  # mirror the image and swap left and right
                img = img[:, ::-1]
                center = np.array([img.shape[1] - 1 - center[0], center[1]])
                kp[:, 0] = np.where(kp[:, 2] > 0, img.shape[1] - 1 - kp[:, 0], 0)
                kp = kp[flip_index]
        m = T.warp_matrix(center, scale, wh, rot)
        crop = cv2.warpAffine(np.ascontiguousarray(img), m, wh, flags=cv2.INTER_LINEAR)
        if augment:
            crop = np.clip(crop * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25), 0, 255).astype(np.uint8)
        xy = kp[:, :2] @ m[:, :2].T + m[:, 2]
        w = (kp[:, 2] > 0) & (xy[:, 0] >= 0) & (xy[:, 0] < wh[0]) & (xy[:, 1] >= 0) & (xy[:, 1] < wh[1])
        crops.append(crop)
        tx.append(np.exp(-((bins_x[None] - xy[:, :1] * r) ** 2) / (2 * sigma[0] ** 2)))
        ty.append(np.exp(-((bins_y[None] - xy[:, 1:] * r) ** 2) / (2 * sigma[1] ** 2)))
        wts.append(w)
    x = T.normalize(np.stack(crops))
    return (x, np.stack(tx).astype(np.float32), np.stack(ty).astype(np.float32), np.stack(wts).astype(np.float32))


def simcc_sigma(w: int, h: int) -> tuple[float, float]:
    """The configs' label widths for an input size; other sizes scaled from 256 x 192 as the configs scale
    them (x 1.5 in size gives x sqrt 2 in sigma: exponent log 2 / log 2.25)."""
    if (w, h) in SIGMAS:
        return SIGMAS[(w, h)]
    e = np.log(2) / np.log(2.25)
    return SIGMAS[(192, 256)][0] * (w / 192) ** e, SIGMAS[(192, 256)][1] * (h / 256) ** e


def simcc_loss(px: torch.Tensor, py: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor, w: torch.Tensor,
               beta: float = 10.0) -> torch.Tensor:
    """KL divergence between label-softmaxed Gaussian targets and the predictions (mmpose KLDiscretLoss)."""
    def kl(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(p * beta, dim=-1)
        tt = torch.softmax(t * beta, dim=-1)
        return (tt * (torch.log(tt + 1e-12) - logp)).sum(-1)

    per = (kl(px, tx) + kl(py, ty)) * w
    return per.sum() / w.sum().clamp(min=1)


def _batches(samples: Samples, cfg: ModelConfig, tcfg: TrainConfig, flip_index: np.ndarray,
             rng: np.random.Generator) -> Iterator[tuple[np.ndarray, ...]]:
    """Shuffled batches, prepared in a background thread (cv2 releases the GIL). Images are shuffled and
    their persons kept together, so each decoded image serves all of its persons."""
    paths = sorted(set(samples.paths))
    image_rank = dict(zip(paths, rng.permutation(len(paths))))
    order = np.argsort([image_rank[p] for p in samples.paths], kind="stable")
    if tcfg.max_samples:
        order = order[:tcfg.max_samples]
    chunks = [order[i:i + tcfg.batch_size] for i in range(0, len(order), tcfg.batch_size)]
    q: "queue.Queue" = queue.Queue(maxsize=4)
    seeds = rng.integers(0, 2 ** 31, len(chunks))

    def work() -> None:
        try:
            for c, sd in zip(chunks, seeds):
                q.put(make_batch(samples, c, cfg, flip_index, np.random.default_rng(sd), tcfg.augment))
        except BaseException as e:
            q.put(e)
        q.put(None)

    threading.Thread(target=work, daemon=True).start()
    while (item := q.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


def one_cycle(opt: torch.optim.Optimizer, lr: float, steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """OneCycle (10 % warm-up from lr / 25, cosine decay); a short run still warms up over 2.5 steps (torch's
    OneCycle starts at the peak below 10 steps and divides by zero at exactly 10)."""
    steps = max(1, steps)
    pct = min(0.5, max(0.1, 2.5 / steps)) if steps >= 3 else 0.1
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=pct)


def kind_of(model: torch.nn.Module) -> str:
    return "rtmpose" if isinstance(model, RTMPose) else "simcc"


def save_checkpoint(model: torch.nn.Module, path: Path, io: OnnxIO | None = None, extra: dict | None = None) -> None:
    """Model kind, config, weights and the I/O contract of its export (plus ``extra``: epoch, optimiser...)."""
    import io as _io

    buf = _io.BytesIO()
    torch.save({"kind": kind_of(model), "config": model.cfg.to_dict(), "state_dict": model.state_dict(),
                "io": (io or OnnxIO.spinepose(model.cfg)).to_dict(), **(extra or {})}, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path: Path) -> dict:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise InputError(path, "checkpoint not found") from None
    except Exception as e:
        raise InputError(path, f"not a spinetrack checkpoint ({e})") from None


def load_checkpoint(path: Path, ck: dict | None = None) -> tuple[torch.nn.Module, OnnxIO]:
    """The model of a checkpoint (either kind) and the I/O contract its export keeps."""
    ck = ck or read_checkpoint(path)
    try:
        net, config = KINDS[ck.get("kind", "simcc")]
        model = net(config(**ck["config"]))
        model.load_state_dict(ck["state_dict"])
        io = OnnxIO.from_dict(ck["io"]) if "io" in ck else OnnxIO.spinepose(model.cfg)
    except Exception as e:
        raise InputError(path, f"not a spinetrack checkpoint ({e!r})") from None
    return model, io


def init_model(init: Path | None, mcfg: ModelConfig, log: Callable[[str], None]) -> tuple[torch.nn.Module, OnnxIO]:
    """A new reference model, an RTMPose / SpinePose ONNX export (checked against onnxruntime), or a checkpoint."""
    if init is None:
        model = SimCCNet(mcfg)
        return model, OnnxIO.spinepose(model.cfg)
    if init.suffix.lower() == ".onnx":
        from . import onnx_import

        model, io, diff = onnx_import.load(init)
        c = model.cfg
        log(f"{init}: RTMPose (deepen {c.deepen}, widen {c.widen}, {c.num_keypoints} keypoints, "
            f"{c.input_w} x {c.input_h}) loaded; max |simcc| difference to onnxruntime {diff:.1e}")
        return model, io
    return load_checkpoint(init)


def export(model: torch.nn.Module, path: Path, io: OnnxIO | None = None) -> None:
    """ONNX export through a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    export_onnx(model, str(tmp), io)
    tmp.replace(path)


def train(train_json: Path, images_dir: Path, val_json: Path, val_images: Path, out_dir: Path,
          tcfg: TrainConfig = TrainConfig(), mcfg: ModelConfig | None = None, init: Path | None = None,
          log: Callable[[str], None] = print, resume: bool = False) -> dict:
    """Train, validate every epoch, write ``out_dir/model.pt``, ``model.onnx`` and ``metrics.json``.

    ``init``: a checkpoint (model.pt) or an RTMPose / SpinePose ONNX file to start from (else a new reference
    model of ``mcfg``). ``resume``: continue the run whose checkpoint is ``out_dir/model.pt`` (model, optimiser,
    schedule, random state and history) after its last finished epoch."""
    torch.set_num_threads(tcfg.threads)
    torch.manual_seed(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed)
    train_ds, val_ds = read_persons(train_json), read_persons(val_json)
    samples = load_samples(train_ds, images_dir)
    if not samples:
        raise InputError(train_json, "no person with a box and labelled keypoints to train on")
    ck_path = out_dir / "model.pt"
    ck = read_checkpoint(ck_path) if resume and ck_path.is_file() else None
    if ck is not None:
        model, io = load_checkpoint(ck_path, ck)
    else:
        model, io = init_model(init, mcfg or ModelConfig(num_keypoints=train_ds.skeleton.num_keypoints), log)
    if model.cfg.num_keypoints != train_ds.skeleton.num_keypoints:
        raise InputError(train_json, f"{train_ds.skeleton.num_keypoints} keypoints, the model has "
                                     f"{model.cfg.num_keypoints}")
    flip = train_ds.skeleton.flip_index
    lr = tcfg.lr or LR[kind_of(model)]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=tcfg.weight_decay)
    n_batches = -(-min(len(samples), tcfg.max_samples or len(samples)) // tcfg.batch_size)
    sched = one_cycle(opt, lr, tcfg.epochs * n_batches)
    out_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    start = 1
    if ck is not None:
        same = lambda t: {k: v for k, v in t.items() if k != "threads"}  # noqa: E731
        if "optimizer" not in ck or same(ck.get("train") or {}) != same({**asdict(tcfg), "lr": lr}):
            raise InputError(ck_path, "cannot resume: the run was started with other training settings "
                                      f"({ck.get('train')})")
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        history, start = ck["history"], ck["epoch"] + 1
        log(f"resuming {ck_path} after epoch {ck['epoch']}/{tcfg.epochs}")
    log(f"training {kind_of(model)} on {len(samples)} persons, validating on {len(val_ds)}; "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, lr {lr:g}")
    metrics: dict = {}
    for epoch in range(start, tcfg.epochs + 1):
        model.train()
        t0, losses = time.perf_counter(), []
        for x, tx, ty, w in progress(_batches(samples, model.cfg, tcfg, flip, rng), total=n_batches,
                                     description=f"epoch {epoch}/{tcfg.epochs}"):
            px, py = model(torch.from_numpy(x))
            loss = simcc_loss(px, py, torch.from_numpy(tx), torch.from_numpy(ty), torch.from_numpy(w))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        seconds = time.perf_counter() - t0
        export(model, out_dir / "model.onnx", io)
        metrics = evaluate_model(out_dir / "model.onnx", val_ds, val_images, tcfg.threads)
        entry = {"epoch": epoch, "loss": float(np.mean(losses)), "seconds": seconds,
                 **{f"AP_{g}": m["AP"] for g, m in metrics.items()}}
        history.append(entry)
        save_checkpoint(model, ck_path, io, {"epoch": epoch, "train": {**asdict(tcfg), "lr": lr},
                                             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                             "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                                             "history": history})
        log(f"epoch {epoch}/{tcfg.epochs}: loss {entry['loss']:.4f}, " +
            ", ".join(f"{g} AP {m['AP']:.3f}" for g, m in metrics.items()) + f" ({entry['seconds']:.0f} s)")
        atomic_write_text(out_dir / "metrics.json", json.dumps({"train": {**asdict(tcfg), "lr": lr},
                                                                "model": {"kind": kind_of(model),
                                                                          **model.cfg.to_dict()},
                                                                "history": history, "final": metrics}, indent=1))
    return history[-1] if history else {}
