"""Released models by name: SpinePose pose models and RF-DETR person detectors from the Hugging Face Hub.

Names, repositories and files are those of the spinepose package 2.1.0 (``pose_estimator.py`` ``MODE``):
``spinepose-<size>[@v1|@v2]`` from ``dfki-av/spinepose`` (v2 = latest = the SIMSPINE fine-tune, v1 = the
SpineTrack model; xlarge exists only as v1) and ``rfdetr-<size>`` from ``saifkhichi96/opendetect``, the
detector the package pairs with that pose size. Files go to the Hugging Face cache through
``huggingface_hub`` (``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_OFFLINE``, ``HF_HOME`` / ``HF_HUB_CACHE``) and
are checked against the sha256 of the Hub's LFS metadata on every use. Without a network, or with
``HF_HUB_OFFLINE=1``, a cached file is used (checked against the sha256 its cache entry is named by).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..download import (DownloadError, HubUnreachableError, first_line, http_problem, network_errors, remote_files,
                        sha256_file)
from ..io import InputError

POSE_REPO = "dfki-av/spinepose"
DETECTOR_REPO = "saifkhichi96/opendetect"
SIZES = ("small", "medium", "large", "xlarge")
VERSIONS = {"v1": "spinetrack", "v2": "simspine"}  # file-name family per version; "latest" is v2
_POSE_FILES = {  # size -> (file name pattern, input (W, H), versions it exists in)
    "small": ("spinepose-s_32xb256-10e_%s-256x192.onnx", (192, 256), ("v2", "v1")),
    "medium": ("spinepose-m_32xb256-10e_%s-256x192.onnx", (192, 256), ("v2", "v1")),
    "large": ("spinepose-l_32xb256-10e_%s-256x192.onnx", (192, 256), ("v2", "v1")),
    "xlarge": ("spinepose-x_32xb128-10e_spinetrack-384x288.onnx", (288, 384), ("v1",)),
}
_POSE_PARAMS_M = {"small": 5.98, "medium": 14.34, "large": 28.66, "xlarge": 50.69}  # the authors' README
_DETECTOR_FILES = {  # size -> (file, input side): the package's det_rfdetr per pose mode
    "small": ("rfdetr/rfdetr_n_v142_384x384.onnx", 384),
    "medium": ("rfdetr/rfdetr_s_v142_512x512.onnx", 512),
    "large": ("rfdetr/rfdetr_m_v142_576x576.onnx", 576),
    "xlarge": ("rfdetr/rfdetr_l_v142_704x704.onnx", 704),
}
_SHA256 = re.compile(r"[0-9a-f]{64}")
DEFAULT_POSE = "spinepose-medium"  # the spinepose CLI's default mode (medium), version latest, detector rfdetr
DEFAULT_DETECTOR = "rfdetr-medium"


class UnknownModelError(InputError):
    """A model name that is neither a released model nor an existing file."""


class ModelNotOnHubError(DownloadError):
    """The repository at that revision has no such file."""


class ChecksumMismatchError(DownloadError):
    """A downloaded or cached file whose sha256 differs from the Hub's."""


class NotCachedError(DownloadError):
    """The Hub cannot be reached (no network, or HF_HUB_OFFLINE) and the file is not in the cache."""


@dataclass(frozen=True)
class ModelSpec:
    """A released model: where it lives on the Hub and what the package does with it."""

    name: str  # canonical, e.g. "spinepose-small@v2", "rfdetr-small"
    kind: str  # "pose" or "detector"
    repo_id: str
    filename: str
    input_wh: tuple[int, int]
    version: str | None = None  # "v1" / "v2" for pose models
    params_m: float | None = None

    @property
    def smooth_spine(self) -> bool:
        """The package's v1 post-process: the spine chain smoothed (SpineTrack models only)."""
        return self.version == "v1"


def catalogue() -> list[ModelSpec]:
    """Every released model, pose models first (each size's default version first)."""
    out = []
    for size, (pattern, wh, versions) in _POSE_FILES.items():
        for v in versions:
            out.append(ModelSpec(f"spinepose-{size}@{v}", "pose", POSE_REPO,
                                 pattern % VERSIONS[v] if "%s" in pattern else pattern, wh, v, _POSE_PARAMS_M[size]))
    for size, (fname, side) in _DETECTOR_FILES.items():
        out.append(ModelSpec(f"rfdetr-{size}", "detector", DETECTOR_REPO, fname, (side, side)))
    return out


def known_names(kind: str | None = None) -> list[str]:
    """The names ``spec_for`` accepts (without the ``@latest`` alias)."""
    names = []
    for s in catalogue():
        if kind in (None, s.kind):
            base = s.name.split("@")[0]
            names += [n for n in dict.fromkeys((base, s.name)) if n not in names]
    return names


def short_name(spec: ModelSpec) -> str:
    """The shortest name of a released model: without the version for each size's latest."""
    base = spec.name.split("@")[0]
    return base if spec_for(base, spec.kind) == spec else spec.name


def spec_for(name: str, kind: str | None = None) -> ModelSpec:
    """The released model a name denotes; ``UnknownModelError`` (with the closest names) otherwise."""
    base, _, version = name.strip().lower().partition("@")
    specs = {s.name: s for s in catalogue() if kind in (None, s.kind)}
    if base.startswith("spinepose-") and base.removeprefix("spinepose-") in _POSE_FILES and kind in (None, "pose"):
        versions = _POSE_FILES[base.removeprefix("spinepose-")][2]
        v = versions[0] if version in ("", "latest") else version
        if v in versions:
            return specs[f"{base}@{v}"]
        if v in VERSIONS:
            raise UnknownModelError(name, f"{base} exists only as {', '.join(versions)}; use {base}")
        raise UnknownModelError(name, f"unknown version {version!r}; use @v1 (SpineTrack) or @v2 (SIMSPINE, latest)")
    if not version and base in specs:
        return specs[base]
    known = known_names(kind)
    close = difflib.get_close_matches(base, known, n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise UnknownModelError(name, f"unknown {kind or 'model'} name; {hint}known: {', '.join(_short(known))} "
                                  "(or give the path of an .onnx file)")


def _short(names: list[str]) -> list[str]:
    return [n for n in names if "@" not in n] + ["spinepose-<size>@v1|@v2"] * any("@" in n for n in names)


def looks_like_path(value: str) -> bool:
    """A value to treat as a file path: an existing path, or one with a folder part or an .onnx suffix."""
    return os.path.exists(value) or "/" in value or os.sep in value or value.lower().endswith(".onnx")


def cache_dir() -> Path:
    """The Hugging Face hub cache this process uses (HF_HUB_CACHE, or HF_HOME/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_file(spec: ModelSpec, revision: str | None = None) -> Path | None:
    """The cached file of ``spec`` at a revision (default main), or None; no network, no checks."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(spec.repo_id, spec.filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


def fetch(spec: ModelSpec, revision: str | None = None, endpoint: str | None = None,
          token: str | bool | None = None) -> Path:
    """The local file of a released model: downloaded into the HF cache if needed, sha256-verified.

    Online, the repository's LFS metadata at ``revision`` (default main) gives the commit and sha256; a
    cached file of that commit is reused without downloading. Offline (``HF_HUB_OFFLINE``) or when the
    Hub cannot be reached, the cached file of that revision is used, or ``NotCachedError`` raised.
    """
    from huggingface_hub import constants

    where = f"{spec.repo_id}/{spec.filename}"
    if constants.is_offline_mode():
        return _from_cache(spec, revision, "HF_HUB_OFFLINE is set")
    try:
        commit, files = remote_files(spec.repo_id, revision, endpoint, token, repo_type="model")
    except HubUnreachableError as e:
        return _from_cache(spec, revision, e.problem)
    remote = files.get(spec.filename)
    if remote is None:
        rev = f"revision {revision!r}" if revision else "main"
        raise ModelNotOnHubError(where, f"not on the Hub ({spec.repo_id} has no such file at {rev}, "
                                        f"commit {commit[:12]})")
    path = _download(spec, revision or "main", commit, endpoint, token)
    _verify(path, remote.sha256, remote.size, where)
    return path


def _download(spec: ModelSpec, revision: str, commit: str, endpoint: str | None, token: str | bool | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    where = f"{spec.repo_id}/{spec.filename}"
    # by the revision as given, so that the cache records what a name points to (refs/) for offline use; a
    # cached file of that commit is found with one metadata request (none for a commit hash), no download
    try:
        return Path(hf_hub_download(spec.repo_id, spec.filename, revision=revision, endpoint=endpoint, token=token))
    except LocalEntryNotFoundError as e:  # the metadata request failed and nothing is cached
        raise NotCachedError(where, f"cannot reach the Hub and not in the cache ({first_line(e)})") from None
    except EntryNotFoundError:
        raise ModelNotOnHubError(where, f"not on the Hub (commit {commit[:12]})") from None
    except HfHubHTTPError as e:
        raise DownloadError(where, http_problem(e)) from None
    except network_errors() as e:
        raise DownloadError(where, f"download interrupted ({first_line(e)}); run again") from None


def _from_cache(spec: ModelSpec, revision: str | None, why: str) -> Path:
    path = cached_file(spec, revision)
    if path is None:
        raise NotCachedError(f"{spec.repo_id}/{spec.filename}", f"{why}, and {spec.name} is not in the cache "
                                                                f"{cache_dir()} (run once with network access)")
    blob = Path(os.path.realpath(path)).name
    _verify(path, blob if _SHA256.fullmatch(blob) else None, None, f"{spec.repo_id}/{spec.filename}")
    return path


def _verify(path: Path, sha256: str | None, size: int | None, where: str) -> None:
    """Check a cached file against the Hub's sha256 (and size); a mismatching cache entry is removed."""
    actual = path.stat().st_size
    digest = sha256_file(path, path.name) if sha256 else None
    if (size is None or actual == size) and digest == sha256:
        return
    _evict(path)
    what = f"sha256 {digest}, the Hub says {sha256}" if digest != sha256 else f"{actual} bytes, the Hub says {size}"
    raise ChecksumMismatchError(where, f"checksum mismatch ({what}); the cached file was removed, run again")


def _evict(path: Path) -> None:
    blob = Path(os.path.realpath(path))
    for p in {blob, path}:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


@dataclass(frozen=True)
class Resolved:
    """A model argument made concrete: the local ONNX file and, for a released model, its spec."""

    path: Path
    spec: ModelSpec | None = None


def resolve(value: str | Path, kind: str, revision: str | None = None, endpoint: str | None = None,
            token: str | bool | None = None) -> Resolved:
    """A name (fetched, see ``fetch``) or a path (used as it is) to a local file."""
    target = parse(value, kind)
    if isinstance(target, Path):
        if revision is not None:
            raise InputError(value, "a revision applies to model names, not to files")
        return Resolved(target)
    return Resolved(fetch(target, revision, endpoint, token), target)


def paired_detector(pose: str | Path) -> str:
    """The detector the spinepose package pairs with a released pose model (``rfdetr-<its size>``), else
    ``DEFAULT_DETECTOR``."""
    target = parse(pose, "pose")
    if isinstance(target, Path):
        return DEFAULT_DETECTOR
    return f"rfdetr-{target.name.split('@')[0].removeprefix('spinepose-')}"


def pin(value: str | Path, kind: str, revision: str | None = None) -> tuple[str, str | None]:
    """A model argument as something to store: a released model's canonical name with the Hub commit it
    resolves to now (fetched and verified), or a file's absolute path (no revision)."""
    target = parse(value, kind)
    if isinstance(target, Path):
        if revision is not None:
            raise InputError(value, "a revision applies to model names, not to files")
        if not target.is_file():
            raise InputError(target, "model file not found")
        return str(target.resolve()), None
    path = fetch(target, revision)
    snapshot = path.parents[len(Path(target.filename).parts) - 1]  # <cache>/models--o--r/snapshots/<commit>/<file>
    if snapshot.parent.name != "snapshots" or not re.fullmatch(r"[0-9a-f]{40}", snapshot.name):
        raise InputError(path, "not a Hugging Face cache snapshot; cannot tell the commit")
    return target.name, snapshot.name


def parse(value: str | Path, kind: str) -> ModelSpec | Path:
    """What a model argument denotes, without fetching: a released model, or a file (see ``looks_like_path``);
    an unknown name raises ``UnknownModelError``. Check every argument with it before fetching any."""
    if isinstance(value, Path) or looks_like_path(str(value)):
        return Path(value)
    return spec_for(str(value), kind)


def load_pose_model(value: str | Path, threads: int = 2, revision: str | None = None, endpoint: str | None = None,
                    token: str | bool | None = None):
    """A ``PoseModel`` from a released name (fetched; v1 models get the smoothed spine) or an ONNX path."""
    from ..skeleton import SPINETRACK37
    from .model import PoseModel

    r = resolve(value, "pose", revision, endpoint, token)
    model = PoseModel.load(r.path, threads)
    if r.spec is not None and r.spec.smooth_spine:
        if model.num_keypoints != SPINETRACK37.num_keypoints:
            raise InputError(r.path, f"{model.num_keypoints} keypoints, expected {SPINETRACK37.num_keypoints} "
                                     f"for {r.spec.name}")
        model.spine_chain = tuple(SPINETRACK37.spine_chain)
    return model


def load_person_detector(value: str | Path, threads: int = 2, score_thr: float | None = None,
                         revision: str | None = None, endpoint: str | None = None, token: str | bool | None = None):
    """A person detector from a released name (fetched) or an ONNX path; see ``model.load_detector``."""
    from .model import load_detector

    return load_detector(resolve(value, "detector", revision, endpoint, token).path, threads, score_thr)
