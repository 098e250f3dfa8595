"""Pools of your own media: folders of images and videos, frames sampled once with OpenCV, images-only COCO."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from spinetrack_tools.coco import parse_file
from spinetrack_tools.inference.predict import jobs_from_folder, jobs_from_images
from spinetrack_tools.io import InputError
from spinetrack_tools.pool import frame_name, image_ids, list_images, pool_coco, pool_images, sample_video
from spinetrack_tools.validate import validate

PHOTOS = Path(__file__).parent / "data" / "photos"
FRAMES, W, H = 30, 96, 64


def _level(i: int) -> int:
    return 8 * i + 4  # each frame a distinct grey level, so a frame file tells which frame it is


def _write_video(path: Path, n: int = FRAMES) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    assert w.isOpened()
    for i in range(n):
        w.write(np.full((H, W, 3), _level(i), np.uint8))
    w.release()
    return path


def _index_of(frame: Path) -> int:
    level = cv2.imread(str(frame)).mean()
    return int(np.argmin([abs(level - _level(i)) for i in range(FRAMES)]))


@pytest.fixture
def video(tmp_path) -> Path:
    (tmp_path / "media").mkdir()
    return _write_video(tmp_path / "media" / "jump.avi")


def test_every_nth_frame_is_written_once(video, tmp_path):
    frames = tmp_path / "frames"
    files = sample_video(video, frames, every=5)
    assert [p.name for p in files] == [frame_name(video, i) for i in range(0, FRAMES, 5)] == \
        [f"jump_{i:06d}.jpg" for i in (0, 5, 10, 15, 20, 25)]
    assert [_index_of(p) for p in files] == [0, 5, 10, 15, 20, 25]  # the name is the frame's index
    assert sorted(frames.iterdir()) == files  # nothing else (no temporary files) left
    stamps = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in files}
    assert sample_video(video, frames, every=5) == files
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in files} == stamps  # re-running writes nothing


def test_max_frames_alone_spreads_over_the_video(video, tmp_path):
    assert [_index_of(p) for p in sample_video(video, tmp_path / "f", max_frames=4)] == [0, 8, 16, 24]
    assert [_index_of(p) for p in sample_video(video, tmp_path / "g", every=2, max_frames=3)] == [0, 2, 4]
    assert len(sample_video(video, tmp_path / "h")) == FRAMES


def test_a_folder_pool_is_its_images_then_its_videos_frames(video, tmp_path):
    media = video.parent
    for p in list_images(PHOTOS)[:2]:
        shutil.copy(p, media)
    (media / "notes.txt").write_text("not media")
    files = pool_images(media, tmp_path / "frames", every=10)
    assert [p.name for p in files] == ["000000000785.jpg", "000000040083.jpg", "jump_000000.jpg", "jump_000010.jpg",
                                       "jump_000020.jpg"]
    assert pool_images(video, tmp_path / "frames", every=10) == files[2:]
    assert pool_images(PHOTOS) == list_images(PHOTOS)  # images only: no frames folder needed


def test_bad_pools_are_input_errors(video, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images .* or videos"):
        pool_images(tmp_path / "empty")
    (tmp_path / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    with pytest.raises(InputError, match="broken.mp4.*(cannot open as a video|no frames)"):
        pool_images(tmp_path / "broken.mp4", tmp_path / "frames")
    assert not (tmp_path / "frames").exists()
    with pytest.raises(InputError, match="need a folder to write their frames"):
        pool_images(video)
    with pytest.raises(InputError, match="must not be the folder the videos are in"):
        pool_images(video.parent, video.parent)
    with pytest.raises(InputError, match="not found"):
        pool_images(tmp_path / "nothing")
    with pytest.raises(InputError, match="at least 1"):
        sample_video(video, tmp_path / "f", every=0)
    with pytest.raises(InputError, match="no images"):
        list_images(tmp_path / "empty")


def test_pool_coco_is_images_only(video, tmp_path):
    root = tmp_path
    files = list_images(PHOTOS)
    coco = pool_coco(files, PHOTOS)
    assert [im["id"] for im in coco["images"]] == [785, 40083, 196141, 197388]  # COCO's own ids
    assert coco["images"][0] == {"id": 785, "file_name": "000000000785.jpg", "width": 640, "height": 425}
    assert coco["annotations"] == [] and coco["categories"][0]["name"] == "person"
    report = validate(parse_file(coco), images_dir=PHOTOS)
    assert not report.has_errors
    frames = sample_video(video, root / "frames", every=10)
    coco = pool_coco(frames, root)
    assert [im["file_name"] for im in coco["images"]] == [f"frames/jump_{i:06d}.jpg" for i in (0, 10, 20)]
    assert [im["id"] for im in coco["images"]] == [1, 2, 3] and coco["images"][0]["width"] == W
    with pytest.raises(InputError, match="not inside the pool's root"):
        pool_coco(files, root)
    jobs = jobs_from_images(coco, root)
    assert [(p, j.image_id, len(j.boxes)) for p, j in jobs] == [(f, i, 0) for f, i in zip(frames, (1, 2, 3))]


def test_image_ids():
    assert image_ids([Path("000000000785.jpg"), Path("12.png")]) == [785, 12]
    assert image_ids([Path("1.jpg"), Path("a.jpg")]) == [1, 2]
    assert image_ids([Path("01.jpg"), Path("1.png")]) == [1, 2]  # the same number twice
    assert [j.image_id for _, j in jobs_from_folder(PHOTOS)] == [785, 40083, 196141, 197388]


def test_pool_coco_sizes_are_upright_as_decoded(tmp_path):
    """A photo stored sideways with an EXIF orientation: the size OpenCV (predict) and browsers show."""
    from PIL import Image

    for orientation in (1, 6, 8):
        im = Image.fromarray(np.zeros((40, 70, 3), np.uint8))
        exif = im.getexif()
        exif[0x0112] = orientation
        im.save(tmp_path / f"o{orientation}.jpg", exif=exif.tobytes())
    coco = pool_coco(list_images(tmp_path), tmp_path)
    decoded = [cv2.imread(str(tmp_path / im["file_name"])).shape[:2] for im in coco["images"]]
    assert [(im["height"], im["width"]) for im in coco["images"]] == decoded == [(40, 70), (70, 40), (70, 40)]
