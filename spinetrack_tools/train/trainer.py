"""Training loop: top-down crops with augmentation, SimCC KL loss, validation OKS AP through ``evaluate``
each epoch (on the exported ONNX model, run by ``predict``), checkpoints and ONNX export."""

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
from .model import ModelConfig, SimCCNet, export_onnx

SIGMA = (4.9, 5.66)  # SimCC label widths in bins at 256 x 192, as the SpinePose configs


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
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
        tx.append(np.exp(-((bins_x[None] - xy[:, :1] * r) ** 2) / (2 * SIGMA[0] ** 2)))
        ty.append(np.exp(-((bins_y[None] - xy[:, 1:] * r) ** 2) / (2 * SIGMA[1] ** 2)))
        wts.append(w)
    x = T.normalize(np.stack(crops))
    return (x, np.stack(tx).astype(np.float32), np.stack(ty).astype(np.float32), np.stack(wts).astype(np.float32))


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


def save_checkpoint(model: SimCCNet, path: Path, extra: dict | None = None) -> None:
    import io

    buf = io.BytesIO()
    torch.save({"config": model.cfg.to_dict(), "state_dict": model.state_dict(), **(extra or {})}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> SimCCNet:
    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=False)
        model = SimCCNet(ModelConfig(**ck["config"]))
        model.load_state_dict(ck["state_dict"])
    except FileNotFoundError:
        raise InputError(path, "checkpoint not found") from None
    except Exception as e:
        raise InputError(path, f"not a spinetrack checkpoint ({e})") from None
    return model


def export(model: SimCCNet, path: Path) -> None:
    """ONNX export through a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    export_onnx(model, str(tmp))
    tmp.replace(path)


def train(train_json: Path, images_dir: Path, val_json: Path, val_images: Path, out_dir: Path,
          tcfg: TrainConfig = TrainConfig(), mcfg: ModelConfig | None = None, init: Path | None = None,
          log: Callable[[str], None] = print) -> dict:
    """Train, validate every epoch, write ``out_dir/model.pt``, ``model.onnx`` and ``metrics.json``."""
    torch.set_num_threads(tcfg.threads)
    torch.manual_seed(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed)
    train_ds, val_ds = read_persons(train_json), read_persons(val_json)
    samples = load_samples(train_ds, images_dir)
    if not samples:
        raise InputError(train_json, "no person with a box and labelled keypoints to train on")
    model = load_checkpoint(init) if init else SimCCNet(mcfg or ModelConfig(num_keypoints=train_ds.skeleton.num_keypoints))
    if model.cfg.num_keypoints != train_ds.skeleton.num_keypoints:
        raise InputError(train_json, f"{train_ds.skeleton.num_keypoints} keypoints, the model has "
                                     f"{model.cfg.num_keypoints}")
    flip = train_ds.skeleton.flip_index
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    n_batches = -(-min(len(samples), tcfg.max_samples or len(samples)) // tcfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tcfg.lr, total_steps=max(1, tcfg.epochs * n_batches),
                                                pct_start=0.1)
    out_dir.mkdir(parents=True, exist_ok=True)
    history = []
    log(f"training on {len(samples)} persons, validating on {len(val_ds)}; "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    for epoch in range(1, tcfg.epochs + 1):
        model.train()
        t0, losses = time.perf_counter(), []
        for x, tx, ty, w in _batches(samples, model.cfg, tcfg, flip, rng):
            px, py = model(torch.from_numpy(x))
            loss = simcc_loss(px, py, torch.from_numpy(tx), torch.from_numpy(ty), torch.from_numpy(w))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        export(model, out_dir / "model.onnx")
        save_checkpoint(model, out_dir / "model.pt", {"epoch": epoch})
        metrics = evaluate_model(out_dir / "model.onnx", val_ds, val_images, tcfg.threads)
        entry = {"epoch": epoch, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - t0,
                 **{f"AP_{g}": m["AP"] for g, m in metrics.items()}}
        history.append(entry)
        log(f"epoch {epoch}/{tcfg.epochs}: loss {entry['loss']:.4f}, " +
            ", ".join(f"{g} AP {m['AP']:.3f}" for g, m in metrics.items()) + f" ({entry['seconds']:.0f} s)")
        atomic_write_text(out_dir / "metrics.json", json.dumps({"train": asdict(tcfg), "model": model.cfg.to_dict(),
                                                                "history": history, "final": metrics}, indent=1))
    return history[-1]
