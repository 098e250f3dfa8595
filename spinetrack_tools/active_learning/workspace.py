"""An active-learning workspace: ``config.toml`` (data, model, detector, Label Studio, selection, hooks) and
``state.sqlite`` (sample status per round, task ids, model and dataset versions, metrics, notes of skipped
stages).

Every dataset version is a new file under ``datasets/``; nothing is overwritten. The pool's persons come
from a boxes file (``[data] pool``) or, when the config has a ``[detector]``, from that detector; without
``[data] val`` AP is not measured.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterable, Iterator

import tomli_w

from . import DEFAULT_STRATEGY, STRATEGY_NAMES
from ..coco import empty_coco, load_coco, read_persons
from ..io import InputError, atomic_write_bytes, save_json

CONFIG = "config.toml"
STATE = "state.sqlite"
STAGES = ("select", "predict", "push", "pull", "gate", "merge", "retrain", "evaluate")
DEFAULT_RETRAIN = ("{python} -m spinetrack_tools train --train {train} --images {images} --val {val} "
                   "--val-images {val_images} --init {init} --out {out} --epochs 3")


class Status(StrEnum):
    """Where a sample (an image) stands."""

    POOL = "pool"  # unlabelled, may be selected
    SELECTED = "selected"  # chosen for a round, not yet in Label Studio
    PUSHED = "pushed"  # a Label Studio task waits for annotators
    LABELLED = "labelled"  # annotated (or in the initial labelled set), not yet gated
    REJECTED = "rejected"  # failed the gate; back in Label Studio for review
    MERGED = "merged"  # in a dataset version


SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (image_id INTEGER PRIMARY KEY, file_name TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pool', round INTEGER, task_id INTEGER, score REAL, reasons TEXT);
CREATE TABLE IF NOT EXISTS rounds (round INTEGER PRIMARY KEY, stage TEXT, model TEXT, checkpoint TEXT,
    model_version TEXT, dataset INTEGER, started REAL, finished REAL);
CREATE TABLE IF NOT EXISTS datasets (version INTEGER PRIMARY KEY, path TEXT NOT NULL, round INTEGER,
    images INTEGER, annotations INTEGER, created REAL);
CREATE TABLE IF NOT EXISTS metrics (round INTEGER, grp TEXT, ap REAL, ar REAL, labelled_images INTEGER,
    PRIMARY KEY (round, grp));
CREATE TABLE IF NOT EXISTS notes (round INTEGER, stage TEXT, note TEXT, PRIMARY KEY (round, stage));
"""
NO_VAL = ("AP not measured: the workspace has no validation set (add [data] val and val_images to config.toml; "
          "later rounds then measure every model, round 0 included)")
_REQUIRED = {"data": ("images", "pool"), "model": ("onnx",),
             "labelstudio": ("project", "server_dir"), "selection": ("strategy", "batch_size"), "hooks": ("retrain",)}
# optional keys and their defaults (a workspace written before them keeps working)
DEFAULTS = {"labelstudio": {"maximum_annotations": 1}, "gate": {"deep": True, "agreement": 0.5}}


def _check_config(path: Path, config: dict[str, Any]) -> None:
    """``InputError`` naming config.toml for a missing key, an unknown strategy or a bad batch size."""
    for section, keys in _REQUIRED.items():
        for key in keys:
            if key not in (config.get(section) or {}):
                raise InputError(path, f"missing [{section}] {key}")
    if "val" in config["data"] and "val_images" not in config["data"]:
        raise InputError(path, "missing [data] val_images (the folder of the [data] val images)")
    if "detector" in config and "model" not in config["detector"]:
        raise InputError(path, "missing [detector] model")
    sel = config["selection"]
    if sel["strategy"] not in STRATEGY_NAMES:
        raise InputError(path, f"unknown strategy {sel['strategy']!r}; known: {', '.join(STRATEGY_NAMES)}")
    if not isinstance(sel["batch_size"], int) or isinstance(sel["batch_size"], bool) or sel["batch_size"] < 1:
        raise InputError(path, f"batch_size must be a positive integer, not {sel['batch_size']!r}")
    for section, keys in DEFAULTS.items():
        for key, default in keys.items():
            config.setdefault(section, {}).setdefault(key, default)
    m = config["labelstudio"]["maximum_annotations"]
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise InputError(path, f"[labelstudio] maximum_annotations (annotators per task) must be a positive integer, "
                               f"not {m!r}")
    if not isinstance(config["gate"]["deep"], bool):
        raise InputError(path, f"[gate] deep must be true or false, not {config['gate']['deep']!r}")
    a = config["gate"]["agreement"]
    if not isinstance(a, (int, float)) or isinstance(a, bool) or not 0 <= a <= 1:
        raise InputError(path, f"[gate] agreement (the least OKS between annotators) must be in [0, 1], not {a!r}")


@dataclass(frozen=True)
class ModelRef:
    """The pose model a round starts from: a released name (pinned to a Hub commit) or an ONNX file, and its
    training checkpoint when it has one."""

    value: str
    revision: str | None = None
    checkpoint: Path | None = None


@dataclass
class Workspace:
    """The workspace folder and its state; every read and write of the state database is a method here."""

    path: Path
    config: dict[str, Any]

    @classmethod
    def open(cls, path: Path) -> "Workspace":
        cfg = path / CONFIG
        if not cfg.is_file():
            raise InputError(path, f"not a workspace (no {CONFIG}); create one with `spinetrack init`")
        try:
            config = tomllib.loads(cfg.read_text())
        except tomllib.TOMLDecodeError as e:
            raise InputError(cfg, f"invalid TOML: {e}") from None
        _check_config(cfg, config)
        ws = cls(path.resolve(), config)
        with ws._db() as db:
            db.executescript(SCHEMA)
        return ws

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction (committed on success, rolled back on any error)."""
        con = sqlite3.connect(self.path / STATE, timeout=30)
        con.row_factory = sqlite3.Row
        try:
            with con:
                yield con
        finally:
            con.close()

    def data(self, key: str) -> Path:
        return Path(self.config["data"][key])

    def val_set(self) -> tuple[Path, Path] | None:
        """The validation labels and their images folder, or None (AP is then not measured)."""
        d = self.config["data"]
        return (Path(d["val"]), Path(d["val_images"])) if d.get("val") else None

    def round_dir(self, n: int) -> Path:
        d = self.path / "rounds" / f"{n:03d}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    # rounds ---------------------------------------------------------------------------------------------------
    def stage(self, n: int) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT stage FROM rounds WHERE round = ?", (n,)).fetchone()
        return row["stage"] if row else None

    def done(self, n: int, stage: str) -> bool:
        s = self.stage(n)
        return s is not None and STAGES.index(s) >= STAGES.index(stage)

    def mark(self, n: int, stage: str, **fields: Any) -> None:
        """Record that round ``n`` finished ``stage`` (with round fields such as model, checkpoint, dataset)."""
        with self._db() as db:
            self._mark(db, n, stage, **fields)

    @staticmethod
    def _mark(db: sqlite3.Connection, n: int, stage: str, **fields: Any) -> None:
        db.execute("INSERT OR IGNORE INTO rounds (round, started) VALUES (?, ?)", (n, time.time()))
        sets = ", ".join(f"{k} = ?" for k in ("stage", *fields))
        db.execute(f"UPDATE rounds SET {sets} WHERE round = ?", (stage, *fields.values(), n))
        if stage == STAGES[-1]:
            db.execute("UPDATE rounds SET finished = ? WHERE round = ?", (time.time(), n))

    def rounds(self) -> list[dict[str, Any]]:
        with self._db() as db:
            return [dict(r) for r in db.execute("SELECT round, stage, model_version, dataset FROM rounds "
                                                "ORDER BY round")]

    def current_model(self, n: int) -> ModelRef:
        """The model round ``n`` starts from: the last retrained one (an ONNX file), else the initial one."""
        with self._db() as db:
            row = db.execute("SELECT model, checkpoint FROM rounds WHERE round < ? AND model IS NOT NULL "
                             "ORDER BY round DESC LIMIT 1", (n,)).fetchone()
        if row:
            return ModelRef(row["model"], None, Path(row["checkpoint"]) if row["checkpoint"] else None)
        m = self.config["model"]
        return ModelRef(str(m["onnx"]), m.get("revision"), Path(m["checkpoint"]) if m.get("checkpoint") else None)

    def record_skip(self, n: int, stage: str, note: str) -> None:
        """Round ``n`` passed ``stage`` without doing it (why: ``note``), and the stage mark, at once."""
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO notes VALUES (?, ?, ?)", (n, stage, note))
            self._mark(db, n, stage)

    def notes(self) -> list[dict[str, Any]]:
        """The stages rounds skipped, with why, by round."""
        with self._db() as db:
            return [dict(r) for r in db.execute("SELECT round, stage, note FROM notes ORDER BY round, stage")]

    # samples --------------------------------------------------------------------------------------------------
    def ids_with(self, *statuses: Status) -> list[int]:
        """Image ids of the samples with one of these statuses, in id order."""
        with self._db() as db:
            marks = ", ".join("?" * len(statuses))
            return [r["image_id"] for r in db.execute(
                f"SELECT image_id FROM samples WHERE status IN ({marks}) ORDER BY image_id", statuses)]

    def round_samples(self, n: int) -> dict[str, int]:
        """file name -> image id of the samples selected in round ``n``."""
        with self._db() as db:
            return {r["file_name"]: r["image_id"] for r in db.execute(
                "SELECT file_name, image_id FROM samples WHERE round = ?", (n,))}

    def record_selection(self, n: int, chosen: Iterable[int], scores: dict[int, float], model_version: str) -> None:
        """Round ``n``'s batch (pool images only) with every pool image's score, and the stage mark, at once."""
        with self._db() as db:
            db.executemany("UPDATE samples SET status = ?, round = ?, score = ? WHERE image_id = ? AND status = ?",
                           [(Status.SELECTED, n, scores[i], i, Status.POOL) for i in sorted(chosen)])
            self._mark(db, n, "select", model=None, model_version=model_version)

    def record_pushed(self, n: int, task_ids: dict[str, int]) -> None:
        """The Label Studio task of each of round ``n``'s samples (by file name), and the stage mark."""
        with self._db() as db:
            db.executemany("UPDATE samples SET status = ?, task_id = ? WHERE file_name = ? AND round = ?",
                           [(Status.PUSHED, tid, fn, n) for fn, tid in task_ids.items()])
            self._mark(db, n, "push")

    def awaiting(self, n: int) -> dict[str, int]:
        """file name -> image id of what round ``n`` pulls: its pushed or labelled samples and every rejected one
        (back for review)."""
        with self._db() as db:
            return {r["file_name"]: r["image_id"] for r in db.execute(
                "SELECT file_name, image_id FROM samples WHERE (round = ? AND status IN (?, ?)) OR status = ?",
                (n, Status.PUSHED, Status.LABELLED, Status.REJECTED))}

    def record_labelled(self, n: int, image_ids: Iterable[int]) -> None:
        """These samples came back annotated (merged ones stay merged), and the pull mark."""
        with self._db() as db:
            db.executemany("UPDATE samples SET status = ? WHERE image_id = ? AND status != ?",
                           [(Status.LABELLED, i, Status.MERGED) for i in image_ids])
            self._mark(db, n, "pull")

    def record_gate(self, n: int, rejected: dict[int, list[str]]) -> None:
        """The samples that failed the gate with their reasons, and the gate mark."""
        with self._db() as db:
            db.executemany("UPDATE samples SET status = ?, reasons = ? WHERE image_id = ?",
                           [(Status.REJECTED, json.dumps(r[:10]), i) for i, r in rejected.items()])
            self._mark(db, n, "gate")

    def record_deleted(self, image_ids: Iterable[int]) -> None:
        """Samples whose Label Studio task was deleted: back in the pool, without a task or round."""
        with self._db() as db:
            db.executemany("UPDATE samples SET status = ?, round = NULL, task_id = NULL, reasons = NULL "
                           "WHERE image_id = ? AND status != ?", [(Status.POOL, i, Status.MERGED) for i in image_ids])

    def review_queue(self) -> list[dict[str, Any]]:
        """The samples in review (rejected by the gate): image, file, round, task and reasons, by image id."""
        with self._db() as db:
            return [{**dict(r), "reasons": json.loads(r["reasons"] or "[]")} for r in db.execute(
                "SELECT image_id, file_name, round, task_id, reasons FROM samples WHERE status = ? ORDER BY image_id",
                (Status.REJECTED,))]

    def task_ids(self) -> dict[int, int]:
        """image id -> Label Studio task id of every pushed sample."""
        with self._db() as db:
            return {r["image_id"]: r["task_id"] for r in db.execute(
                "SELECT image_id, task_id FROM samples WHERE task_id IS NOT NULL")}

    def sample_fields(self) -> dict[int, dict[str, Any]]:
        """Per image: its active-learning round and status (FiftyOne fields al_round / al_status)."""
        with self._db() as db:
            return {r["image_id"]: {"al_round": r["round"], "al_status": r["status"]}
                    for r in db.execute("SELECT image_id, round, status FROM samples")}

    def counts(self) -> dict[str, int]:
        with self._db() as db:
            return {r["status"]: r["n"] for r in db.execute("SELECT status, COUNT(*) n FROM samples GROUP BY status")}

    # dataset versions ---------------------------------------------------------------------------------------------
    def latest_dataset(self) -> tuple[int, Path]:
        with self._db() as db:
            row = db.execute("SELECT version, path FROM datasets ORDER BY version DESC LIMIT 1").fetchone()
        return int(row["version"]), Path(row["path"])

    def dataset_path(self, version: int) -> Path:
        with self._db() as db:
            return Path(db.execute("SELECT path FROM datasets WHERE version = ?", (version,)).fetchone()["path"])

    def dataset_of_round(self, n: int) -> int | None:
        """The dataset version round ``n`` merged, if it got that far."""
        with self._db() as db:
            row = db.execute("SELECT version FROM datasets WHERE round = ? AND version > 0", (n,)).fetchone()
        return None if row is None else int(row["version"])

    def record_merge(self, n: int, version: int, path: Path, images: int, annotations: int,
                     merged: Iterable[int]) -> None:
        """A complete new dataset version, its samples marked merged, and the merge mark, at once."""
        with self._db() as db:
            db.execute("INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?)",
                       (version, str(path), n, images, annotations, time.time()))
            db.executemany("UPDATE samples SET status = ? WHERE image_id = ?", [(Status.MERGED, i) for i in merged])
            self._mark(db, n, "merge", dataset=version)

    # metrics ------------------------------------------------------------------------------------------------------
    def has_metrics(self, n: int) -> bool:
        with self._db() as db:
            return db.execute("SELECT 1 FROM metrics WHERE round = ?", (n,)).fetchone() is not None

    def record_metrics(self, n: int, metrics: dict[str, dict[str, float]], labelled_images: int) -> None:
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?)",
                           [(n, g, m["AP"], m["AR"], labelled_images) for g, m in metrics.items()])

    def metrics(self) -> list[dict[str, Any]]:
        """Every round's AP and AR per group with the labelled images then, by round."""
        with self._db() as db:
            return [dict(r) for r in db.execute("SELECT round, grp, ap, ar, labelled_images FROM metrics "
                                                "ORDER BY round, grp")]


def init(path: Path, pool_images: Path, boxes: Path | None = None, labeled: Path | None = None,
         val: Path | None = None, model: str | Path | None = None, checkpoint: Path | None = None,
         val_images: Path | None = None, strategy: str = DEFAULT_STRATEGY, batch_size: int = 50,
         project: str | None = None, retrain: str = DEFAULT_RETRAIN, labelstudio_url: str = "",
         server_dir: Path | None = None, seed: int = 0, *, detector: str | Path | None = None,
         revision: str | None = None, det_revision: str | None = None, det_score: float | None = None,
         every: int | None = None, max_frames: int | None = None, frames_dir: Path | None = None,
         annotators: int = 1, agreement: float = 0.5) -> Workspace:
    """Create a workspace (refuses an existing one; a folder it created is removed again when it fails).

    With ``boxes`` (a COCO file listing the pool images and their person boxes) ``pool_images`` is their
    folder. Without, it is a folder of images and/or videos, or one video, and the persons come from
    ``detector`` (default: the RF-DETR the spinepose package pairs with ``model``); video frames are written
    once to ``frames_dir`` (default ``<workspace>/frames``) and the images-only pool file to ``pool.json``.
    ``labeled`` is dataset version 0 (default: none, an empty version 0; its file names relative to the
    images folder); without ``val`` AP is not measured. ``model`` (default ``hub.DEFAULT_POSE``) and the
    detector are released names or ONNX files; a name is stored with the Hub commit it resolves to now.
    ``annotators`` per task (Label Studio's maximum_annotations) whose labels the gate wants to agree at OKS
    ``agreement``.
    """
    from ..inference import hub

    path = path.resolve()
    if (path / CONFIG).exists():
        raise InputError(path, "a workspace already exists here")
    model = hub.DEFAULT_POSE if model is None else model
    if boxes is not None and detector is not None:
        raise InputError(boxes, "persons come from a boxes file or a detector, not both")
    for p in (pool_images, boxes, labeled, val, val_images, checkpoint):
        if p is not None and not p.exists():
            raise InputError(p, "not found")
    if val is None and val_images is not None:
        raise InputError(val_images, "validation images without validation labels (--val)")
    hub.parse(model, "pose")  # every name checked before anything is fetched or written
    if boxes is None:
        detector = hub.paired_detector(model) if detector is None else detector
        hub.parse(detector, "detector")
    elif not pool_images.is_dir():
        raise InputError(pool_images, "a boxes file lists the images of a folder; the persons of a video come "
                                      "from the detector (leave out --boxes)")
    lab = read_persons(labeled) if labeled is not None else None
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        if boxes is None:
            images_root, pool_file, pool_rows = _detector_pool(path, pool_images, frames_dir, every, max_frames, lab)
        else:
            pool = load_coco(boxes).persons
            images_root, pool_file = pool_images, boxes
            pool_rows = list(zip(pool.images["id"].tolist(), pool.images["file_name"].tolist()))
        model_value, model_rev = hub.pin(model, "pose", revision)
        hub.load_pose_model(model_value, revision=model_rev)  # a pose model at all: fail now, not in round 1
        det_cfg: dict[str, Any] = {}
        if detector is not None:
            det_value, det_rev = hub.pin(detector, "detector", det_revision)
            hub.load_person_detector(det_value, revision=det_rev)
            det_cfg = {"detector": {"model": det_value, **({"revision": det_rev} if det_rev else {}),
                                    **({"score": det_score} if det_score is not None else {})}}
        (path / "datasets").mkdir(exist_ok=True)
        v0 = path / "datasets" / "labeled_v000.json"
        if labeled is not None:
            shutil.copyfile(labeled, v0)
        else:
            save_json(v0, empty_coco())
        config = {
            "data": {"images": str(images_root.resolve()), "pool": str(pool_file.resolve()),
                     **({"val": str(val.resolve()), "val_images": str((val_images or images_root).resolve())}
                        if val is not None else {})},
            "model": {"onnx": model_value, **({"revision": model_rev} if model_rev else {}),
                      **({"checkpoint": str(checkpoint.resolve())} if checkpoint else {})},
            **det_cfg,
            "labelstudio": {"project": project or f"spinetrack-al-{path.name}", "url": labelstudio_url,
                            "server_dir": str((server_dir or path / "labelstudio").resolve()),
                            "maximum_annotations": annotators},
            "selection": {"strategy": strategy, "batch_size": batch_size, "seed": seed},
            "hooks": {"retrain": retrain},
            "gate": {"deep": True, "agreement": agreement},
        }
        _check_config(path / CONFIG, config)
        atomic_write_bytes(path / CONFIG, tomli_w.dumps(config).encode())
        ws = Workspace.open(path)
    except BaseException:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        elif (path / CONFIG).exists():
            (path / CONFIG).unlink()
        raise
    labelled_ids = set() if lab is None else set(lab.images["id"].tolist())
    with ws._db() as db:
        db.executemany("INSERT OR IGNORE INTO samples (image_id, file_name, status) VALUES (?, ?, ?)",
                       [(int(i), str(f), Status.LABELLED if int(i) in labelled_ids else Status.POOL)
                        for i, f in pool_rows])
        db.execute("INSERT INTO datasets VALUES (0, ?, 0, ?, ?, ?)",
                   (str(v0), 0 if lab is None else len(lab.images), 0 if lab is None else len(lab), time.time()))
    return ws


def _detector_pool(path: Path, source: Path, frames_dir: Path | None, every: int | None, max_frames: int | None,
                   labeled: Any) -> tuple[Path, Path, list[tuple[int, str]]]:
    """The images of a box-less pool (video frames sampled into ``frames_dir``, default ``<workspace>/frames``)
    as ``<workspace>/pool.json``: (images folder, pool file, (image id, file name) per image). File names are
    relative to the folder all the images are in; images of the labelled set keep its ids."""
    from ..pool import pool_coco, pool_images

    files = pool_images(source, frames_dir or path / "frames", every, max_frames)
    root = Path(os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in files]))
    if root == Path(root.anchor):
        raise InputError(frames_dir or path / "frames", f"the frames and the images of {source} share no folder "
                                                        "but the file system's root; put the frames next to them")
    coco = pool_coco(files, root)
    if labeled is not None:
        _align_ids(coco, dict(zip(labeled.images["file_name"].astype(str), labeled.images["id"].astype(int))))
    save_json(path / "pool.json", coco)
    return root, path / "pool.json", [(im["id"], im["file_name"]) for im in coco["images"]]


def _align_ids(coco: dict[str, Any], labelled: dict[str, int]) -> None:
    """Pool images that are in the labelled set take its id; others whose id it uses get new ones."""
    taken = set(labelled.values())
    fresh = max([*taken, *(im["id"] for im in coco["images"])], default=0) + 1
    for im in coco["images"]:
        if im["file_name"] in labelled:
            im["id"] = labelled[im["file_name"]]
        elif im["id"] in taken:
            im["id"], fresh = fresh, fresh + 1
