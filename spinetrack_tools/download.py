"""Fetch SpineTrack from the Hugging Face Hub: resumable, verified, safely extracted, by split.

Layout under the destination: ``annotations/person_keypoints_<split>.json`` and ``images/<split>/``.
Whole files (``annotations.zip``, all of ``images.zip``) download to ``.spinetrack/downloads/<name>.part``,
resume from there after an interruption or a kill, and are checked against the Hub's size and sha256
before they are used. With ``splits``, only the chosen splits' members of ``images.zip`` are fetched:
the zip's central directory and members are read with HTTP range requests, and each member is checked
against its CRC-32. Every extracted file is written to a temporary name and renamed, so a file that
exists is complete; re-runs skip files whose size and CRC-32 match the archive.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib
import io
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable

from .io import InputError
from .progress import progress

REPO_ID = "saifkhichi96/spinetrack"
ANNOTATIONS_ZIP = "annotations.zip"
IMAGES_ZIP = "images.zip"
STATE_DIR = ".spinetrack"
_CHUNK = 1 << 20
_TAIL = 64 * 1024 + 22  # end of central directory record plus the largest comment


class DownloadError(InputError):
    """The Hub, the network or an archive did not give what was expected (exit code 2 in the CLI)."""


class HubUnreachableError(DownloadError):
    """The Hub could not be reached at all (no network, DNS, refused connection, offline mode)."""


@dataclass
class RemoteFile:
    name: str
    size: int
    sha256: str | None
    url: str


@dataclass
class Plan:
    """What a download run fetches and writes; ``dry_run`` prints it and stops."""

    commit: str
    files: list[tuple[RemoteFile, str]] = field(default_factory=list)  # (file, "fetch" | "resume" | "done")
    members: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> (count, bytes) to extract
    skipped_members: int = 0

    def describe(self) -> str:
        lines = [f"revision {self.commit}"]
        for f, state in self.files:
            lines.append(f"  {f.name:20s} {_human(f.size):>10s}  {state}")
        for split, (n, size) in sorted(self.members.items()):
            lines.append(f"  images/{split + '/':22s} {n:7d} files {_human(size):>10s} to extract")
        if self.skipped_members:
            lines.append(f"  {self.skipped_members} files already complete")
        return "\n".join(lines)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def remote_files(repo_id: str = REPO_ID, revision: str | None = None, endpoint: str | None = None,
                 token: str | bool | None = None, repo_type: str = "dataset") -> tuple[str, dict[str, RemoteFile]]:
    """The commit a revision resolves to and the repository's files with size and sha256 (LFS metadata).

    ``repo_type`` is ``"dataset"`` or ``"model"``. Raises ``HubUnreachableError`` when the Hub cannot be
    reached, ``DownloadError`` for every other problem (unknown repository or revision, authentication).
    """
    from huggingface_hub import HfApi, hf_hub_url
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    api = HfApi(endpoint=endpoint, token=token)
    where = f"{api.endpoint}/datasets/{repo_id}" if repo_type == "dataset" else f"{api.endpoint}/{repo_id}"
    try:
        info = api.repo_info(repo_id, revision=revision, repo_type=repo_type, files_metadata=True, timeout=60)
    except GatedRepoError:
        raise DownloadError(where, f"gated {repo_type}: accept its terms on the Hub and log in (HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise DownloadError(where, f"revision {revision!r} not found") from None
    except RepositoryNotFoundError:
        raise DownloadError(where, f"{repo_type} not found, or not visible with this token") from None
    except HfHubHTTPError as e:
        raise DownloadError(where, http_problem(e)) from None
    except OfflineModeIsEnabled:
        raise HubUnreachableError(where, "HF_HUB_OFFLINE is set") from None
    except network_errors() as e:
        raise HubUnreachableError(where, f"cannot reach the Hub ({first_line(e)})") from None
    commit = info.sha or revision or "main"
    files = {}
    for s in info.siblings or []:
        size = s.lfs.size if s.lfs else s.size
        files[s.rfilename] = RemoteFile(
            s.rfilename, int(size or 0), s.lfs.sha256 if s.lfs else None,
            hf_hub_url(repo_id, s.rfilename, repo_type=repo_type, revision=commit, endpoint=api.endpoint))
    return commit, files


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def network_errors() -> tuple[type[BaseException], ...]:
    """OSError plus the transport errors of the HTTP client huggingface_hub uses (httpx2, or httpx)."""
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def http_problem(e: Exception) -> str:
    """One line for an HTTP error from the Hub (authentication problems named as such)."""
    resp = getattr(e, "response", None)
    code = getattr(resp, "status_code", None)
    if code in (401, 403):
        return f"HTTP {code}: authentication failed (check HF_TOKEN or `hf auth login`)"
    return f"HTTP {code}: {str(e).splitlines()[0]}" if code else str(e).splitlines()[0]


def _headers(token: str | bool | None) -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers(token=token, library_name="spinetrack-tools")


def fetch_file(remote: RemoteFile, downloads: Path, token: str | bool | None = None) -> Path:
    """Download ``remote`` into ``downloads`` (resuming a ``.part`` file), verify size and sha256, rename."""
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import http_get

    downloads.mkdir(parents=True, exist_ok=True)
    final = downloads / remote.name
    verified = downloads / f"{remote.name}.verified"
    if final.is_file() and final.stat().st_size == remote.size and \
            verified.is_file() and verified.read_text().strip() == (remote.sha256 or str(remote.size)):
        return final
    part = downloads / f"{remote.name}.part"
    if final.is_file():  # complete but never verified (or changed upstream): verify it as a part
        final.replace(part)
    have = part.stat().st_size if part.is_file() else 0
    if have > remote.size:
        part.unlink()
        have = 0
    if have < remote.size:
        check_disk_space(downloads, remote.size - have, f"downloading {remote.name}")
        try:
            with open(part, "ab") as f:
                http_get(remote.url, f, resume_size=have, headers=_headers(token), expected_size=remote.size,
                         displayed_filename=remote.name)
        except HfHubHTTPError as e:
            raise DownloadError(remote.url, http_problem(e)) from None
        except network_errors() as e:  # network failure after retries, or a size mismatch: keep the part
            raise DownloadError(remote.url, f"download interrupted ({str(e).splitlines()[0]}); run again to resume "
                                            f"from {part.stat().st_size if part.exists() else 0} bytes") from None
    size = part.stat().st_size
    if size != remote.size:
        raise DownloadError(part, f"size {size} differs from the Hub's {remote.size}; run again to resume")
    if remote.sha256:
        digest = sha256_file(part, remote.name)
        if digest != remote.sha256:
            part.unlink()
            raise DownloadError(remote.name, f"checksum mismatch (sha256 {digest}, the Hub says {remote.sha256}); "
                                             "the download was removed, run again")
    part.replace(final)
    verified.write_text(remote.sha256 or str(remote.size))
    return final


def sha256_file(path: Path, label: str) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        for chunk in progress(iter(lambda: f.read(16 * _CHUNK), b""), total=-(-size // (16 * _CHUNK)),
                              description=f"verifying {label}"):
            h.update(chunk)
    return h.hexdigest()


def check_disk_space(folder: Path, needed: int, what: str) -> None:
    """Raise ``DownloadError`` when ``folder``'s file system has less than ``needed`` bytes free (+1%)."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed * 1.01:
        raise DownloadError(folder, f"not enough disk space for {what}: {_human(needed)} needed, "
                                    f"{_human(free)} free")


class HttpRangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file through HTTP range requests (with read-ahead)."""

    def __init__(self, url: str, size: int, headers: dict[str, str], block: int = 8 * _CHUNK):
        self.url, self.size, self.headers, self.block = url, size, headers, block
        self.pos = 0
        self.buf_start, self.buf = 0, b""
        self.span_starts: list[int] = []
        self.span_ends: list[int] = []
        self.requests = 0
        self.bytes_fetched = 0

    def limit_to(self, spans: list[tuple[int, int]]) -> None:
        """Never read ahead past the end of the span (start, end) a read starts in."""
        merged: list[list[int]] = []
        for a, b in sorted(spans):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.span_starts = [a for a, _ in merged]
        self.span_ends = [b for _, b in merged]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.size - self.pos)
        if n <= 0:
            return 0
        if not (self.buf_start <= self.pos and self.pos + n <= self.buf_start + len(self.buf)):
            length = max(n, self.block)
            i = bisect.bisect_right(self.span_starts, self.pos) - 1
            if i >= 0 and self.pos < self.span_ends[i]:
                start = self.pos
                length = max(n, min(length, self.span_ends[i] - self.pos))
            elif self.pos >= self.size - _TAIL:  # the zip's end records: read the whole tail backwards
                start, length = max(0, self.size - _TAIL), max(n, _TAIL)
            else:
                start = self.pos
            self._fill(start, length)
        off = self.pos - self.buf_start
        b[:n] = self.buf[off:off + n]
        self.pos += n
        return n

    def _fill(self, start: int, length: int) -> None:
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.utils import hf_raise_for_status, http_backoff

        end = min(self.size, start + length) - 1
        try:
            resp = http_backoff("GET", self.url, headers={**self.headers, "Range": f"bytes={start}-{end}"},
                                timeout=60)
            hf_raise_for_status(resp)
        except HfHubHTTPError as e:
            raise DownloadError(self.url, http_problem(e)) from None
        except network_errors() as e:
            raise DownloadError(self.url, f"range request failed ({e}); run again to resume") from None
        if resp.status_code != 206:
            raise DownloadError(self.url, f"the server ignored the range request (HTTP {resp.status_code}); "
                                          "download all splits instead")
        data = resp.content
        if len(data) != end - start + 1:
            raise DownloadError(self.url, f"range request returned {len(data)} bytes, expected {end - start + 1}")
        self.buf_start, self.buf = start, data
        self.requests += 1
        self.bytes_fetched += len(data)


def member_target(info: zipfile.ZipInfo, kind: str) -> PurePosixPath | None:
    """Where a zip member goes, relative to the destination, or None for folders.

    ``kind`` is ``"annotations"`` or ``"images"``; a leading folder of that name in the archive is
    optional. Absolute paths, ``..``, drive letters and symbolic links raise ``DownloadError``.
    """
    name = info.filename.replace("\\", "/")
    if name.endswith("/"):
        return None
    p = PurePosixPath(name)
    if p.is_absolute() or any(part in ("..", "") for part in p.parts) or ":" in p.parts[0]:
        raise DownloadError(info.filename, "unsafe path in archive (absolute or escaping); refusing to extract")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DownloadError(info.filename, "symbolic link in archive; refusing to extract")
    parts = p.parts[1:] if p.parts[0] == kind and len(p.parts) > 1 else p.parts
    return PurePosixPath(kind, *parts)


def member_spans(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo]) -> list[tuple[int, int]]:
    """Byte ranges (local header to the next member's header) that hold ``members`` in the archive."""
    starts = sorted({i.header_offset for i in zf.infolist()} | {zf.start_dir})
    nxt = {a: b for a, b in zip(starts, starts[1:])}
    return [(m.header_offset, nxt.get(m.header_offset, zf.start_dir)) for m in members]


def _split_of(target: PurePosixPath) -> str | None:
    return target.parts[1] if len(target.parts) > 2 else None


def _is_complete(path: Path, info: zipfile.ZipInfo) -> bool:
    if not path.is_file() or path.stat().st_size != info.file_size:
        return False
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            crc = zlib.crc32(chunk, crc)
    return crc == info.CRC


def plan_members(zf: zipfile.ZipFile, kind: str, dest: Path, splits: Iterable[str] | None,
                 force: bool) -> tuple[list[tuple[zipfile.ZipInfo, PurePosixPath]], int]:
    """Members to extract (not yet complete, with their path relative to ``dest``) and how many are
    complete already.

    Raises ``DownloadError`` for unknown splits, and, without ``force``, for files in the way that
    differ from the archive.
    """
    wanted = set(splits) if splits is not None else None
    todo, done, conflicts, seen_splits = [], 0, [], set()
    infos = zf.infolist()
    for info in progress(infos, total=len(infos), description=f"checking {kind} already on disk"):
        rel = member_target(info, kind)
        if rel is None:
            continue
        split = _split_of(rel)
        seen_splits.add(split)
        if wanted is not None and split not in wanted:
            continue
        path = dest / rel
        if _is_complete(path, info):
            done += 1
        else:
            if path.exists() and not force:
                conflicts.append(str(path))
            todo.append((info, rel))
    if wanted is not None and wanted - seen_splits:
        known = ", ".join(sorted(s for s in seen_splits if s))
        raise DownloadError(IMAGES_ZIP, f"unknown split(s) {', '.join(sorted(wanted - seen_splits))}; "
                                        f"the archive has {known}")
    if conflicts:
        raise DownloadError(conflicts[0], f"exists and differs from the archive ({len(conflicts)} such files); "
                                          "use --force to overwrite")
    return todo, done


def extract(zf: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, PurePosixPath]], dest: Path,
            label: str) -> None:
    """Extract members (CRC-checked by zipfile) to temporary names and rename them into place.

    ``members`` may come from another reading of the same archive: they are looked up by name in ``zf``.
    """
    for member, rel in progress(members, total=len(members), description=f"extracting {label}"):
        info = zf.getinfo(member.filename)
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        try:
            with zf.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        except zipfile.BadZipFile as e:
            tmp.unlink(missing_ok=True)
            raise DownloadError(info.filename, f"corrupt member ({e}); run again") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(path)


@dataclass
class DownloadResult:
    dest: Path
    plan: Plan
    annotation_files: list[Path]
    range_requests: int = 0
    range_bytes: int = 0


def download(dest: Path, *, revision: str | None = None, annotations_only: bool = False,
             splits: list[str] | None = None, dry_run: bool = False, force: bool = False,
             keep_archive: bool = False, repo_id: str = REPO_ID, endpoint: str | None = None,
             token: str | bool | None = None, echo: Callable[[str], None] = print) -> DownloadResult:
    """Fetch annotations and images of SpineTrack into ``dest`` (see the module docstring)."""
    commit, files = remote_files(repo_id, revision, endpoint, token)
    missing = [n for n in (ANNOTATIONS_ZIP, *(() if annotations_only else (IMAGES_ZIP,))) if n not in files]
    if missing:
        raise DownloadError(f"{repo_id}@{commit}", f"the dataset has no {', '.join(missing)}")
    downloads = dest / STATE_DIR / "downloads"
    plan = Plan(commit)
    ann = files[ANNOTATIONS_ZIP]
    plan.files.append((ann, _state(downloads, ann)))
    images = None if annotations_only else files[IMAGES_ZIP]
    remote = None
    if images is not None:  # the central directory, read remotely, says what is missing locally
        remote = HttpRangeFile(images.url, images.size, _headers(token))
        try:
            zf_remote = zipfile.ZipFile(remote)
        except zipfile.BadZipFile as e:
            raise DownloadError(images.url, f"not a readable zip ({e})") from None
        todo, done = plan_members(zf_remote, "images", dest, splits, force)
        _count(plan, todo, done)
        remote.limit_to(member_spans(zf_remote, [i for i, _ in todo]))
        if splits is None and todo:
            plan.files.append((images, _state(downloads, images)))

    if dry_run:
        echo(plan.describe())
        return DownloadResult(dest, plan, [])

    dest.mkdir(parents=True, exist_ok=True)
    ann_zip = fetch_file(ann, downloads, token)
    with zipfile.ZipFile(ann_zip) as zf_ann:
        todo_ann, _ = plan_members(zf_ann, "annotations", dest, None, force)
        extract(zf_ann, todo_ann, dest, "annotations")
        ann_files = sorted(dest / t for t in (member_target(i, "annotations") for i in zf_ann.infolist())
                           if t is not None and t.suffix == ".json")
    result = DownloadResult(dest, plan, ann_files)
    if images is not None and remote is not None and todo:
        unpacked = sum(i.file_size for i, _ in todo)
        if splits is not None:  # only the chosen members, by range requests
            check_disk_space(dest, unpacked, "the chosen splits")
            extract(zf_remote, todo, dest, "images")
        else:  # the whole archive: one resumable, sha256-verified download
            part = downloads / f"{IMAGES_ZIP}.part"
            have = (downloads / IMAGES_ZIP).stat().st_size if (downloads / IMAGES_ZIP).is_file() else \
                part.stat().st_size if part.is_file() else 0
            check_disk_space(dest, images.size - have + unpacked, f"{IMAGES_ZIP} and its contents")
            img_zip = fetch_file(images, downloads, token)
            with zipfile.ZipFile(img_zip) as zf_img:
                extract(zf_img, todo, dest, "images")
            if not keep_archive:
                img_zip.unlink()
                (downloads / f"{IMAGES_ZIP}.verified").unlink(missing_ok=True)
    if splits is not None:
        if remote is not None:
            result.range_requests, result.range_bytes = remote.requests, remote.bytes_fetched
        result.annotation_files = [p for p in ann_files if any(p.stem.endswith(s) for s in splits)]
    return result


def _state(downloads: Path, f: RemoteFile) -> str:
    if (downloads / f.name).is_file():
        return "downloaded"
    return "resume" if (downloads / f"{f.name}.part").is_file() else "fetch"


def _count(plan: Plan, todo: list[tuple[zipfile.ZipInfo, PurePosixPath]], done: int) -> None:
    for info, rel in todo:
        split = _split_of(rel) or "(no split)"
        n, size = plan.members.get(split, (0, 0))
        plan.members[split] = (n + 1, size + info.file_size)
    plan.skipped_members += done
