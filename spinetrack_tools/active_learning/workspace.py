"""An active-learning workspace: ``config.toml`` (data, model, Label Studio, selection, hooks) and
``state.sqlite`` (sample status per round, task ids, model and dataset versions, metrics).

Every dataset version is a new file under ``datasets/``; nothing is overwritten.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import tomli_w

from . import DEFAULT_STRATEGY
from ..coco import load_coco
from ..io import InputError, atomic_write_bytes

CONFIG = "config.toml"
STATE = "state.sqlite"
STAGES = ("select", "predict", "push", "pull", "gate", "merge", "retrain", "evaluate")
DEFAULT_RETRAIN = ("{python} -m spinetrack_tools train --train {train} --images {images} --val {val} "
                   "--val-images {val_images} --init {init} --out {out} --epochs 3")

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


@dataclass
class Workspace:
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
        ws = cls(path.resolve(), config)
        with ws.db() as db:
            db.executescript(SCHEMA)
        return ws

    @contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
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

    # state --------------------------------------------------------------------------------------------------
    def stage(self, n: int) -> str | None:
        with self.db() as db:
            row = db.execute("SELECT stage FROM rounds WHERE round = ?", (n,)).fetchone()
        return row["stage"] if row else None

    def done(self, n: int, stage: str) -> bool:
        s = self.stage(n)
        return s is not None and STAGES.index(s) >= STAGES.index(stage)

    def mark(self, db: sqlite3.Connection, n: int, stage: str, **fields: Any) -> None:
        db.execute("INSERT OR IGNORE INTO rounds (round, started) VALUES (?, ?)", (n, time.time()))
        sets = ", ".join(f"{k} = ?" for k in ("stage", *fields))
        db.execute(f"UPDATE rounds SET {sets} WHERE round = ?", (stage, *fields.values(), n))
        if stage == STAGES[-1]:
            db.execute("UPDATE rounds SET finished = ? WHERE round = ?", (time.time(), n))

    def current_model(self, n: int) -> tuple[Path, Path | None]:
        """The model (ONNX) and checkpoint round ``n`` starts from: the last retrained one, else the initial."""
        with self.db() as db:
            row = db.execute("SELECT model, checkpoint FROM rounds WHERE round < ? AND model IS NOT NULL "
                             "ORDER BY round DESC LIMIT 1", (n,)).fetchone()
        if row:
            return Path(row["model"]), Path(row["checkpoint"]) if row["checkpoint"] else None
        ck = self.config["model"].get("checkpoint")
        return Path(self.config["model"]["onnx"]), Path(ck) if ck else None

    def latest_dataset(self) -> tuple[int, Path]:
        with self.db() as db:
            row = db.execute("SELECT version, path FROM datasets ORDER BY version DESC LIMIT 1").fetchone()
        return int(row["version"]), Path(row["path"])

    def latest_dataset_at(self, version: int) -> Path:
        with self.db() as db:
            return Path(db.execute("SELECT path FROM datasets WHERE version = ?", (version,)).fetchone()["path"])

    def sample_fields(self) -> dict[int, dict[str, Any]]:
        """Per image: its active-learning round and status (FiftyOne fields al_round / al_status)."""
        with self.db() as db:
            return {r["image_id"]: {"al_round": r["round"], "al_status": r["status"]}
                    for r in db.execute("SELECT image_id, round, status FROM samples")}

    def counts(self) -> dict[str, int]:
        with self.db() as db:
            return {r["status"]: r["n"] for r in db.execute("SELECT status, COUNT(*) n FROM samples GROUP BY status")}


def init(path: Path, pool_images: Path, boxes: Path, labeled: Path, val: Path, model: Path,
         checkpoint: Path | None = None, val_images: Path | None = None, strategy: str = DEFAULT_STRATEGY,
         batch_size: int = 50, project: str | None = None, retrain: str = DEFAULT_RETRAIN,
         labelstudio_url: str = "", server_dir: Path | None = None, seed: int = 0) -> Workspace:
    """Create a workspace (refuses an existing one). ``boxes`` lists the pool images and their person
    boxes; ``labeled`` (dataset version 0) and the pool share the images folder."""
    path = path.resolve()
    if (path / CONFIG).exists():
        raise InputError(path, "a workspace already exists here")
    for p in (pool_images, boxes, labeled, val, model):
        if not p.exists():
            raise InputError(p, "not found")
    pool = load_coco(boxes, skeleton=None)
    lab = load_coco(labeled, skeleton=None)
    path.mkdir(parents=True, exist_ok=True)
    (path / "datasets").mkdir(exist_ok=True)
    v0 = path / "datasets" / "labeled_v000.json"
    shutil.copyfile(labeled, v0)
    config = {
        "data": {"images": str(pool_images.resolve()), "pool": str(boxes.resolve()), "val": str(val.resolve()),
                 "val_images": str((val_images or pool_images).resolve())},
        "model": {"onnx": str(model.resolve()), **({"checkpoint": str(checkpoint.resolve())} if checkpoint else {})},
        "labelstudio": {"project": project or f"spinetrack-al-{path.name}", "url": labelstudio_url,
                        "server_dir": str((server_dir or path / "labelstudio").resolve())},
        "selection": {"strategy": strategy, "batch_size": batch_size, "seed": seed},
        "hooks": {"retrain": retrain},
    }
    atomic_write_bytes(path / CONFIG, tomli_w.dumps(config).encode())
    ws = Workspace.open(path)
    labelled_ids = set(lab.images["id"].tolist())
    with ws.db() as db:
        db.executemany("INSERT OR IGNORE INTO samples (image_id, file_name, status) VALUES (?, ?, ?)",
                       [(int(i), str(f), "labelled" if int(i) in labelled_ids else "pool")
                        for i, f in zip(pool.images["id"], pool.images["file_name"])])
        db.execute("INSERT INTO datasets VALUES (0, ?, 0, ?, ?, ?)",
                   (str(v0), len(lab.images), len(lab), time.time()))
    return ws
