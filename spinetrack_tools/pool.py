"""Image pools from your own media: a folder of images and videos, or one video, as a list of image files.

A video is sampled into frames with OpenCV (every N-th frame and/or at most M frames), each written once,
atomically, as ``<frames_dir>/<video stem>_<frame index>.jpg``; a re-run reads the video again but writes
nothing that exists. ``pool_coco`` describes a pool as an images-only COCO dict (no annotations).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .coco import empty_coco
from .io import InputError, atomic_write_bytes
from .skeleton import SPINETRACK37, Skeleton

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
JPEG_QUALITY = 95
EXIF_ORIENTATION = 0x0112


def list_images(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "images folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(folder, "no images (.jpg, .png, ...) in this folder")
    return files


def image_ids(files: list[Path]) -> list[int]:
    """Image ids: the numbers in the file names when every name is a distinct number (COCO's
    000000000785.jpg is 785), else 1..N in the given order."""
    stems = [p.stem for p in files]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(files) + 1))


def frame_name(video: Path, index: int) -> str:
    """The file name of a video's frame ``index`` (0-based)."""
    return f"{Path(video).stem}_{index:06d}.jpg"


def sample_video(video: Path, frames_dir: Path, every: int | None = None,
                 max_frames: int | None = None) -> list[Path]:
    """Frames of ``video`` as JPEG files in ``frames_dir``: every ``every``-th frame from the first, at most
    ``max_frames`` of them. With ``max_frames`` alone the step spreads them over the whole video (from its
    frame count). Frames already written are kept as they are."""
    import cv2

    video = Path(video)
    if every is not None and every < 1 or max_frames is not None and max_frames < 1:
        raise InputError(video, f"every ({every}) and max_frames ({max_frames}) must be at least 1")
    if not video.is_file():
        raise InputError(video, "video not found")
    # FFmpeg's own log lines (e.g. "moov atom not found") would break the one-line error; problems are reported
    # here (read before the first capture; a value the user set wins)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cap = cv2.VideoCapture(str(video))
    try:
        if not cap.isOpened():
            raise InputError(video, "cannot open as a video (OpenCV could not read it)")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        step = every or (max(1, math.ceil(count / max_frames)) if max_frames and count > 0 else 1)
        out: list[Path] = []
        index = 0
        while (max_frames is None or len(out) < max_frames) and cap.grab():
            if index % step == 0:
                path = Path(frames_dir) / frame_name(video, index)
                if not path.is_file():
                    ok, frame = cap.retrieve()
                    if not ok:
                        break
                    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                    if not ok:
                        raise InputError(video, f"frame {index} could not be encoded as JPEG")
                    atomic_write_bytes(path, buf.tobytes())
                out.append(path)
            index += 1
    finally:
        cap.release()
    if not out:
        raise InputError(video, "no frames could be read from this video")
    return out


def pool_images(source: Path, frames_dir: Path | None = None, every: int | None = None,
                max_frames: int | None = None) -> list[Path]:
    """The image files of a pool: a folder's images followed by the sampled frames of each video in it
    (sorted by name), one video's frames, or one image. Videos need ``frames_dir`` (not ``source`` itself)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file())
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
        if not images and not videos:
            raise InputError(source, "no images (.jpg, .png, ...) or videos (.mp4, .avi, ...) in this folder")
    elif source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        images, videos = [], [source]
    elif source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES:
        return [source]
    elif source.exists():
        raise InputError(source, "expected a folder of images, a video (.mp4, .avi, ...) or an image")
    else:
        raise InputError(source, "not found")
    if videos:
        if frames_dir is None:
            raise InputError(source, "videos need a folder to write their frames to")
        if Path(frames_dir).resolve() == (source if source.is_dir() else source.parent).resolve():
            raise InputError(frames_dir, "the frames folder must not be the folder the videos are in")
    for v in videos:
        images += sample_video(v, Path(frames_dir), every, max_frames)  # type: ignore[arg-type]
    return images


def pool_coco(files: list[Path], root: Path, skeleton: Skeleton = SPINETRACK37) -> dict[str, Any]:
    """An images-only COCO dict for ``files``: id (``image_ids``), file_name relative to ``root``, width and
    height from the file header, upright as OpenCV (``predict``) and browsers (Label Studio) decode the image
    (its EXIF orientation applied); no annotations; the skeleton's person category."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    coco = empty_coco(skeleton)
    for iid, p in zip(image_ids(files), files):
        try:
            rel = Path(os.path.abspath(p)).relative_to(os.path.abspath(root))
        except ValueError:
            raise InputError(p, f"not inside the pool's root {root}") from None
        try:
            with Image.open(p) as im:
                w, h = im.size
                if im.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):  # stored turned by 90 degrees
                    w, h = h, w
        except FileNotFoundError:
            raise InputError(p, "image not found") from None
        except (UnidentifiedImageError, OSError) as e:
            raise InputError(p, f"unreadable image ({e})") from None
        coco["images"].append({"id": iid, "file_name": rel.as_posix(), "width": w, "height": h})
    return coco
