"""Active-learning rounds against a real Label Studio, with real subprocesses killed mid-stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spinetrack_tools import synth
from spinetrack_tools.active_learning.workspace import Workspace
from spinetrack_tools.coco import save_coco

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
RETRAIN = ("{python} -m spinetrack_tools train --train {train} --images {images} --val {val} --val-images "
           "{val_images} --init {init} --out {out} --epochs 1 --max-samples 8 --batch-size 4")


def make_workspace(root: Path, name: str, info, batch: int = 6,
                   extra: tuple[str, ...] = ()) -> tuple[Path, dict, dict]:
    pytest.importorskip("torch")
    data = root / name
    pool = synth.generate(24, seed=5, image_dir=data / "images", fk="numpy")
    save_coco(data / "truth.json", pool)
    lab = set(im["id"] for im in pool["images"][:8])
    save_coco(data / "labeled.json", {**pool, "images": [i for i in pool["images"] if i["id"] in lab],
                                      "annotations": [a for a in pool["annotations"] if a["image_id"] in lab]})
    save_coco(data / "boxes.json", pool)
    save_coco(data / "val.json", synth.generate(4, seed=6, image_dir=data / "val_images", fk="numpy"))
    ws = data / "ws"
    env = {**os.environ, "LABEL_STUDIO_API_KEY": info.token, "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(root)}
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "init", str(ws), "--pool", str(data / "images"),
                        "--boxes", str(data / "boxes.json"), "--labeled", str(data / "labeled.json"), "--val",
                        str(data / "val.json"), "--val-images", str(data / "val_images"), "--model",
                        str(ROOT / "models" / "spinetrack_synth.onnx"), "--checkpoint",
                        str(ROOT / "models" / "spinetrack_synth.pt"), "--batch-size", str(batch), "--project", name,
                        "--labelstudio-url", info.url, "--retrain", RETRAIN, *extra], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    return ws, env, pool


def cli(env: dict, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spinetrack_tools", *args], env=env, capture_output=True, text=True,
                          **kw)


def n_tasks(info, project: str) -> int:
    from spinetrack_tools.labelstudio.client import Connection

    conn = Connection.open(info.url, info.token)
    pid = conn.find_project(project)
    return 0 if pid is None else sum(1 for _ in conn.iter_tasks(pid, fields="task_only"))


def test_a_round_end_to_end(label_studio):
    info, root, _ = label_studio
    ws, env, pool = make_workspace(root, "al-e2e", info)
    r = cli(env, "al-round", "--iter", "1", "--workspace", str(ws))
    assert r.returncode == 0, r.stderr
    assert "0 of 6 images annotated" in r.stdout and "waiting for annotations" in r.stdout
    assert cli(env, "al-round", "--iter", "2", "--workspace", str(ws)).returncode == 2  # round 1 first
    r = cli(env, "annotate-sim", "--workspace", str(ws), "--truth", str(ws.parent / "truth.json"))
    assert r.returncode == 0 and "6 annotations submitted" in r.stdout
    r = cli(env, "al-round", "--iter", "1", "--workspace", str(ws))
    assert r.returncode == 0, r.stderr
    assert "round 1: done" in r.stdout
    st = json.loads(cli(env, "status", "--workspace", str(ws), "--json").stdout)
    assert {m["round"] for m in st["metrics"]} == {0, 1}
    assert st["samples"].get("merged", 0) + st["samples"].get("rejected", 0) == 6
    w = Workspace.open(ws)
    v, path = w.latest_dataset()
    assert v == 1 and path.name == "labeled_v001.json" and (ws / "datasets" / "labeled_v000.json").is_file()
    merged = json.loads(path.read_text())
    assert all("provenance" in a for a in merged["annotations"] if a["image_id"] not in
               {im["id"] for im in pool["images"][:8]})
    assert (ws / "learning_curve.png").stat().st_size > 1000
    assert n_tasks(info, "al-e2e") == 6


def _kill_at(env: dict, ws: Path, stage: str, info, project: str, n: int = 1) -> None:
    """Start the round, wait until it reaches ``stage`` (held there by tests/holding.py), kill -9."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.holding", stage, "120", "al-round", "--iter", str(n),
                             "--workspace", str(ws), "--wait"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    w = Workspace.open(ws)
    reached = {"push-mid": lambda: w.stage(n) == "predict" and n_tasks(info, project) > 0,
               "pull-mid": lambda: (w.round_dir(n) / "pulled.json").is_file(),
               "merge-mid": lambda: (ws / "datasets" / f"labeled_v{n:03d}.json").is_file(),
               "retrain": lambda: (w.round_dir(n) / "train.log").is_file()}[stage]
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not reached():
        time.sleep(0.5)
    assert proc.poll() is None, proc.stdout.read().decode()
    time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("server", ["label_studio", "label_studio_pg"], ids=["sqlite", "postgres"])
def test_killed_rounds_resume_without_duplicates_or_losses(server, request):
    info, root, _ = request.getfixturevalue(server)
    project = "al-kill" if server == "label_studio" else "pg-al-kill"
    ws, env, pool = make_workspace(root, project, info)
    # killed after the tasks reached Label Studio but before the state recorded them
    _kill_at(env, ws, "push-mid", info, project)
    assert Workspace.open(ws).stage(1) == "predict" and n_tasks(info, project) == 6
    r = cli(env, "al-round", "--iter", "1", "--workspace", str(ws), "--until", "push")
    assert r.returncode == 0, r.stderr
    assert n_tasks(info, project) == 6  # no duplicates
    assert cli(env, "annotate-sim", "--workspace", str(ws), "--truth", str(ws.parent / "truth.json")).returncode == 0
    # killed while pulling, then while merging: nothing lost, the version file is complete or absent
    _kill_at(env, ws, "pull-mid", info, project)
    _kill_at(env, ws, "merge-mid", info, project)
    w = Workspace.open(ws)
    assert w.stage(1) == "gate"
    json.loads((ws / "datasets" / "labeled_v001.json").read_text())  # complete JSON (atomic write)
    # killed while training
    _kill_at(env, ws, "retrain", info, project)
    r = cli(env, "al-round", "--iter", "1", "--workspace", str(ws))
    assert r.returncode == 0, r.stderr
    w = Workspace.open(ws)
    assert w.stage(1) == "evaluate"
    assert w.dataset_of_round(1) == 1 and w.dataset_path(0).name == "labeled_v000.json"
    merged = json.loads((ws / "datasets" / "labeled_v001.json").read_text())
    pulled = json.loads((w.round_dir(1) / "pulled.json").read_text())
    rejected = json.loads(json.dumps(w.counts())).get("rejected", 0)
    assert len({a["image_id"] for a in merged["annotations"]}) >= 8 + 6 - rejected
    assert len(pulled["images"]) == 6  # every correction came back
    assert n_tasks(info, project) == 6


def test_label_studio_unreachable_leaves_the_state_unchanged(label_studio, tmp_path):
    info, root, _ = label_studio
    ws, env, _ = make_workspace(root, "al-down", info)
    cfg = (ws / "config.toml").read_text().replace(info.url, "http://127.0.0.1:9")
    (ws / "config.toml").write_text(cfg)
    r = cli(env, "al-round", "--iter", "1", "--workspace", str(ws))
    assert r.returncode == 2 and "cannot reach Label Studio" in r.stderr and "Traceback" not in r.stderr
    w = Workspace.open(ws)
    assert w.stage(1) == "predict" and w.counts().get("pushed", 0) == 0


def test_quickstart_runs_the_whole_loop(tmp_path):
    """The README's main job, at a small size: its own Label Studio, rounds, the random baseline beside them,
    FiftyOne, the table and the learning curve of both strategies (no AP threshold: that is the benchmark's)."""
    env = {**os.environ, "FIFTYONE_DATABASE_DIR": str(tmp_path / "fo_db"), "FIFTYONE_DO_NOT_TRACK": "true"}
    try:
        r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "quickstart", "--dir", str(tmp_path / "q"),
                            "--images", "12", "--labelled", "4", "--val-images", "4", "--rounds", "1",
                            "--batch-size", "4", "--epochs", "1"], env=env, capture_output=True, text=True,
                           timeout=900)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        out = r.stdout
        assert "OKS AP on the validation set per round" in out and "learning curve" in out
        table = out[out.index("OKS AP on the validation set per round"):].splitlines()
        assert "least_confidence" in table[1] and "random" in table[1]
        rows = [line.split() for line in table[3:5]]
        assert [row[0] for row in rows] == ["0", "1"] and rows[0][1] == "4"  # round, labelled images
        assert all(len([x for x in row if x != "|"]) == 2 + 2 * 4 for row in rows)  # 4 groups x 2 strategies
        assert ("target met" in out) != ("TARGET MISSED" in out)  # the verdict, whichever it is
        png = tmp_path / "q" / "learning_curve.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / "q" / "workspace" / "learning_curve.png").is_file()
        st = json.loads(cli(env, "status", "--workspace", str(tmp_path / "q" / "workspace"), "--json").stdout)
        assert {m["round"] for m in st["metrics"]} == {0, 1}
        base = json.loads(cli(env, "status", "--workspace", str(tmp_path / "q" / "baseline-random"), "--json").stdout)
        assert {m["round"] for m in base["metrics"]} == {0, 1}
    finally:
        cli(env, "labelstudio", "stop", "--dir", str(tmp_path / "q" / "labelstudio"))
