from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from spinetrack_tools import synth


@pytest.fixture(scope="session")
def synthetic() -> dict[str, Any]:
    """A clean synthetic dataset: 400 images, 1-3 persons each, every posture."""
    return synth.generate(400, seed=7)


@pytest.fixture
def coco(synthetic: dict[str, Any]) -> dict[str, Any]:
    """A private deep copy of the synthetic dataset that a test may modify."""
    return copy.deepcopy(synthetic)


def write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio server for the test session (first start takes about a minute)."""
    pytest.importorskip("label_studio_sdk")
    from spinetrack_tools.labelstudio import server

    folder = tmp_path_factory.mktemp("ls_server")
    root = tmp_path_factory.mktemp("ls_root")
    info = server.start(folder, root)
    yield info, root, folder
    server.stop(folder)


@pytest.fixture(scope="session")
def postgres_folder():
    """A folder for a PostgreSQL of ours. Under root the server runs as another user (it refuses root), who
    must be able to traverse the path: pytest's own temporary folders are private to root, so this one is
    made under the system's temporary folder, traversable (not listable) by others."""
    from spinetrack_tools.labelstudio import postgres

    if postgres.binaries() is None:
        pytest.skip("PostgreSQL's server programs (initdb, postgres) are not installed: apt-get install postgresql "
                    "(scripts/setup.sh does it as root)")
    base = Path(tempfile.mkdtemp(prefix="spinetrack-pg-"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def label_studio_pg(postgres_folder, tmp_path_factory):
    """A real Label Studio on a real PostgreSQL of ours (``labelstudio start --postgres``)."""
    pytest.importorskip("label_studio_sdk")
    from spinetrack_tools.labelstudio import server

    folder = postgres_folder / "ls"
    root = tmp_path_factory.mktemp("ls_pg_root")
    info = server.start(folder, root, postgres=True)
    yield info, root, folder
    server.stop(folder)


@pytest.fixture(scope="session")
def spinepose_package(tmp_path_factory) -> SimpleNamespace:
    """The spinepose package (2.1.0) from PyPI, installed by the test into a private folder: its ``RTMPose``,
    ``RFDETR`` and ``SpinePoseEstimator`` classes."""
    try:
        import spinepose  # noqa: F401
    except ImportError:
        target = tmp_path_factory.mktemp("spinepose_pkg")
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                            "spinepose==2.1.0", "anytree", "OneEuroFilter"], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"could not install spinepose from the package index: {r.stderr[-300:]}")
        sys.path.insert(0, str(target))
    from spinepose.pose_estimator import SpinePoseEstimator
    from spinepose.tools.object_detection.rfdetr import RFDETR
    from spinepose.tools.pose_estimation.rtmpose import RTMPose

    return SimpleNamespace(RTMPose=RTMPose, RFDETR=RFDETR, SpinePoseEstimator=SpinePoseEstimator)
