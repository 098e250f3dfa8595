from __future__ import annotations

import copy
import json
from pathlib import Path
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
