"""An active-learning workspace: ``config.toml`` (data, model, Label Studio, selection, hooks) and
``state.sqlite`` (sample status per round, task ids, model and dataset versions, metrics).

Every dataset version is a new file under ``datasets/``; nothing is overwritten.
"""

from __future__ import annotations

import json
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
from ..coco import load_coco
from ..io import InputError, atomic_write_bytes

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
"""
_REQUIRED = {"data": ("images", "pool", "val", "val_images"), "model": ("onnx",),
             "labelstudio": ("project", "server_dir"), "selection": ("strategy", "batch_size"), "hooks": ("retrain",)}
# optional keys and their defaults (a workspace written before them keeps working)
DEFAULTS = {"labelstudio": {"maximum_annotations": 1}, "gate": {"deep": True, "agreement": 0.5}}


def _check_config(path: Path, config: dict[str, Any]) -> None:
    """``InputError`` naming config.toml for a missing key, an unknown strategy or a bad batch size."""
    for section, keys in _REQUIRED.items():
        for key in keys:
            if key not in (config.get(section) or {}):
                raise InputError(path, f"missing [{section}] {key}")
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

    def current_model(self, n: int) -> tuple[Path, Path | None]:
        """The model (ONNX) and checkpoint round ``n`` starts from: the last retrained one, else the initial."""
        with self._db() as db:
            row = db.execute("SELECT model, checkpoint FROM rounds WHERE round < ? AND model IS NOT NULL "
                             "ORDER BY round DESC LIMIT 1", (n,)).fetchone()
        if row:
            return Path(row["model"]), Path(row["checkpoint"]) if row["checkpoint"] else None
        ck = self.config["model"].get("checkpoint")
        return Path(self.config["model"]["onnx"]), Path(ck) if ck else None

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


def init(path: Path, pool_images: Path, boxes: Path, labeled: Path, val: Path, model: Path,
         checkpoint: Path | None = None, val_images: Path | None = None, strategy: str = DEFAULT_STRATEGY,
         batch_size: int = 50, project: str | None = None, retrain: str = DEFAULT_RETRAIN,
         labelstudio_url: str = "", server_dir: Path | None = None, seed: int = 0, annotators: int = 1,
         agreement: float = 0.5) -> Workspace:
    """Create a workspace (refuses an existing one). ``boxes`` lists the pool images and their person
    boxes; ``labeled`` (dataset version 0) and the pool share the images folder. ``annotators`` per task
    (Label Studio's maximum_annotations) whose labels the gate wants to agree at OKS ``agreement``."""
    path = path.resolve()
    if (path / CONFIG).exists():
        raise InputError(path, "a workspace already exists here")
    for p in (pool_images, boxes, labeled, val, model):
        if not p.exists():
            raise InputError(p, "not found")
    pool = load_coco(boxes).persons
    lab = load_coco(labeled).persons
    path.mkdir(parents=True, exist_ok=True)
    (path / "datasets").mkdir(exist_ok=True)
    v0 = path / "datasets" / "labeled_v000.json"
    shutil.copyfile(labeled, v0)
    config = {
        "data": {"images": str(pool_images.resolve()), "pool": str(boxes.resolve()), "val": str(val.resolve()),
                 "val_images": str((val_images or pool_images).resolve())},
        "model": {"onnx": str(model.resolve()), **({"checkpoint": str(checkpoint.resolve())} if checkpoint else {})},
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
    labelled_ids = set(lab.images["id"].tolist())
    with ws._db() as db:
        db.executemany("INSERT OR IGNORE INTO samples (image_id, file_name, status) VALUES (?, ?, ?)",
                       [(int(i), str(f), Status.LABELLED if int(i) in labelled_ids else Status.POOL)
                        for i, f in zip(pool.images["id"], pool.images["file_name"])])
        db.execute("INSERT INTO datasets VALUES (0, ?, 0, ?, ?, ?)",
                   (str(v0), len(lab.images), len(lab), time.time()))
    return ws
