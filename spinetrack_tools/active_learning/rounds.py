"""The stages of an active-learning round, each idempotent and checkpointed in the workspace state:

select -> predict -> push -> pull -> gate -> merge -> retrain -> evaluate

A stage is recorded as done only after its outputs are written atomically, so the command can be killed
anywhere and re-run: selection is a single transaction, Label Studio tasks are keyed by sample id
(no duplicates), pulled corrections are kept in the round folder, a dataset version is a new file
registered after it is complete, and training restarts from scratch in a fresh folder. A stage that cannot
apply (evaluate without a validation set, retrain without anything to fine-tune) is recorded as skipped, with
why, and the round goes on.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..coco import load_coco, read_persons, read_results, save_coco
from ..findings import Report
from ..inference.model import PersonDetector, PoseModel
from ..inference.distributed import ray_session, run_predict
from ..inference.predict import evaluate_model, jobs_for_images, jobs_from_coco
from ..io import InputError, atomic_write_bytes, load_json, save_json
from ..persons import Persons
from .strategies import PoolScores, select
from .workspace import DEFAULT_RETRAIN, NO_VAL, STAGES, Status, Workspace

Echo = Callable[[str], None]


def run_round(ws: Workspace, n: int, wait: bool = False, until: str | None = None, echo: Echo = print,
              annotate: Callable[[Workspace, int], None] | None = None, poll_s: float = 5.0,
              timeout_s: float = 24 * 3600, oracle: Persons | None = None, ray_address: str | None = None) -> bool:
    """Run round ``n`` as far as possible; True when it finished (or reached ``until``).

    With ``oracle`` (the true labels; benchmarks only) Label Studio is left out: the selected images' true
    labels stand in for the pulled corrections. ``ray_address``: the select stage predicts on Ray there
    (``distributed.run_predict``); None: in this process.
    """
    if n > 1 and not ws.done(n - 1, "evaluate"):
        raise InputError(ws.path, f"round {n - 1} is not finished; run `spinetrack al-round --iter {n - 1}` first")
    if until is not None and until not in STAGES:
        raise InputError(None, f"unknown stage {until!r}; stages: {', '.join(STAGES)}")
    steps: dict[str, Callable[[], bool]] = {
        "select": lambda: stage_select(ws, n, echo, ray_address),
        "predict": lambda: stage_predict(ws, n, echo),
        "push": lambda: stage_push(ws, n, echo) if oracle is None else _skip(ws, n, "push"),
        "pull": lambda: stage_pull(ws, n, echo, wait, annotate, poll_s, timeout_s) if oracle is None
        else _oracle_pull(ws, n, oracle),
        "gate": lambda: stage_gate(ws, n, echo, send_back=oracle is None),
        "merge": lambda: stage_merge(ws, n, echo),
        "retrain": lambda: stage_retrain(ws, n, echo),
        "evaluate": lambda: stage_evaluate(ws, n, echo),
    }
    for name in STAGES:
        if not ws.done(n, name) and not steps[name]():
            return False
        if name == until:
            echo(f"round {n}: stopped after {name} as asked")
            return True
    return True


def _skip(ws: Workspace, n: int, stage: str) -> bool:
    ws.mark(n, stage)
    return True


def _oracle_pull(ws: Workspace, n: int, oracle: Persons) -> bool:
    ids = set(ws.round_samples(n).values())
    save_coco(ws.round_dir(n) / "pulled.json", oracle.on_images(ids))
    Report("oracle").write_json(ws.round_dir(n) / "pull_findings.json")
    ws.record_labelled(n, ids)
    return True


# models -----------------------------------------------------------------------------------------------------
def pose_model(ws: Workspace, n: int) -> PoseModel:
    """The model round ``n`` starts from, loaded (a released name fetched at its pinned commit)."""
    from ..inference.hub import load_pose_model

    m = ws.current_model(n)
    return load_pose_model(m.value, revision=m.revision)


def person_detector(ws: Workspace) -> PersonDetector | None:
    """The workspace's person detector, or None when the pool file has the boxes."""
    from ..inference.hub import load_person_detector

    cfg = ws.config.get("detector")
    return None if cfg is None else load_person_detector(cfg["model"], score_thr=cfg.get("score"),
                                                         revision=cfg.get("revision"))


# select and predict ---------------------------------------------------------------------------------------
def stage_select(ws: Workspace, n: int, echo: Echo, ray_address: str | None = None) -> bool:
    cfg = ws.config["selection"]
    pool_ids = ws.ids_with(Status.POOL)
    if not pool_ids:
        raise InputError(ws.path, "the pool is empty: every image is labelled or selected")
    pool = read_persons(ws.data("pool")).on_images(pool_ids)
    model, detector, images = pose_model(ws, n), person_detector(ws), ws.data("images")
    jobs = jobs_from_coco(pool, images) if detector is None else jobs_for_images(
        [(int(i), images / str(f), str(f)) for i, f in zip(pool.images["id"], pool.images["file_name"])])
    with ray_session(ray_address):  # one connection for both passes
        preds = run_predict(ray_address, model, jobs, pool.skeleton, detector, batch_size=32)
        flipped = run_predict(ray_address, model, jobs, pool.skeleton, detector, batch_size=32, flip=True) \
            if cfg["strategy"] in ("flip", "hybrid") else None
    scores = PoolScores(np.array(sorted(pool_ids)), preds, flipped)
    chosen, score = select(scores, cfg["strategy"], int(cfg["batch_size"]),
                           np.random.default_rng(int(cfg.get("seed", 0)) + n))
    save_json(ws.round_dir(n) / "pool_pred.json", preds.to_results())
    chosen_set = {int(i) for i in chosen}
    ws.record_selection(n, chosen_set, dict(zip(scores.image_ids.tolist(), score.tolist())), f"round-{n}")
    found = f"; the detector found {len(preds)} persons" if detector is not None else ""
    echo(f"round {n}: selected {len(chosen_set)} of {len(pool_ids)} pool images ({cfg['strategy']}{found})")
    return True


def stage_predict(ws: Workspace, n: int, echo: Echo) -> bool:
    selected = set(ws.round_samples(n).values())
    pool_pred = load_json(ws.round_dir(n) / "pool_pred.json")
    save_json(ws.round_dir(n) / "pred.json", [r for r in pool_pred if r["image_id"] in selected])
    ws.mark(n, "predict")
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
    from ..labelstudio.convert import to_labelstudio

    pool = read_persons(ws.data("pool")).on_images(ws.round_samples(n).values())
    preds = read_results(ws.round_dir(n) / "pred.json", pool.skeleton, pool.images)
    # the pool's own area and category for persons predicted on its boxes
    known = {int(a): r for r, a in enumerate(pool.ann_ids)}
    rows = np.array([known.get(int(a), -1) for a in preds.ann_ids], dtype=np.int64)
    hit = rows >= 0
    preds.areas[hit], preds.category_ids[hit] = pool.areas[rows[hit]], pool.category_ids[rows[hit]]
    conn, root = connect(ws)
    images = ws.data("images")
    tasks = to_labelstudio(preds, image_url(root, images), f"round-{n}")
    res = push(conn, ws.config["labelstudio"]["project"], tasks, images, root, f"round-{n}", pool.skeleton,
               maximum_annotations=ws.config["labelstudio"]["maximum_annotations"])
    ws.record_pushed(n, {**res.existing, **res.created})
    echo(f"round {n}: {len(res.created)} tasks pushed to Label Studio ({len(res.existing)} were there already); "
         f"project {ws.config['labelstudio']['project']!r}, model_version round-{n}")
    return True


def stage_pull(ws: Workspace, n: int, echo: Echo, wait: bool, annotate: Callable | None, poll_s: float,
               timeout_s: float) -> bool:
    """Every annotator's labels of the round's tasks (and of those in review), their consensus, agreement,
    edits and review decisions, kept in the round folder; a task deleted in Label Studio puts its image back in
    the pool."""
    from ..agreement import AgreementTable
    from ..labelstudio.client import pull

    conn, _ = connect(ws)
    project = ws.config["labelstudio"]["project"]
    need = int(ws.config["labelstudio"]["maximum_annotations"])
    deadline = time.monotonic() + timeout_s
    while True:
        if annotate is not None:
            annotate(ws, n)
        wanted = _drop_deleted(ws, n, conn, project, echo)
        res = pull(conn, project, None, sample_ids=set(wanted))
        d = ws.round_dir(n)
        save_coco(d / "pulled.json", res.persons)
        save_coco(d / "annotations.json", _annotator_rows(res.annotations))
        save_json(d / "agreement.json", AgreementTable.of(res.persons, res.agreement).to_json())
        save_json(d / "review.json", {str(k): v for k, v in sorted(res.reviews.items())}, indent=True)
        save_json(d / "edits.json", res.edits)
        Report("label studio pull", res.findings).write_json(d / "pull_findings.json")
        done = {f for f in wanted if res.annotators.get(f, 0) >= need}
        missing = set(wanted) - done
        who = f" by {need} annotators" if need > 1 else ""
        echo(f"round {n}: {len(done)} of {len(wanted)} images annotated{who} in Label Studio")
        if not missing:
            break
        if not wait:
            echo("  re-run when the annotators are done, or pass --wait to poll")
            return False
        if time.monotonic() > deadline:
            raise InputError(ws.path, f"timed out waiting for {len(missing)} annotations")
        time.sleep(poll_s)
    for f in res.findings:
        if f.check == "ls_unknown_review":
            echo(f"round {n}: {f.message}")
    ws.record_labelled(n, [wanted[f] for f in done])
    from .review import write_report

    write_report(ws.path, sorted(ws.path.glob("rounds/*/")), res.persons.skeleton)
    return True


def _drop_deleted(ws: Workspace, n: int, conn: Any, project: str, echo: Echo) -> dict[str, int]:
    """What round ``n`` pulls (``ws.awaiting``), without the samples whose task was deleted in Label Studio:
    those go back to the pool, each with a message."""
    wanted = ws.awaiting(n)
    tasks = ws.task_ids()
    present = set(conn.sample_ids(conn.project_id(project)))
    gone = {f: i for f, i in wanted.items() if f not in present and i in tasks}
    for f, i in sorted(gone.items()):
        echo(f"round {n}: task {tasks[i]} (image {f}) was deleted in Label Studio; the image is back in the pool")
    if gone:
        ws.record_deleted(gone.values())
    return {f: i for f, i in wanted.items() if f not in gone}


def _annotator_rows(labels: Persons) -> Persons:
    """Every annotator's labels with unique ids, the consensus person's id kept as ``person``."""
    from dataclasses import replace

    return replace(labels, ann_ids=np.arange(1, len(labels) + 1),
                   attrs={**labels.attrs, "person": labels.ann_ids.copy()})


# gate and merge ----------------------------------------------------------------------------------------------
def stage_gate(ws: Workspace, n: int, echo: Echo, send_back: bool = True) -> bool:
    """validate, the two-stage biomechanical check, the annotators' agreement and the reviewers' decisions on
    the corrections (``gate.gate``); images with errors go back for review (tagged in Label Studio when
    ``send_back``), those a reviewer confirmed are merged with their findings."""
    from ..agreement import AgreementTable
    from .gate import gate

    d = ws.round_dir(n)
    pulled = load_coco(d / "pulled.json")
    table = AgreementTable.from_json(load_json(d / "agreement.json")) if (d / "agreement.json").is_file() else None
    reviews = {int(k): v for k, v in (load_json(d / "review.json") if (d / "review.json").is_file() else {}).items()}
    cfg = ws.config["gate"]
    res = gate(pulled, load_json(d / "pull_findings.json")["findings"], reviews, table, float(cfg["agreement"]),
               bool(cfg["deep"]))
    res.report.write_json(d / "gate_report.json")
    save_json(d / "gate.json", res.to_json(), indent=True)
    if send_back and (res.rejected or res.overridden):
        _send_back(ws, res.rejected, res.overridden, echo)
    ws.record_gate(n, res.rejected)
    explained = sum(f.severity == "warning" and "deep fit explains" in f.message for f in res.report.findings)
    extra = [f"{len(res.overridden)} confirmed by a reviewer"] * bool(res.overridden) + \
        [f"{explained} fast-rule findings explained by the deep fit"] * bool(explained)
    echo(f"round {n}: gate passed {len(pulled.persons.images) - len(res.rejected)} images, sent {len(res.rejected)} "
         "back for review" + (f" ({'; '.join(extra)})" if extra else ""))
    return True


def _send_back(ws: Workspace, bad: dict[int, list[str]], confirmed: dict[int, Any], echo: Echo) -> None:
    """Tag the Label Studio tasks with the reasons (visible in the task data and the labeling view) so annotators
    fix them or a reviewer decides, and the confirmed ones as merged; a task deleted meanwhile is reported and
    left out."""
    from ..labelstudio.client import NotFound

    conn, _ = connect(ws)
    tasks = ws.task_ids()
    notes = {i: "needs review: " + "; ".join(r[:5]) for i, r in bad.items()}
    notes.update({i: "confirmed by a reviewer: merged with its findings" for i in confirmed})
    for image_id, note in sorted(notes.items()):
        if image_id in tasks:
            try:
                conn.update_task_data(tasks[image_id], review=note)
            except NotFound:
                echo(f"  task {tasks[image_id]} (image {image_id}) is no longer in Label Studio; the next pull puts "
                     "it back in the pool")


def stage_merge(ws: Workspace, n: int, echo: Echo) -> bool:
    """A new dataset version: the previous one plus this round's passing labels, with provenance (round,
    model version, source, annotators and their agreement; ``via: review-override`` and the findings for
    the images a reviewer confirmed)."""
    done = ws.dataset_of_round(n)
    if done is not None:  # registered by a run killed before the stage mark
        ws.mark(n, "merge", dataset=done)
        return True
    version, prev_path = ws.latest_dataset()
    target = ws.path / "datasets" / f"labeled_v{version + 1:03d}.json"
    prev = load_json(prev_path)
    pulled = load_json(ws.round_dir(n) / "pulled.json")
    gate_file = ws.round_dir(n) / "gate.json"
    overridden = load_json(gate_file)["overridden"] if gate_file.is_file() else {}
    rejected = set(ws.ids_with(Status.REJECTED))
    keep = [im for im in pulled["images"] if im["id"] not in rejected]
    kept_ids = {im["id"] for im in keep}
    have = {im["id"] for im in prev["images"]}
    next_id = max([a["id"] for a in prev["annotations"]], default=0) + 1
    anns = []
    for a in pulled["annotations"]:
        if a["image_id"] in kept_ids and a["num_keypoints"] > 0:
            a = dict(a)
            prov = {"round": n, "source_annotation_id": a["id"], "model_version": f"round-{n}", "via": "label-studio",
                    "annotators": a.pop("annotators", 1), "agreement": a.pop("agreement", None)}
            review = overridden.get(str(a["image_id"]))
            if review is not None:
                prov.update(via=review["via"], review={k: review.get(k) for k in ("decision", "annotator",
                                                                                  "annotation_id", "updated_at")},
                            findings=[f for f in review["findings"] if f["annotation_id"] in (a["id"], None)])
            anns.append({**a, "id": next_id, "provenance": prov})
            next_id += 1
    merged = {**prev, "images": prev["images"] + [im for im in keep if im["id"] not in have],
              "annotations": [a for a in prev["annotations"] if a["image_id"] not in kept_ids] + anns}
    save_json(target, merged)  # atomic: a complete file from a killed run is replaced
    ws.record_merge(n, version + 1, target, len(merged["images"]), len(merged["annotations"]), kept_ids)
    by_review = f", {len(overridden)} images by review override" if overridden else ""
    echo(f"round {n}: dataset version {version + 1} -> {target} ({len(merged['images'])} images, "
         f"{len(merged['annotations'])} persons{by_review})")
    return True


# retrain and evaluate -------------------------------------------------------------------------------------
def retrain_command(ws: Workspace, n: int, out: Path) -> list[str] | str:
    """The retrain hook's command for round ``n`` (writing into ``out``), or why the round skips retraining.

    The one place that decides how a workspace's model is retrained. The hook is a template with the fields
    {train} {images} {val} {val_images} {init} (the checkpoint to fine-tune, or empty) {model} (the current
    model's ONNX file, a released one from the cache) {out} {python}. The default hook fine-tunes the
    reference trainer's checkpoint; a model without one is fine-tuned from its ONNX file when that is an RTMPose
    / SpinePose export (``train.onnx_import.detect``: a released SpinePose), else the round skips retraining;
    it also skips without a validation set (a hook of one's own that uses {val} is an error then).
    """
    from ..inference.hub import resolve

    template = ws.config["hooks"]["retrain"]
    m = ws.current_model(n)
    init = m.checkpoint
    if template == DEFAULT_RETRAIN and init is None:
        from ..train.onnx_import import detect

        onnx_file = resolve(m.value, "pose", m.revision).path
        if not detect(onnx_file):
            return (f"retrain skipped: the default hook fine-tunes a checkpoint of the reference trainer (model.pt) "
                    f"or an RTMPose / SpinePose ONNX export, and {m.value} is neither (or the train extra is not "
                    "installed); the next round selects with the same model. To retrain it, set [hooks] retrain "
                    "in config.toml to your trainer")
        init = onnx_file
    val = ws.val_set()
    if val is None and template == DEFAULT_RETRAIN:
        return ("retrain skipped: the default hook validates every epoch on the validation set, and the workspace "
                "has none; add [data] val and val_images to config.toml and the next round retrains")
    if val is None and ("{val}" in template or "{val_images}" in template):
        raise InputError(ws.path / "config.toml", "the retrain hook uses {val}, and the workspace has no "
                                                  "validation set: add [data] val and val_images, or change the hook")
    _, train_path = ws.latest_dataset()
    fields = {"train": train_path, "images": ws.data("images"), "val": val[0] if val else "",
              "val_images": val[1] if val else "", "init": init or "", "out": out, "python": sys.executable,
              "model": resolve(m.value, "pose", m.revision).path if "{model}" in template else ""}
    try:
        cmd = [part.format(**{k: str(v) for k, v in fields.items()}) for part in shlex.split(template)]
    except (KeyError, ValueError, IndexError) as e:
        raise InputError(ws.path / "config.toml", f"the retrain hook template is not valid ({e!r})") from None
    if init is None and "--init" in cmd:  # no checkpoint to start from: train from scratch
        i = cmd.index("--init")
        del cmd[i:i + 2]
    return cmd


def stage_retrain(ws: Workspace, n: int, echo: Echo) -> bool:
    """Run the retrain hook (``retrain_command``) in a fresh folder; logs kept in the round folder."""
    out = ws.round_dir(n) / "model"
    cmd = retrain_command(ws, n, out)
    if isinstance(cmd, str):
        ws.record_skip(n, "retrain", cmd)
        echo(f"round {n}: {cmd}")
        return True
    if out.exists():
        shutil.rmtree(out)  # a killed run's partial output
    log = ws.round_dir(n) / "train.log"
    echo(f"round {n}: retraining ({' '.join(cmd[:4])} ...; log {log})")
    with open(log, "wb") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    if r.returncode != 0 or not (out / "model.onnx").is_file():
        tail = log.read_text(errors="replace").splitlines()[-3:]
        raise InputError(log, f"the retrain hook failed (exit {r.returncode}): {' | '.join(tail)}")
    ck = out / "model.pt"
    ws.mark(n, "retrain", model=str(out / "model.onnx"), checkpoint=str(ck) if ck.is_file() else None)
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


def stage_evaluate(ws: Workspace, n: int, echo: Echo) -> bool:
    """OKS AP per group on the validation set (round 0 = the initial model), the learning curve; without a
    validation set, a note that AP is not measured."""
    vs = ws.val_set()
    if vs is None:
        ws.record_skip(n, "evaluate", NO_VAL)
        echo(f"round {n}: {NO_VAL}")
        return True
    val = read_persons(vs[0])
    if not ws.has_metrics(0):
        ws.record_metrics(0, evaluate_model(pose_model(ws, 1), val, vs[1]),
                          len(load_json(ws.dataset_path(0))["images"]))
    metrics = evaluate_model(pose_model(ws, n + 1), val, vs[1])
    _, ds_path = ws.latest_dataset()
    ws.record_metrics(n, metrics, len(load_json(ds_path)["images"]))
    save_json(ws.round_dir(n) / "eval.json", metrics, indent=True)
    learning_curve(ws)
    ws.mark(n, "evaluate")
    echo(f"round {n}: " + ", ".join(f"{g} AP {m['AP']:.3f}" for g, m in metrics.items()))
    return True


def learning_curve(ws: Workspace) -> Path:
    """AP per group against labelled images, as a PNG in the workspace (atomic)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ws.metrics()
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
