"""`spinetrack download` against a local server with the Hub's URL layout, headers and range support."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from spinetrack_tools import synth
from spinetrack_tools.download import DownloadError, check_disk_space, download, member_target

from .hub_server import FakeHub

REPO = "saifkhichi96/spinetrack"
SPLITS = {"val2017": 6, "train-real-yoga": 4, "train-unreal": 3}
BIG = 12 << 20  # train-unreal members are this large, so images.zip spans several of the Hub client's
# 10 MB download chunks (the granularity at which an interrupted transfer is saved)


def _jpeg(i: int, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 40 + i).convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def dataset() -> dict[str, bytes]:
    """annotations.zip and images.zip laid out as on the Hub, with small images."""
    ann, img = io.BytesIO(), io.BytesIO()
    with zipfile.ZipFile(ann, "w", zipfile.ZIP_DEFLATED) as za, zipfile.ZipFile(img, "w") as zi:
        for k, (split, n) in enumerate(SPLITS.items()):
            coco = synth.generate(n, seed=k)
            for im in coco["images"]:
                im["width"], im["height"] = 160, 120
                im["file_name"] = f"{split}_{im['id']:06d}.jpg"
                data = _jpeg(im["id"], (160, 120)) if split != "train-unreal" else os.urandom(BIG)
                zi.writestr(f"images/{split}/{im['file_name']}", data)
            coco["annotations"] = []  # keypoints of other image sizes would not fit: validate the schema
            za.writestr(f"annotations/person_keypoints_{split}.json", json.dumps(coco))
    return {"annotations.zip": ann.getvalue(), "images.zip": img.getvalue(), "README.md": b"# SpineTrack\n"}


@pytest.fixture
def hub(dataset):
    with FakeHub(REPO, dict(dataset), revisions={"v1.0": "0123456789abcdef0123456789abcdef01234567"}) as h:
        yield h


@pytest.fixture(autouse=True)
def _quiet_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".spinetrack" not in p.parts}


def _expected(dataset, splits=None) -> dict[str, bytes]:
    out = {}
    for name in ("annotations.zip", "images.zip"):
        with zipfile.ZipFile(io.BytesIO(dataset[name])) as zf:
            for info in zf.infolist():
                split = Path(info.filename).parts[1]
                if name == "images.zip" and splits is not None and split not in splits:
                    continue
                out[info.filename] = zf.read(info)
    return out


def test_full_download_layout_and_verification(tmp_path, hub, dataset):
    res = download(tmp_path / "d", endpoint=hub.url)
    assert _tree(tmp_path / "d") == _expected(dataset)
    assert res.plan.commit == hub.commit
    assert [p.name for p in res.annotation_files] == sorted(f"person_keypoints_{s}.json" for s in SPLITS)
    # the archive was removed after extraction, the annotations archive kept and marked verified
    downloads = tmp_path / "d" / ".spinetrack" / "downloads"
    assert not (downloads / "images.zip").exists()
    assert (downloads / "annotations.zip.verified").read_text() == hub.sha256("annotations.zip")


def test_rerun_skips_what_is_complete(tmp_path, hub):
    download(tmp_path, endpoint=hub.url)
    before = len(hub.requests)
    download(tmp_path, endpoint=hub.url)
    new = hub.requests[before:]
    assert not [r for r in new if r[1] == "/cdn/annotations.zip"]
    # images: only the central directory is read again (range requests), never the archive
    assert all(r[2] is not None for r in new if r[1] == "/cdn/images.zip")
    assert sum(1 for r in new if r[1] == "/cdn/images.zip") <= 2


def test_splits_fetch_only_their_members_by_range(tmp_path, hub, dataset):
    res = download(tmp_path, splits=["val2017"], endpoint=hub.url)
    assert _tree(tmp_path) == _expected(dataset, {"val2017"})
    gets = hub.content_requests("images.zip")
    assert gets and all(r is not None and r.startswith("bytes=") for r in gets)
    assert res.range_bytes < 0.5 * len(dataset["images.zip"])
    assert [p.name for p in res.annotation_files] == ["person_keypoints_val2017.json"]
    # another split later: the first one is skipped, the new one added
    download(tmp_path, splits=["train-real-yoga"], endpoint=hub.url)
    assert _tree(tmp_path) == _expected(dataset, {"val2017", "train-real-yoga"})


def test_unknown_split_is_a_clear_error(tmp_path, hub):
    with pytest.raises(DownloadError, match="unknown split.*val2018.*the archive has"):
        download(tmp_path, splits=["val2018"], endpoint=hub.url)
    assert not (tmp_path / "images").exists()


def test_interrupted_transfer_resumes_with_a_range_request(tmp_path, hub, dataset):
    hub.cut_once["images.zip"] = 25 << 20
    download(tmp_path, endpoint=hub.url)
    whole = [r for r in hub.content_requests("images.zip") if r is None or r.endswith("-")]
    assert whole[0] is None and whole[1] == f"bytes={20 << 20}-"  # resumed after the last saved chunk
    assert _tree(tmp_path) == _expected(dataset)


def test_killed_download_resumes_from_its_part_file(tmp_path, hub, dataset):
    """A real `spinetrack download` process is killed mid-transfer; the re-run continues from the part."""
    size = len(dataset["images.zip"])
    hub.stall["images.zip"] = size // 2
    dest = tmp_path / "d"
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    cmd = [sys.executable, "-m", "spinetrack_tools", "download", "--dest", str(dest)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    part = dest / ".spinetrack" / "downloads" / "images.zip.part"
    deadline = time.time() + 60
    while time.time() < deadline and not (part.exists() and part.stat().st_size > 0):
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = part.stat().st_size
    assert 0 < saved < size
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert hub.content_requests("images.zip")[-1] == f"bytes={saved}-"
    assert _tree(dest) == _expected(dataset)
    assert "validate annotations/person_keypoints_val2017.json" in r.stdout


def test_checksum_mismatch_is_caught_and_the_file_discarded(tmp_path, hub):
    hub.corrupt.add("annotations.zip")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(tmp_path, annotations_only=True, endpoint=hub.url)
    downloads = tmp_path / ".spinetrack" / "downloads"
    assert not any(downloads.glob("annotations.zip*"))
    assert not (tmp_path / "annotations").exists()
    hub.corrupt.clear()
    download(tmp_path, annotations_only=True, endpoint=hub.url)
    assert (tmp_path / "annotations" / "person_keypoints_val2017.json").is_file()


def test_user_files_are_not_overwritten_without_force(tmp_path, hub, dataset):
    mine = tmp_path / "annotations" / "person_keypoints_val2017.json"
    mine.parent.mkdir(parents=True)
    mine.write_text("my edits")
    with pytest.raises(DownloadError, match="differs from the archive.*--force"):
        download(tmp_path, annotations_only=True, endpoint=hub.url)
    assert mine.read_text() == "my edits"
    download(tmp_path, annotations_only=True, force=True, endpoint=hub.url)
    assert mine.read_bytes() == _expected(dataset)["annotations/person_keypoints_val2017.json"]


@pytest.mark.parametrize("name", ["../evil.json", "/etc/evil.json", "annotations/../../evil.json", "C:/evil"])
def test_unsafe_member_paths_are_refused(name):
    with pytest.raises(DownloadError, match="unsafe path"):
        member_target(zipfile.ZipInfo(name), "annotations")


def test_unsafe_archive_writes_nothing(tmp_path, dataset):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("annotations/ok.json", "{}")
        zf.writestr("../../escape.json", "{}")
    with FakeHub(REPO, {"annotations.zip": buf.getvalue()}) as h:
        with pytest.raises(DownloadError, match="unsafe path"):
            download(tmp_path / "d", annotations_only=True, endpoint=h.url)
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "d" / "annotations").exists()


def test_symlinks_are_refused():
    info = zipfile.ZipInfo("annotations/link.json")
    info.external_attr = (0o120777 << 16)
    with pytest.raises(DownloadError, match="symbolic link"):
        member_target(info, "annotations")


def test_dry_run_lists_sizes_and_writes_nothing(tmp_path, hub, dataset):
    lines: list[str] = []
    download(tmp_path / "d", dry_run=True, endpoint=hub.url, echo=lines.append)
    text = "\n".join(lines)
    assert "annotations.zip" in text and "images.zip" in text and "fetch" in text
    assert "images/val2017/" in text and f"{SPLITS['val2017']} files" in text
    assert not (tmp_path / "d").exists()
    assert not hub.content_requests("annotations.zip")


def test_revision_and_errors(tmp_path, hub):
    res = download(tmp_path, annotations_only=True, revision="v1.0", endpoint=hub.url)
    assert res.plan.commit == hub.commit
    assert any(p.startswith(f"/api/datasets/{REPO}/revision/v1.0") for _, p, _ in hub.requests)
    with pytest.raises(DownloadError, match="revision 'nope' not found"):
        download(tmp_path, revision="nope", endpoint=hub.url)
    with pytest.raises(DownloadError, match="cannot reach the Hub|not found"):
        download(tmp_path, endpoint="http://127.0.0.1:9")


def test_token_is_sent_from_the_usual_places(tmp_path, dataset, monkeypatch):
    with FakeHub(REPO, dict(dataset), token="s3cret") as h:
        with pytest.raises(DownloadError, match="not found, or not visible|authentication"):
            download(tmp_path, annotations_only=True, endpoint=h.url)
        monkeypatch.setenv("HF_TOKEN", "s3cret")
        download(tmp_path, splits=["val2017"], endpoint=h.url)
    assert (tmp_path / "images" / "val2017").is_dir()


def test_server_without_range_support_fails_clearly_for_splits(tmp_path, hub):
    hub.ignore_ranges = True
    with pytest.raises(DownloadError, match="ignored the range request"):
        download(tmp_path, splits=["val2017"], endpoint=hub.url)


def test_disk_space_check(tmp_path):
    check_disk_space(tmp_path, 1000, "a small file")
    with pytest.raises(DownloadError, match="not enough disk space for images.zip"):
        check_disk_space(tmp_path / "not" / "yet", 10**18, "images.zip")


def test_cli_download_and_bad_input(tmp_path, hub):
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "download", "--dest", str(tmp_path / "d"),
                        "--splits", "val2017,train-real-yoga"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "images by range requests" in r.stdout and "0 errors" in r.stdout
    assert (tmp_path / "d" / ".spinetrack" / "reports" / "validate_person_keypoints_val2017.json").is_file()
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "download", "--dest", str(tmp_path / "e"),
                        "--revision", "nope"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error:") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr
