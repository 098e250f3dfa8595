"""The stages of an active-learning round, each idempotent and checkpointed in the workspace state:

select -> predict -> push -> pull -> gate -> merge -> retrain -> evaluate

A stage is recorded as done only after its outputs are written atomically, so the command can be killed
anywhere and re-run: selection is a single transaction, Label Studio tasks are keyed by sample id
(no duplicates), pulled corrections are kept in the round folder, a dataset version is a new file
registered after it is complete, and training restarts from scratch in a fresh folder.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..coco import from_dict, load_coco
from ..evaluate import detections_from_results, evaluate, ground_truth_from_coco
from ..findings import Report
from ..inference.model import PoseModel
from ..inference.predict import jobs_from_coco, predict
from ..io import InputError, atomic_write_bytes, load_json, save_json
from .strategies import PoolScores, select
from .workspace import STAGES, Workspace

Echo = Callable[[str], None]


def _pause(stage: str) -> None:
    """Test hook: hold a stage so a test can kill the process there (SPINETRACK_TEST_PAUSE=stage:seconds)."""
    spec = os.environ.get("SPINETRACK_TEST_PAUSE", "")
    if spec.split(":")[0] == stage:
        time.sleep(float(spec.split(":")[1]))


def run_round(ws: Workspace, n: int, wait: bool = False, until: str | None = None, echo: Echo = print,
              annotate: Callable[[Workspace, int], None] | None = None, poll_s: float = 5.0,
              timeout_s: float = 24 * 3600, oracle: dict | None = None) -> bool:
    """Run round ``n`` as far as possible; True when it finished (or reached ``until``).

    With ``oracle`` (a COCO dict of true labels; benchmarks only) Label Studio is left out: the selected
    images' true labels stand in for the pulled corrections.
    """
    if n > 1 and not ws.done(n - 1, "evaluate"):
        raise InputError(ws.path, f"round {n - 1} is not finished; run `spinetrack al-round --iter {n - 1}` first")
    if until is not None and until not in STAGES:
        raise InputError(None, f"unknown stage {until!r}; stages: {', '.join(STAGES)}")
    steps: list[tuple[str, Callable[[], bool]]] = [
        ("select", lambda: stage_select(ws, n, echo)),
        ("predict", lambda: stage_predict(ws, n, echo)),
        ("push", lambda: stage_push(ws, n, echo) if oracle is None else _skip(ws, n, "push")),
        ("pull", lambda: stage_pull(ws, n, echo, wait, annotate, poll_s, timeout_s) if oracle is None
         else _oracle_pull(ws, n, oracle)),
        ("gate", lambda: stage_gate(ws, n, echo, send_back=oracle is None)),
        ("merge", lambda: stage_merge(ws, n, echo)),
        ("retrain", lambda: stage_retrain(ws, n, echo)),
        ("evaluate", lambda: stage_evaluate(ws, n, echo)),
    ]
    for name, fn in steps:
        if not ws.done(n, name):
            _pause(name)
            if not fn():
                return False
        if name == until:
            echo(f"round {n}: stopped after {name} as asked")
            return True
    return True


def _skip(ws: Workspace, n: int, stage: str) -> bool:
    with ws.db() as db:
        ws.mark(db, n, stage)
    return True


def _oracle_pull(ws: Workspace, n: int, oracle: dict) -> bool:
    ids = _round_ids(ws, n)
    save_json(ws.round_dir(n) / "pulled.json", _subset(oracle, ids))
    Report("oracle").write_json(ws.round_dir(n) / "pull_findings.json")
    with ws.db() as db:
        db.executemany("UPDATE samples SET status = 'labelled' WHERE image_id = ?", [(i,) for i in ids])
        ws.mark(db, n, "pull")
    return True


# select and predict ---------------------------------------------------------------------------------------
def stage_select(ws: Workspace, n: int, echo: Echo) -> bool:
    cfg = ws.config["selection"]
    with ws.db() as db:
        pool_ids = [r["image_id"] for r in db.execute("SELECT image_id FROM samples WHERE status = 'pool' "
                                                      "ORDER BY image_id")]
    if not pool_ids:
        raise InputError(ws.path, "the pool is empty: every image is labelled or selected")
    model_path, _ = ws.current_model(n)
    pool = load_coco(ws.data("pool"), skeleton=None)
    sub = from_dict(_subset(pool.raw, set(pool_ids)), skeleton=pool.skeleton)
    model = PoseModel.load(model_path)
    jobs = jobs_from_coco(sub, ws.data("images"))
    preds = predict(model, jobs, batch_size=32)
    flipped = predict(model, jobs, batch_size=32, flip_index=pool.skeleton.flip_index) \
        if cfg["strategy"] in ("flip", "hybrid") else None
    scores = PoolScores(np.array(sorted(pool_ids)), preds, flipped, pool.skeleton)
    chosen, score = select(scores, cfg["strategy"], int(cfg["batch_size"]),
                           np.random.default_rng(int(cfg.get("seed", 0)) + n))
    preds.save(ws.round_dir(n) / "pool_pred.json")
    chosen_set = {int(i) for i in chosen}
    by_id = dict(zip(scores.image_ids.tolist(), score.tolist()))
    with ws.db() as db:  # one transaction: the selection and the stage mark land together
        db.executemany("UPDATE samples SET status = 'selected', round = ?, score = ? WHERE image_id = ? "
                       "AND status = 'pool'", [(n, by_id[i], i) for i in sorted(chosen_set)])
        ws.mark(db, n, "select", model=None, model_version=f"round-{n}")
    echo(f"round {n}: selected {len(chosen_set)} of {len(pool_ids)} pool images ({cfg['strategy']})")
    return True


def stage_predict(ws: Workspace, n: int, echo: Echo) -> bool:
    selected = _round_ids(ws, n)
    pool_pred = load_json(ws.round_dir(n) / "pool_pred.json")
    save_json(ws.round_dir(n) / "pred.json", [r for r in pool_pred if r["image_id"] in selected])
    with ws.db() as db:
        ws.mark(db, n, "predict")
    echo(f"round {n}: pre-annotations of {len(selected)} images written")
    return True


# Label Studio ----------------------------------------------------------------------------------------------
def connect(ws: Workspace) -> tuple[Any, Path]:
    """The Label Studio connection of the workspace and the server's local-files root."""
    from ..labelstudio.client import connect as ls_connect

    cfg = ws.config["labelstudio"]
    return ls_connect(cfg.get("url") or None, None, Path(cfg["server_dir"]), require_root=True)


def stage_push(ws: Workspace, n: int, echo: Echo) -> bool:
    from ..labelstudio.client import image_url, push
    from ..labelstudio.convert import persons_from_results, to_labelstudio

    selected = _round_ids(ws, n)
    pool = load_coco(ws.data("pool"), skeleton=None)
    sub = _subset(pool.raw, selected)
    sizes = {int(im["id"]): (float(im["width"]), float(im["height"])) for im in sub["images"]}
    persons = persons_from_results(load_json(ws.round_dir(n) / "pred.json"), pool.skeleton.num_keypoints, sizes)
    known = {int(a["id"]): a for a in sub["annotations"]}
    for group in persons.values():  # the pool's own area and category for persons on its boxes
        for p in group:
            if p.annotation_id in known:
                p.area = known[p.annotation_id].get("area")
                p.category_id = int(known[p.annotation_id].get("category_id", 1))
    conn, root = connect(ws)
    images = ws.data("images")
    tasks = to_labelstudio(sub, persons, image_url(root, images), f"round-{n}", pool.skeleton)
    res = push(conn, ws.config["labelstudio"]["project"], tasks, images, root, f"round-{n}", pool.skeleton)
    ids = {**res.existing, **res.created}
    _pause("push-mid")
    with ws.db() as db:
        db.executemany("UPDATE samples SET status = 'pushed', task_id = ? WHERE file_name = ? AND round = ?",
                       [(tid, fn, n) for fn, tid in ids.items()])
        ws.mark(db, n, "push")
    echo(f"round {n}: {len(res.created)} tasks pushed to Label Studio ({len(res.existing)} were there already); "
         f"project {ws.config['labelstudio']['project']!r}, model_version round-{n}")
    return True


def stage_pull(ws: Workspace, n: int, echo: Echo, wait: bool, annotate: Callable | None, poll_s: float,
               timeout_s: float) -> bool:
    from ..labelstudio.client import pull

    conn, _ = connect(ws)
    with ws.db() as db:
        wanted = {r["file_name"]: r["image_id"] for r in db.execute(
            "SELECT file_name, image_id FROM samples WHERE (round = ? AND status IN ('pushed', 'labelled')) "
            "OR status = 'rejected'", (n,))}
    deadline = time.monotonic() + timeout_s
    while True:
        if annotate is not None:
            annotate(ws, n)
        res = pull(conn, ws.config["labelstudio"]["project"], None, sample_ids=set(wanted))
        done = {im["file_name"] for im in res.coco["images"]}
        save_json(ws.round_dir(n) / "pulled.json", res.coco)
        save_json(ws.round_dir(n) / "edits.json", res.edits)
        Report("label studio pull", res.findings).write_json(ws.round_dir(n) / "pull_findings.json")
        _pause("pull-mid")
        missing = set(wanted) - done
        echo(f"round {n}: {len(done)} of {len(wanted)} images annotated in Label Studio")
        if not missing:
            break
        if not wait:
            echo("  re-run when the annotators are done, or pass --wait to poll")
            return False
        if time.monotonic() > deadline:
            raise InputError(ws.path, f"timed out waiting for {len(missing)} annotations")
        time.sleep(poll_s)
    with ws.db() as db:
        db.executemany("UPDATE samples SET status = 'labelled' WHERE file_name = ? AND status != 'merged'",
                       [(f,) for f in done])
        ws.mark(db, n, "pull")
    return True


# gate and merge ----------------------------------------------------------------------------------------------
def stage_gate(ws: Workspace, n: int, echo: Echo, send_back: bool = True) -> bool:
    """validate and validate-biomech on the corrections; images with errors go back for review
    (tagged in Label Studio when ``send_back``)."""
    from ..biomech.rules import check
    from ..validate import validate

    pulled = load_coco(ws.round_dir(n) / "pulled.json", skeleton=None)
    report = validate(pulled, expected=pulled.skeleton)
    report.extend(check(pulled).findings)
    bad: dict[int, list[str]] = {}
    for f in report.findings:
        if f.severity == "error" and f.image_id is not None:
            bad.setdefault(int(f.image_id), []).append(f.message)
    pull_findings = load_json(ws.round_dir(n) / "pull_findings.json")["findings"]
    for f in pull_findings:
        if f["severity"] == "error" and f.get("image_id") is not None:
            bad.setdefault(int(f["image_id"]), []).append(f["message"])
    report.write_json(ws.round_dir(n) / "gate_report.json")
    if bad and send_back:
        _send_back(ws, bad)
    with ws.db() as db:
        db.executemany("UPDATE samples SET status = 'rejected', reasons = ? WHERE image_id = ?",
                       [(json.dumps(r[:10]), i) for i, r in bad.items()])
        ws.mark(db, n, "gate")
    echo(f"round {n}: gate passed {len(pulled.images) - len(bad)} images, sent {len(bad)} back for review")
    return True


def _send_back(ws: Workspace, bad: dict[int, list[str]]) -> None:
    """Tag the Label Studio tasks with the reasons (visible in the task data) so annotators fix them."""
    conn, _ = connect(ws)
    with ws.db() as db:
        tasks = {r["image_id"]: r["task_id"] for r in db.execute("SELECT image_id, task_id FROM samples")}
    for image_id, reasons in bad.items():
        tid = tasks.get(image_id)
        if tid is None:
            continue
        task = conn._raw("GET", f"api/tasks/{tid}")
        data = dict(task["data"], review="needs review: " + "; ".join(reasons[:5]))
        conn._raw("PATCH", f"api/tasks/{tid}", body={"data": data})


def stage_merge(ws: Workspace, n: int, echo: Echo) -> bool:
    """A new dataset version: the previous one plus this round's passing labels, with provenance."""
    version, prev_path = ws.latest_dataset()
    target = ws.path / "datasets" / f"labeled_v{version + 1:03d}.json"
    with ws.db() as db:
        reg = db.execute("SELECT version FROM datasets WHERE round = ? AND version > 0", (n,)).fetchone()
    if reg is None:
        prev = load_json(prev_path)
        pulled = load_json(ws.round_dir(n) / "pulled.json")
        with ws.db() as db:
            rejected = {r["image_id"] for r in db.execute("SELECT image_id FROM samples WHERE status = 'rejected'")}
        keep = [im for im in pulled["images"] if im["id"] not in rejected]
        kept_ids = {im["id"] for im in keep}
        have = {im["id"] for im in prev["images"]}
        next_id = max([a["id"] for a in prev["annotations"]], default=0) + 1
        anns = []
        for a in pulled["annotations"]:
            if a["image_id"] in kept_ids and a["num_keypoints"] > 0:
                anns.append({**a, "id": next_id, "provenance": {"round": n, "source_annotation_id": a["id"],
                                                               "model_version": f"round-{n}", "via": "label-studio"}})
                next_id += 1
        merged = {**prev, "images": prev["images"] + [im for im in keep if im["id"] not in have],
                  "annotations": [a for a in prev["annotations"] if a["image_id"] not in kept_ids] + anns}
        if target.exists():  # a complete file from a killed run (writes are atomic): replace it
            target.unlink()
        save_json(target, merged)
        _pause("merge-mid")
        with ws.db() as db:
            db.execute("INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?)",
                       (version + 1, str(target), n, len(merged["images"]), len(merged["annotations"]), time.time()))
            db.executemany("UPDATE samples SET status = 'merged' WHERE image_id = ?", [(i,) for i in kept_ids])
            ws.mark(db, n, "merge", dataset=version + 1)
        echo(f"round {n}: dataset version {version + 1} -> {target} ({len(merged['images'])} images, "
             f"{len(merged['annotations'])} persons)")
    else:
        with ws.db() as db:
            ws.mark(db, n, "merge", dataset=int(reg["version"]))
    return True


# retrain and evaluate -------------------------------------------------------------------------------------
def stage_retrain(ws: Workspace, n: int, echo: Echo) -> bool:
    """Run the retrain hook (a command template) in a fresh folder; logs kept in the round folder."""
    _, train_path = ws.latest_dataset()
    _, init = ws.current_model(n)
    out = ws.round_dir(n) / "model"
    if out.exists():
        shutil.rmtree(out)  # a killed run's partial output
    fields = {"train": train_path, "val": ws.data("val"), "images": ws.data("images"),
              "val_images": ws.data("val_images"), "init": init or "", "out": out, "python": sys.executable}
    template = ws.config["hooks"]["retrain"]
    cmd = [part.format(**{k: str(v) for k, v in fields.items()}) for part in shlex.split(template)]
    if not init and "--init" in cmd:  # no checkpoint to start from: train from scratch
        i = cmd.index("--init")
        del cmd[i:i + 2]
    log = ws.round_dir(n) / "train.log"
    echo(f"round {n}: retraining ({' '.join(cmd[:4])} ...; log {log})")
    with open(log, "wb") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    if r.returncode != 0 or not (out / "model.onnx").is_file():
        tail = log.read_text(errors="replace").splitlines()[-3:]
        raise InputError(log, f"the retrain hook failed (exit {r.returncode}): {' | '.join(tail)}")
    ck = out / "model.pt"
    with ws.db() as db:
        ws.mark(db, n, "retrain", model=str(out / "model.onnx"), checkpoint=str(ck) if ck.is_file() else None)
    return True


def _die_with_parent() -> None:
    """Linux: the hook process gets SIGTERM when this process dies (a killed round leaves no orphan
    training into the folder a re-run uses)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def evaluate_model(model_path: Path, val_path: Path, val_images: Path) -> dict[str, dict[str, float]]:
    val = load_coco(val_path, skeleton=None)
    preds = predict(PoseModel.load(model_path), jobs_from_coco(val, val_images), batch_size=32)
    return evaluate(ground_truth_from_coco(val), detections_from_results(preds.to_results(), val.skeleton.num_keypoints),
                    val.skeleton)


def stage_evaluate(ws: Workspace, n: int, echo: Echo) -> bool:
    """OKS AP per group on the validation set (round 0 = the initial model), the learning curve."""
    if not _has_metrics(ws, 0):
        _record(ws, 0, evaluate_model(ws.current_model(1)[0], ws.data("val"), ws.data("val_images")),
                load_json(ws.latest_dataset_at(0)))
    model, _ = ws.current_model(n + 1)
    metrics = evaluate_model(model, ws.data("val"), ws.data("val_images"))
    _, ds_path = ws.latest_dataset()
    _record(ws, n, metrics, load_json(ds_path))
    save_json(ws.round_dir(n) / "eval.json", metrics, indent=True)
    learning_curve(ws)
    with ws.db() as db:
        ws.mark(db, n, "evaluate")
    echo(f"round {n}: " + ", ".join(f"{g} AP {m['AP']:.3f}" for g, m in metrics.items()))
    return True


def _has_metrics(ws: Workspace, n: int) -> bool:
    with ws.db() as db:
        return db.execute("SELECT 1 FROM metrics WHERE round = ?", (n,)).fetchone() is not None


def _record(ws: Workspace, n: int, metrics: dict, dataset: dict) -> None:
    with ws.db() as db:
        db.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?)",
                       [(n, g, m["AP"], m["AR"], len(dataset["images"])) for g, m in metrics.items()])


def learning_curve(ws: Workspace) -> Path:
    """AP per group against labelled images, as a PNG in the workspace (atomic)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with ws.db() as db:
        rows = db.execute("SELECT round, grp, ap, labelled_images FROM metrics ORDER BY round").fetchall()
    fig, ax = plt.subplots(figsize=(6, 4))
    for g in sorted({r["grp"] for r in rows}):
        pts = [(r["labelled_images"], r["ap"]) for r in rows if r["grp"] == g]
        ax.plot(*zip(*pts), marker="o", label=g)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("OKS AP (validation)")
    ax.set_title(f"active learning ({ws.config['selection']['strategy']})")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    path = ws.path / "learning_curve.png"
    atomic_write_bytes(path, buf.getvalue())
    return path


# helpers -----------------------------------------------------------------------------------------------------
def _round_ids(ws: Workspace, n: int) -> set[int]:
    with ws.db() as db:
        return {r["image_id"] for r in db.execute("SELECT image_id FROM samples WHERE round = ?", (n,))}


def _subset(coco: dict, image_ids: set[int]) -> dict:
    return {**coco, "images": [im for im in coco["images"] if im["id"] in image_ids],
            "annotations": [a for a in coco["annotations"] if a["image_id"] in image_ids]}
