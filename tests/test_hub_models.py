"""Released models by name: a local Hub stand-in serving random-weight ONNX files under the real repository
paths, `spinetrack predict --model spinepose-small --detector rfdetr-small` on real photos against the spinepose
package's own classes, caching, offline use, pinning, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from spinetrack_tools.inference import hub as H
from spinetrack_tools.inference import transforms as T
from spinetrack_tools.inference.model import RFDETR, Detector, load_detector
from spinetrack_tools.io import InputError
from spinetrack_tools.pool import image_ids, list_images
from spinetrack_tools.skeleton import SPINETRACK37

from .hub_server import FakeHub, hub_env as _env
from .onnx_models import RFDETR_PERSONS, detector_model, rfdetr_model, rfdetr_tables, simcc_model

PHOTOS = Path(__file__).parent / "data" / "photos"
SMALL_V2 = H.spec_for("spinepose-small@v2")
SMALL_V1 = H.spec_for("spinepose-small@v1")
DET = H.spec_for("rfdetr-small")
PIN = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture(scope="module")
def hub_files(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """The two repositories with random-weight models under the package's file names (no medium, large,
    xlarge: asking for them is a file missing on the Hub)."""
    d = tmp_path_factory.mktemp("hub_models")
    det = rfdetr_model(d / "det.onnx", *rfdetr_tables(), size=DET.input_wh[0])
    return {
        H.POSE_REPO: {SMALL_V2.filename: simcc_model(d / "v2.onnx", seed=1).read_bytes(),
                      SMALL_V1.filename: simcc_model(d / "v1.onnx", seed=2).read_bytes(),
                      "README.md": b"# SpinePose\n"},
        H.DETECTOR_REPO: {DET.filename: det.read_bytes()},
    }


@pytest.fixture
def hub(hub_files):
    with FakeHub(None, models={r: dict(f) for r, f in hub_files.items()}, revisions={"v1.0": PIN}) as h:
        yield h


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spinetrack_tools", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


def _predict(env: dict[str, str], out: Path, model: str = "spinepose-small", detector: str = "rfdetr-small",
             *extra: str) -> subprocess.CompletedProcess:
    return _cli(["predict", "--model", model, "--detector", detector, "--images", PHOTOS, "--out", out, *extra], env)


def _one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


def _cached(home: Path, spec: H.ModelSpec, commit: str) -> Path:
    return home / "hub" / f"models--{spec.repo_id.replace('/', '--')}" / "snapshots" / commit / spec.filename


def _content_gets(hub: FakeHub, since: int = 0) -> list[str]:
    return [p for m, p, _ in hub.requests[since:] if m == "GET" and p.startswith("/cdn/")]


# --- the names are the package's -------------------------------------------------------------------------

def test_names_repositories_and_files_are_those_of_the_package(spinepose_package):
    mode = spinepose_package.SpinePoseEstimator.MODE
    assert set(mode) == set(H.SIZES)
    for size, cfg in mode.items():
        det = H.spec_for(f"rfdetr-{size}")
        assert cfg["det_rfdetr"] == f"https://huggingface.co/{det.repo_id}/resolve/main/{det.filename}"
        assert tuple(cfg["det_rfdetr_input_size"]) == det.input_wh[::-1]
        for version in ("v1", "v2"):
            try:
                spec = H.spec_for(f"spinepose-{size}@{version}")
            except H.UnknownModelError:
                assert size == "xlarge" and version == "v2"
                continue
            family = spinepose_package.SpinePoseEstimator._resolve_model_name(None, version)
            url = cfg["pose"] % family if "%s" in cfg["pose"] else cfg["pose"]
            assert url == f"https://huggingface.co/{spec.repo_id}/resolve/main/{spec.filename}"
            assert tuple(cfg["pose_input_size"]) == spec.input_wh
            assert spec.smooth_spine == (version == "v1")
    assert H.spec_for("spinepose-small") == H.spec_for("spinepose-small@latest") == SMALL_V2
    assert H.spec_for(H.DEFAULT_POSE).name == "spinepose-medium@v2" and H.spec_for(H.DEFAULT_DETECTOR).input_wh == \
        tuple(mode["medium"]["det_rfdetr_input_size"])
    assert H.spec_for("spinepose-xlarge") == H.spec_for("spinepose-xlarge@v1")


def test_wrong_names_suggest_the_known_ones():
    with pytest.raises(H.UnknownModelError, match="did you mean spinepose-small"):
        H.spec_for("spinepose-smal", "pose")
    with pytest.raises(H.UnknownModelError, match="exists only as v1"):
        H.spec_for("spinepose-xlarge@v2")
    with pytest.raises(H.UnknownModelError, match="unknown version 'v3'"):
        H.spec_for("spinepose-large@v3")
    with pytest.raises(H.UnknownModelError, match="unknown detector name.*rfdetr-small"):
        H.spec_for("spinepose-small", "detector")
    assert H.looks_like_path("models/x.onnx") and H.looks_like_path("x.ONNX") and not H.looks_like_path("rfdetr-small")


def test_v1_smoothing_is_the_packages(spinepose_package):
    rng = np.random.default_rng(0)
    kp, sc = rng.uniform(0, 500, (5, SPINETRACK37.num_keypoints, 2)), rng.uniform(0, 1, (5, SPINETRACK37.num_keypoints))
    ref, _ = spinepose_package.SpinePoseEstimator._smooth_spine(spinepose_package.SpinePoseEstimator, kp.copy(),
                                                                 sc.copy())
    ours = T.smooth_chain(kp, SPINETRACK37.spine_chain)
    assert np.abs(ours - ref).max() < 1e-9 and not np.allclose(ours, kp)


# --- the RF-DETR detector ----------------------------------------------------------------------------------

@pytest.mark.parametrize("crowded", [False, True])
def test_rfdetr_is_the_packages_on_real_photos(tmp_path, spinepose_package, crowded):
    path = rfdetr_model(tmp_path / "det.onnx", *rfdetr_tables(crowded), size=384)
    ours = load_detector(path)
    assert isinstance(ours, RFDETR) and ours.score_thr == 0.3 and ours.num_select == 300
    ref = spinepose_package.RFDETR(str(path), model_input_size=(384, 384))
    for f in list_images(PHOTOS):
        img = cv2.imread(str(f))
        boxes, scores = ours(img)
        r = ref.predict(img)
        assert len(boxes) == len(r["xyxy"]) == (1 if crowded else len(RFDETR_PERSONS))
        assert np.abs(np.hstack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]]) - r["xyxy"]).max() < 1e-3
        assert np.abs(scores - r["confidence"]).max() < 1e-6
        # the input matters: the mirrored image scores differently
        assert np.abs(ref.predict(img[:, ::-1].copy())["confidence"] - scores).max() > 1e-4


def test_rfdetr_keeps_persons_over_the_threshold_in_the_top_k(tmp_path):
    det = load_detector(rfdetr_model(tmp_path / "d.onnx", *rfdetr_tables(), size=384, input_weight=0.0))
    img = np.zeros((400, 600, 3), np.uint8)
    boxes, scores = det(img)
    expected = np.array([b for _, _, *b in RFDETR_PERSONS])  # in score order, scaled to the image
    cxcy, wh = expected[:, :2] * [600, 400], expected[:, 2:] * [600, 400]
    assert np.allclose(boxes, np.hstack([cxcy - wh / 2, wh]), atol=1e-3)
    assert np.allclose(scores, 1 / (1 + np.exp(-np.array([lg for _, lg, *_ in RFDETR_PERSONS]))), atol=1e-6)
    crowded = load_detector(rfdetr_model(tmp_path / "c.onnx", *rfdetr_tables(True), size=384, input_weight=0.0))
    assert len(crowded(img)[0]) == 1  # the 0.73 person is outside the top 300
    crowded.num_select = 400
    assert len(crowded(img)[0]) == 2
    assert len(load_detector(tmp_path / "d.onnx", score_thr=0.6)(img)[0]) == 3
    boxes, logits = rfdetr_tables()
    logits[:, 1] = -6.0
    boxes, scores = load_detector(rfdetr_model(tmp_path / "n.onnx", boxes, logits, size=384))(img)
    assert boxes.shape == (0, 4) and scores.shape == (0,)  # nobody


def test_the_detector_format_is_read_from_the_onnx_outputs(tmp_path):
    nms = detector_model(tmp_path / "nms.onnx", np.array([[10, 20, 110, 220, 0.9]]), np.array([0]))
    assert isinstance(load_detector(nms), Detector) and load_detector(nms).score_thr == 0.5
    with pytest.raises(InputError, match="neither RF-DETR"):
        load_detector(simcc_model(tmp_path / "pose.onnx", hw=(64, 64)))
    with pytest.raises(InputError, match="NMS exported"):
        Detector.load(rfdetr_model(tmp_path / "rf.onnx", *rfdetr_tables(), size=64))


# --- predict by name --------------------------------------------------------------------------------------

def _package_predictions(pkg, det_path: Path, pose_path: Path, v1: bool = False) -> dict[int, tuple]:
    """Per image id: the package's boxes (xyxy), keypoints and scores, RFDETR + RTMPose (v1: its estimator)."""
    if v1:
        class Local(pkg.SpinePoseEstimator):
            MODE = {"small": {"det_rfdetr": str(det_path), "det_rfdetr_input_size": (384, 384),
                              "pose": str(pose_path), "pose_input_size": (192, 256)}}

        est = Local(mode="small", model_version="v1", detector="rfdetr")
    det = pkg.RFDETR(str(det_path), model_input_size=(384, 384))
    pose = pkg.RTMPose(str(pose_path), model_input_size=(192, 256))
    out = {}
    files = list_images(PHOTOS)
    for iid, f in zip(image_ids(files), files):
        img = cv2.imread(str(f))
        boxes = det.predict(img)["xyxy"]
        kp, sc = est(img) if v1 else pose(img, bboxes=boxes)
        out[iid] = (boxes, kp, sc)
    return out


def _compare(pred_path: Path, ref: dict[int, tuple]) -> None:
    preds = json.loads(pred_path.read_text())
    k = SPINETRACK37.num_keypoints
    assert len(preds) == sum(len(b) for b, _, _ in ref.values()) > 0
    for iid, (boxes, kp, sc) in ref.items():
        mine = [p for p in preds if p["image_id"] == iid]
        assert len(mine) == len(boxes) >= 1  # the same persons, in the detector's order
        xywh = np.array([p["person_box"] for p in mine])
        assert np.abs(np.hstack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]) - boxes).max() < 1e-3
        trip = np.array([p["keypoints"] for p in mine]).reshape(len(mine), k, 3)
        valid = sc > 0
        assert valid.mean() > 0.3
        assert np.abs(trip[..., :2][valid] - kp[valid]).max() < 0.01
        assert np.abs(trip[..., 2] - sc).max() < 1e-4


def test_predict_by_name_equals_the_package_then_caches(hub, tmp_path, spinepose_package):
    home = tmp_path / "hf"
    env = _env(hub, home)
    r = _predict(env, tmp_path / "p1.json")
    assert r.returncode == 0, r.stderr
    assert len(_content_gets(hub)) == 2  # the pose model and the detector, once each
    ref = _package_predictions(spinepose_package, _cached(home, DET, hub.commit), _cached(home, SMALL_V2, hub.commit))
    _compare(tmp_path / "p1.json", ref)

    before = len(hub.requests)  # a second run downloads nothing: one metadata call and one HEAD per file
    r = _predict(env, tmp_path / "p2.json")
    assert r.returncode == 0, r.stderr
    new = hub.requests[before:]
    assert not _content_gets(hub, before) and len(new) == 4, new
    assert {m for m, _, _ in new} == {"GET", "HEAD"} and all(p.startswith("/api/models/") for m, p, _ in new
                                                              if m == "GET")
    assert (tmp_path / "p2.json").read_bytes() == (tmp_path / "p1.json").read_bytes()

    before = len(hub.requests)  # offline with a warm cache: no request at all
    r = _predict({**env, "HF_HUB_OFFLINE": "1"}, tmp_path / "p3.json")
    assert r.returncode == 0, r.stderr
    assert len(hub.requests) == before
    assert (tmp_path / "p3.json").read_bytes() == (tmp_path / "p1.json").read_bytes()

    r = _predict(_env(None, home), tmp_path / "p4.json")  # the Hub unreachable, warm cache: the cached files
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p4.json").read_bytes() == (tmp_path / "p1.json").read_bytes()

    r = _predict(env, tmp_path / "p5.json", str(_cached(home, SMALL_V2, hub.commit)),
                 str(_cached(home, DET, hub.commit)))  # paths work where names do
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p5.json").read_bytes() == (tmp_path / "p1.json").read_bytes()


def test_v1_models_get_the_smoothed_spine_as_in_the_package(hub, tmp_path, spinepose_package):
    home = tmp_path / "hf"
    r = _predict(_env(hub, home), tmp_path / "v1.json", "spinepose-small@v1")
    assert r.returncode == 0, r.stderr
    det, pose = _cached(home, DET, hub.commit), _cached(home, SMALL_V1, hub.commit)
    _compare(tmp_path / "v1.json", _package_predictions(spinepose_package, det, pose, v1=True))
    with pytest.raises(AssertionError):  # without the post-process the spine differs
        _compare(tmp_path / "v1.json", _package_predictions(spinepose_package, det, pose))


def test_revision_pinning(hub, tmp_path):
    home = tmp_path / "hf"
    env = _env(hub, home)
    r = _predict(env, tmp_path / "p.json", "spinepose-small", "rfdetr-small", "--revision", "v1.0")
    assert r.returncode == 0, r.stderr
    paths = [p for _, p, _ in hub.requests]
    assert f"/api/models/{H.POSE_REPO}/revision/v1.0" in paths
    assert f"/{H.POSE_REPO}/resolve/v1.0/{SMALL_V2.filename}" in paths
    assert _cached(home, SMALL_V2, PIN).is_file()
    r = _predict({**env, "HF_HUB_OFFLINE": "1"}, tmp_path / "q.json", "spinepose-small", "rfdetr-small",
                 "--revision", "v1.0")  # the pinned revision is found in the cache offline
    assert r.returncode == 0, r.stderr
    _one_line_error(_predict(env, tmp_path / "x.json", "spinepose-small", "rfdetr-small", "--revision", "nope"),
                    "revision 'nope' not found")
    _one_line_error(_predict(env, tmp_path / "x.json", str(PHOTOS / "none.onnx"), "rfdetr-small", "--revision", "v1.0"),
                    "a revision applies to model names")
    assert not (tmp_path / "x.json").exists()


def test_errors_are_one_line_and_exit_2(hub, tmp_path):
    home = tmp_path / "hf"
    env = _env(hub, home)
    out = tmp_path / "out.json"
    _one_line_error(_predict(env, out, "spinepose-smal"), "unknown pose name", "did you mean spinepose-small")
    _one_line_error(_predict(env, out, "spinepose-small", "rfdetr-tiny"), "unknown detector name", "rfdetr-small")
    _one_line_error(_predict(env, out, "spinepose-xlarge@v2"), "exists only as v1")
    assert not hub.requests  # names are checked before any request
    _one_line_error(_predict(env, out, "spinepose-medium"), SMALL_V2.filename.replace("-s_", "-m_"), "not on the Hub")

    hub.corrupt.add(SMALL_V2.filename)
    _one_line_error(_predict(env, out, "spinepose-small"), "checksum mismatch", hub.sha256(SMALL_V2.filename,
                                                                                             H.POSE_REPO))
    blobs = home / "hub" / f"models--{H.POSE_REPO.replace('/', '--')}" / "blobs"
    assert not list(blobs.iterdir()) and not _cached(home, SMALL_V2, hub.commit).exists()  # nothing bad kept
    hub.corrupt.clear()

    _one_line_error(_predict(_env(None, home), out), "cannot reach the Hub", "not in the cache")
    _one_line_error(_predict({**env, "HF_HUB_OFFLINE": "1"}, out), "HF_HUB_OFFLINE is set", "not in the cache")
    assert not out.exists()
    assert _predict(env, out).returncode == 0  # and once the problems are gone, it works


def test_a_token_is_sent_from_hf_token(hub_files, tmp_path):
    with FakeHub(None, models={r: dict(f) for r, f in hub_files.items()}, token="s3cret") as h:
        _one_line_error(_predict(_env(h, tmp_path / "hf"), tmp_path / "o.json"), "authentication")
        r = _predict(_env(h, tmp_path / "hf", HF_TOKEN="s3cret"), tmp_path / "o.json")
        assert r.returncode == 0, r.stderr


def test_models_command_lists_names_and_the_cache(hub, tmp_path):
    home = tmp_path / "hf"
    env = _env(hub, home)
    r = _cli(["models"], env)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:] if not line.startswith("cache:")}
    assert set(rows) == {H.short_name(s) for s in H.catalogue()}
    assert all(line.rstrip().endswith(" -") for line in rows.values())  # nothing cached yet
    assert not hub.requests
    r = _cli(["models", "--download", "spinepose-small@v1", "--download", "rfdetr-small", "--hub"], env)
    assert r.returncode == 0, r.stderr
    assert "sha256 verified" in r.stdout
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith(("spinepose", "rfdetr"))}
    mb = f"{len(hub.models[H.POSE_REPO][SMALL_V1.filename]) / 1e6:.1f} MB"
    assert rows["spinepose-small@v1"].rstrip().endswith(mb) and rows["rfdetr-small"].rstrip().endswith("MB")
    assert "not on the Hub" in rows["spinepose-medium"] and rows["spinepose-small"].rstrip().endswith(" -")
    _one_line_error(_cli(["models", "--download", "spinepose-huge"], env), "unknown model name")


def test_fetch_in_process(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    path = H.fetch(SMALL_V2, endpoint=hub.url)
    assert path.read_bytes() == hub.models[H.POSE_REPO][SMALL_V2.filename]
    assert H.cached_file(SMALL_V2) == path and H.cached_file(SMALL_V1) is None
    model = H.load_pose_model("spinepose-small@v1", endpoint=hub.url)
    assert model.spine_chain == tuple(SPINETRACK37.spine_chain)
    assert H.load_pose_model("spinepose-small", endpoint=hub.url).spine_chain == ()
    assert isinstance(H.load_person_detector("rfdetr-small", endpoint=hub.url), RFDETR)
    with pytest.raises(H.ModelNotOnHubError):
        H.fetch(H.spec_for("rfdetr-large"), endpoint=hub.url)
    path.write_bytes(b"changed on disk")  # a cached file that no longer matches is caught and removed
    with pytest.raises(H.ChecksumMismatchError):
        H.fetch(SMALL_V2, endpoint=hub.url)
    assert H.cached_file(SMALL_V2) is None

    path = H.fetch(SMALL_V2, endpoint=hub.url)  # offline, the cached file is checked against its blob's name
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(hub.requests)
    assert H.fetch(SMALL_V2, endpoint=hub.url) == path and len(hub.requests) == before
    path.write_bytes(b"changed on disk")
    with pytest.raises(H.ChecksumMismatchError):
        H.fetch(SMALL_V2, endpoint=hub.url)
    with pytest.raises(H.NotCachedError, match="HF_HUB_OFFLINE"):
        H.fetch(SMALL_V2, endpoint=hub.url)
