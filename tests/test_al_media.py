"""Active learning on your own media: photos or a video with no boxes, no labels and maybe no validation set;
the released SpinePose and RF-DETR by name from a local Hub stand-in; the real Label Studio."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest

from spinetrack_tools import synth
from spinetrack_tools.inference import hub as H
from spinetrack_tools.inference.model import load_detector
from spinetrack_tools.persons import Persons
from spinetrack_tools.pool import list_images
from spinetrack_tools.skeleton import SPINETRACK37

from .hub_server import FakeHub, hub_env
from .onnx_models import RFDETR_PERSONS, released_repos, rfdetr_model, rfdetr_tables, simcc_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PHOTOS = Path(__file__).parent / "data" / "photos"
SERVED = (H.DEFAULT_POSE, H.DEFAULT_DETECTOR, "spinepose-small", "rfdetr-small")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with FakeHub(None, models=released_repos(tmp_path_factory.mktemp("released"), SERVED)) as h:
        yield h


def cli(env: dict, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spinetrack_tools", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600)


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


def ls_env(served: FakeHub, label_studio, home: Path) -> dict:
    info, root, _ = label_studio
    return hub_env(served, home, LABEL_STUDIO_API_KEY=info.token, LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(root))


def tasks(info, project: str) -> list[dict]:
    from spinetrack_tools.labelstudio.client import Connection

    conn = Connection.open(info.url, info.token)
    return sorted(conn.iter_tasks(conn.project_id(project)), key=lambda t: t["data"]["file_name"])


def served_image(info, url: str) -> bytes:
    """The bytes Label Studio serves for a task's image URL (its local-files view)."""
    from spinetrack_tools.labelstudio.client import Connection

    r = Connection.open(info.url, info.token).ls._client_wrapper.httpx_client.request(url.lstrip("/"), method="GET")
    assert r.status_code == 200, r.status_code
    return r.content


def people_in(coco_images: list[dict], broken: set[int] = frozenset()) -> dict:
    """Labels an annotator could give: on each image one plausible synthetic person fitted into the box of the
    stand-in detector's first person; on the ``broken`` image ids the spine chain is reversed (implausible)."""
    src = Persons.from_coco(synth.generate(len(coco_images), seed=3, persons_per_image=(1, 1), fk="numpy",
                                           postures=("standing",)))
    _, _, cx, cy, bw, bh = RFDETR_PERSONS[0]
    kp, boxes = src.keypoints.copy(), np.zeros((len(src), 4))
    for i, im in enumerate(coco_images):
        w, h = im["width"], im["height"]
        s = 0.9 * min(bw * w / src.boxes[i, 2], bh * h / src.boxes[i, 3])
        centre = src.boxes[i, :2] + src.boxes[i, 2:] / 2
        kp[i, :, :2] = (kp[i, :, :2] - centre) * s + (cx * w, cy * h)
        boxes[i] = (cx * w - src.boxes[i, 2] * s / 2, cy * h - src.boxes[i, 3] * s / 2, *(src.boxes[i, 2:] * s))
        if im["id"] in broken:
            chain = SPINETRACK37.spine_chain
            kp[i, chain] = kp[i, chain[::-1]]
    ids = [im["id"] for im in coco_images]
    p = Persons.build(SPINETRACK37, kp, ids, ann_ids=np.arange(1, len(ids) + 1), boxes=boxes,
                      areas=boxes[:, 2] * boxes[:, 3])
    return {**p.to_coco(), "images": coco_images}


def test_a_round_from_photos_with_no_boxes_labels_or_validation_set(label_studio, served, tmp_path):
    """The README's path: `init --pool photos/` with every default, then a round pushes the detector's persons."""
    info, root, _ = label_studio
    data = root / "media-photos"
    shutil.copytree(PHOTOS, data / "photos")
    ws, env = data / "ws", ls_env(served, label_studio, tmp_path / "hf")
    r = cli(env, "init", ws, "--pool", data / "photos", "--batch-size", 3, "--project", "al-photos",
            "--labelstudio-url", info.url)
    assert r.returncode == 0, r.stderr
    assert "4 pool images, 0 labelled" in r.stdout and "AP not measured" in r.stdout
    cfg = tomllib.loads((ws / "config.toml").read_text())
    assert cfg["model"] == {"onnx": "spinepose-medium@v2", "revision": served.commit}  # the name, pinned
    assert cfg["detector"] == {"model": "rfdetr-medium", "revision": served.commit}
    assert "val" not in cfg["data"] and cfg["data"]["images"] == str(data / "photos")

    r = cli(env, "al-round", "--iter", 1, "--workspace", ws)
    assert r.returncode == 0, r.stderr
    assert "3 tasks pushed" in r.stdout and "waiting for annotations" in r.stdout
    pushed = tasks(info, "al-photos")
    assert len(pushed) == 3
    det_file = tmp_path / "det.onnx"
    spec = H.spec_for(H.DEFAULT_DETECTOR)
    det_file.write_bytes(served.models[spec.repo_id][spec.filename])
    detector = load_detector(det_file)
    for t in pushed:
        d = t["data"]
        img = cv2.imread(str(data / "photos" / d["file_name"]))
        assert (d["width"], d["height"]) == (img.shape[1], img.shape[0]) and d["persons"] == {}
        rects = [x for x in t["predictions"][0]["result"] if x["type"] == "rectanglelabels"]
        boxes, _ = detector(img)
        assert [x["id"] for x in rects] == [f"n{i}" for i in range(len(boxes))] and len(boxes) == len(RFDETR_PERSONS)
        got = np.array([[x["value"][k] / 100 * s for k, s in (("x", d["width"]), ("y", d["height"]),
                                                               ("width", d["width"]), ("height", d["height"]))]
                        for x in rects])
        assert np.abs(got - boxes).max() < 1e-6  # the detector's persons, as it found them
        assert served_image(info, d["image"]) == (data / "photos" / d["file_name"]).read_bytes()

    pool = json.loads((ws / "pool.json").read_text())
    chosen = [im for im in pool["images"] if im["file_name"] in {t["data"]["file_name"] for t in pushed}]
    broken = chosen[0]["id"]
    (data / "truth.json").write_text(json.dumps(people_in(chosen, {broken})))
    r = cli(env, "annotate-sim", "--workspace", ws, "--truth", data / "truth.json")
    assert r.returncode == 0 and "3 annotations submitted" in r.stdout, r.stderr
    r = cli(env, "al-round", "--iter", 1, "--workspace", ws)
    assert r.returncode == 0, r.stderr
    assert "gate passed 2 images, sent 1 back" in r.stdout and "retrain skipped" in r.stdout
    assert "AP not measured" in r.stdout and "round 1: done" in r.stdout

    st = json.loads(cli(env, "status", "--workspace", ws, "--json").stdout)
    assert st["samples"] == {"merged": 2, "rejected": 1, "pool": 1} and st["metrics"] == []
    assert [(n["round"], n["stage"]) for n in st["notes"]] == [(1, "evaluate"), (1, "retrain")]
    v0 = json.loads((ws / "datasets" / "labeled_v000.json").read_text())
    v1 = json.loads((ws / "datasets" / "labeled_v001.json").read_text())
    assert v0["images"] == [] and v0["categories"][0]["keypoints"] == list(SPINETRACK37.names)
    assert sorted(im["id"] for im in v1["images"]) == sorted(im["id"] for im in chosen if im["id"] != broken)
    assert len(v1["annotations"]) == 2 and all(a["provenance"]["round"] == 1 for a in v1["annotations"])
    assert [t["data"].get("review", "")[:12] for t in tasks(info, "al-photos")
            if t["data"]["image_id"] == broken] == ["needs review"]

    r = cli(env, "al-round", "--iter", 2, "--workspace", ws, "--until", "select")  # the loop goes on
    assert r.returncode == 0 and "selected 1 of 1 pool images" in r.stdout, r.stderr


def test_a_video_pool_with_a_validation_set(label_studio, served, tmp_path):
    """A video sampled into frames in the workspace, the small model (its paired detector by default), AP of
    round 0 and round 1 on a validation set."""
    info, root, _ = label_studio
    data = root / "media-video"
    data.mkdir()
    writer = cv2.VideoWriter(str(data / "jump.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(12):
        writer.write(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    writer.release()
    shutil.copytree(PHOTOS, data / "val_images")
    val_images = [{"id": i + 1, "file_name": p.name, "width": int(cv2.imread(str(p)).shape[1]),
                   "height": int(cv2.imread(str(p)).shape[0])} for i, p in enumerate(list_images(data / "val_images"))]
    (data / "val.json").write_text(json.dumps(people_in(val_images)))
    ws, env = data / "ws", ls_env(served, label_studio, tmp_path / "hf")
    r = cli(env, "init", ws, "--pool", data / "jump.avi", "--every", 4, "--model", "spinepose-small", "--val",
            data / "val.json", "--val-images", data / "val_images", "--batch-size", 2, "--project", "al-video",
            "--labelstudio-url", info.url)
    assert r.returncode == 0, r.stderr
    frames = ws / "frames"
    assert sorted(p.name for p in frames.iterdir()) == ["jump_000000.jpg", "jump_000004.jpg", "jump_000008.jpg"]
    cfg = tomllib.loads((ws / "config.toml").read_text())
    assert cfg["detector"]["model"] == "rfdetr-small" and cfg["data"]["images"] == str(frames)
    r = cli(env, "al-round", "--iter", 1, "--workspace", ws)
    assert r.returncode == 0 and "2 tasks pushed" in r.stdout, r.stderr
    for t in tasks(info, "al-video"):
        assert (t["data"]["width"], t["data"]["height"]) == (160, 120)
        assert served_image(info, t["data"]["image"]) == (frames / t["data"]["file_name"]).read_bytes()
    pushed = {t["data"]["file_name"] for t in tasks(info, "al-video")}
    chosen = [im for im in json.loads((ws / "pool.json").read_text())["images"] if im["file_name"] in pushed]
    (data / "truth.json").write_text(json.dumps(people_in(chosen)))
    assert cli(env, "annotate-sim", "--workspace", ws, "--truth", data / "truth.json").returncode == 0
    r = cli(env, "al-round", "--iter", 1, "--workspace", ws)
    assert r.returncode == 0 and "round 1: done" in r.stdout, r.stderr
    st = json.loads(cli(env, "status", "--workspace", ws, "--json").stdout)
    assert {(m["round"], m["grp"]) for m in st["metrics"]} >= {(0, "overall"), (1, "overall")}
    assert [(n["round"], n["stage"]) for n in st["notes"]] == [(1, "retrain")]
    assert (ws / "learning_curve.png").is_file()


def test_a_folder_of_photos_and_a_video_shares_one_images_folder(served, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(PHOTOS / "000000000785.jpg", media)
    writer = cv2.VideoWriter(str(media / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for i in range(6):
        writer.write(np.full((64, 96, 3), 20 * i, np.uint8))
    writer.release()
    env = hub_env(served, tmp_path / "hf")
    r = cli(env, "init", tmp_path / "ws", "--pool", media, "--max-frames", 2, "--model", "spinepose-small",
            "--labelstudio-url", "http://127.0.0.1:9")
    assert r.returncode == 0, r.stderr
    cfg = tomllib.loads((tmp_path / "ws" / "config.toml").read_text())
    assert cfg["data"]["images"] == str(tmp_path)
    pool = json.loads((tmp_path / "ws" / "pool.json").read_text())
    assert [(im["file_name"], im["width"]) for im in pool["images"]] == [
        ("media/000000000785.jpg", 640), ("ws/frames/clip_000000.jpg", 96), ("ws/frames/clip_000003.jpg", 96)]
    r = cli(env, "al-round", "--iter", 1, "--workspace", tmp_path / "ws", "--until", "select")
    assert r.returncode == 0 and "selected 3 of 3 pool images" in r.stdout, r.stderr


def test_the_labelled_set_keeps_its_ids_in_a_detector_pool(tmp_path):
    """In-process, with model files (no Hub): images of --labeled are labelled samples under its ids, and
    pool images whose ids it uses get new ones."""
    from spinetrack_tools.active_learning.workspace import init

    photos = tmp_path / "photos"
    shutil.copytree(PHOTOS, photos)
    names = sorted(p.name for p in list_images(photos))
    lab = people_in([{"id": 40083, "file_name": names[0], "width": 640, "height": 425}])
    (tmp_path / "lab.json").write_text(json.dumps(lab))
    ws = init(tmp_path / "ws", photos, labeled=tmp_path / "lab.json", model=simcc_model(tmp_path / "pose.onnx"),
              detector=rfdetr_model(tmp_path / "det.onnx", *rfdetr_tables(), size=64))
    pool = {im["file_name"]: im["id"] for im in json.loads((ws.path / "pool.json").read_text())["images"]}
    assert pool[names[0]] == 40083 and pool[names[1]] != 40083 and len(set(pool.values())) == 4
    assert ws.counts() == {"labelled": 1, "pool": 3}
    assert ws.config["model"] == {"onnx": str(tmp_path / "pose.onnx")}  # a file: its path, no revision


def test_bad_media_and_arguments_are_one_line_and_exit_2(tmp_path):
    env = hub_env(None, tmp_path / "hf")  # no Hub: every problem is found before anything is fetched
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    ws = tmp_path / "ws"
    one_line_error(cli(env, "init", ws, "--pool", tmp_path / "empty"), "empty", "no images")
    one_line_error(cli(env, "init", ws, "--pool", tmp_path / "broken.mp4"), "broken.mp4")
    one_line_error(cli(env, "init", ws, "--pool", tmp_path / "broken.mp4", "--boxes", tmp_path / "broken.mp4"),
                   "leave out --boxes")
    one_line_error(cli(env, "init", ws, "--pool", PHOTOS, "--model", "spinepose-tiny"), "unknown pose name")
    one_line_error(cli(env, "init", ws, "--pool", PHOTOS, "--detector", "rfdetr-huge"), "unknown detector name")
    one_line_error(cli(env, "init", ws, "--pool", PHOTOS, "--val-images", PHOTOS), "without validation labels")
    assert not ws.exists()
    one_line_error(cli(env, "init", ws, "--pool", PHOTOS), "cannot reach the Hub", "not in the cache")
    assert not ws.exists()  # nothing half-written
    r = cli(env, "init", ws, "--pool", PHOTOS, "--boxes", PHOTOS / "README.md", "--detector", "rfdetr-small")
    assert r.returncode == 2 and "for a pool without --boxes" in r.stderr


def test_init_help_names_the_default_model():
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "init", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and f"Default: {H.DEFAULT_POSE}" in " ".join(r.stdout.split())
    text = " ".join(r.stdout.split())
    medium, small = H.spec_for(H.DEFAULT_POSE), H.spec_for("spinepose-small")
    assert f"({medium.params_m:.1f} M parameters)" in text and f"spinepose-small ({small.params_m:.1f} M)" in text
    assert "AP is NOT measured" in text


def test_retrain_command_decides_how_a_round_retrains(tmp_path):
    """The hook's one place: the default hook skips a model without a checkpoint that is not an RTMPose export
    (tests/test_rtmpose.py has the RTMPose ones) and a workspace without a validation set, a hook of one's own
    gets the model file, and its {val} without a validation set is a one-line error naming config.toml."""
    from spinetrack_tools.active_learning.rounds import retrain_command
    from spinetrack_tools.active_learning.workspace import init
    from spinetrack_tools.io import InputError

    pose, det = simcc_model(tmp_path / "pose.onnx"), rfdetr_model(tmp_path / "det.onnx", *rfdetr_tables(), size=64)
    ws = init(tmp_path / "ws", PHOTOS, model=pose, detector=det)
    assert retrain_command(ws, 1, tmp_path / "out").startswith("retrain skipped")
    own = init(tmp_path / "own", PHOTOS, model=pose, detector=det,
               retrain="{python} my_train.py --data {train} --images {images} --init {init} --from {model} --out {out}")
    cmd = retrain_command(own, 1, tmp_path / "out")
    assert cmd[1:] == ["my_train.py", "--data", str(own.path / "datasets" / "labeled_v000.json"), "--images",
                       str(PHOTOS), "--from", str(pose), "--out", str(tmp_path / "out")]  # no checkpoint: no --init
    ck = tmp_path / "model.pt"
    ck.write_bytes(b"a checkpoint")
    with_ck = init(tmp_path / "ck", PHOTOS, model=pose, detector=det, checkpoint=ck)
    # the default hook validates on {val}: without a validation set the round skips retraining, with a note
    assert retrain_command(with_ck, 1, tmp_path / "out").startswith("retrain skipped: the default hook validates")
    own_val = init(tmp_path / "own_val", PHOTOS, model=pose, detector=det, checkpoint=ck,
                   retrain="{python} my_train.py --data {train} --val {val} --init {init} --out {out}")
    with pytest.raises(InputError, match="config.toml.*no validation set"):
        retrain_command(own_val, 1, tmp_path / "out")
