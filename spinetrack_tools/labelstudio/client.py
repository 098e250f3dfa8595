"""The one module that talks to a Label Studio server (label-studio-sdk 2.x client, its auth).

Bulk traffic (task import, task listing) goes through the SDK's HTTP client as raw JSON (orjson), which
is many times faster than building and parsing the SDK's pydantic models for tasks with 37 keypoints;
everything else uses the SDK's methods.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import orjson

from ..findings import Finding
from ..gcpause import gc_paused
from ..io import InputError
from ..persons import Persons
from ..progress import progress
from ..skeleton import SPINETRACK37, Skeleton
from .config import REVIEW_CHOICES, labeling_config
from .convert import annotations_of, annotator_of, edits, from_labelstudio, review_decision

SAMPLING = "Uncertainty sampling"
TASK_FIELDS = "id,data,annotations,predictions"  # what from_labelstudio and edits read
WATERMARK_OVERLAP_S = 60  # re-read this much before the watermark: clocks and saves are not atomic


class LabelStudioError(InputError):
    """Label Studio unreachable, a token it rejects, a project that is not there: one line, exit code 2."""


class NotFound(LabelStudioError):
    """Label Studio answered 404: the task, annotation or project is not there (deleted)."""


def _retry(fn: Callable[[], Any], what: str, url: str, tries: int = 4) -> Any:
    """Call ``fn`` with exponential backoff on connection errors and 5xx answers."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    for attempt in range(tries):
        try:
            return fn()
        except ApiError as e:
            if e.status_code in (401, 403):
                raise LabelStudioError(url, f"{what}: the API key was rejected (HTTP {e.status_code}); check "
                                            "LABEL_STUDIO_API_KEY (legacy token or personal access token)") from None
            if e.status_code == 404:
                raise NotFound(url, f"{what}: not found (HTTP 404)") from None
            if e.status_code is not None and e.status_code < 500 or attempt == tries - 1:
                raise LabelStudioError(url, f"{what}: HTTP {e.status_code}: {str(e.body)[:200]}") from None
        except (httpx.TransportError, OSError) as e:
            if attempt == tries - 1:
                raise LabelStudioError(url, f"{what}: cannot reach Label Studio ({e.__class__.__name__}: {e})") \
                    from None
        time.sleep(0.5 * 2 ** attempt)


# imports in flight, for a Label Studio on PostgreSQL that is not ours (the API does not say which database
# a server uses; on SQLite more than one loses annotations, see Connection.imports_in_flight)
IMPORTS_ENV = "SPINETRACK_LS_IMPORTS"


@dataclass
class Connection:
    url: str
    ls: Any  # label_studio_sdk.LabelStudio
    api_key: str = field(default="", repr=False)
    # import requests at once. Label Studio on SQLite guesses the ids of the tasks it has just created (the
    # latest ones), so two imports at once can attach one's annotations to the other's tasks; on PostgreSQL
    # it gets them from the insert, and two imports keep its server and database busy at the same time.
    imports_in_flight: int = 1

    @classmethod
    def open(cls, url: str | None = None, api_key: str | None = None, timeout: float = 120.0) -> "Connection":
        """Connect and check the key (``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY`` by default)."""
        from label_studio_sdk import LabelStudio

        url = url or os.environ.get("LABEL_STUDIO_URL")
        api_key = api_key or os.environ.get("LABEL_STUDIO_API_KEY")
        if not url:
            raise LabelStudioError(None, "no Label Studio URL: pass --url, set LABEL_STUDIO_URL, or run "
                                         "`spinetrack labelstudio start`")
        if not api_key:
            raise LabelStudioError(url, "no API key: pass --api-key or set LABEL_STUDIO_API_KEY")
        try:
            ls = LabelStudio(base_url=url, api_key=api_key, timeout=timeout)
        except Exception as e:  # the SDK validates a JWT key in its constructor
            raise LabelStudioError(url, f"the API key was rejected ({e})") from None
        conn = cls(url.rstrip("/"), ls, api_key)
        _retry(lambda: ls.users.whoami(), "checking the API key", url)
        return conn

    def _raw(self, method: str, path: str, params: dict | None = None, body: Any = None) -> Any:
        http = self.ls._client_wrapper.httpx_client

        def call() -> Any:
            r = http.request(path, method=method, params=params,
                             content=None if body is None else orjson.dumps(body),
                             headers={"Content-Type": "application/json"} if body is not None else None)
            if r.status_code >= 400:
                from label_studio_sdk.core.api_error import ApiError

                raise ApiError(status_code=r.status_code, headers=dict(r.headers), body=r.text)
            return orjson.loads(r.content) if r.content else None

        return _retry(call, f"{method} {path}", self.url)

    # projects ----------------------------------------------------------------------------------------
    def find_project(self, title: str) -> int | None:
        for p in _retry(lambda: list(self.ls.projects.list(title=title)), "listing projects", self.url):
            if p.title == title:
                return int(p.id)
        return None

    def ensure_project(self, title: str, skeleton: Skeleton = SPINETRACK37, maximum_annotations: int = 1) -> int:
        """The project called ``title``, created with the skeleton's config and uncertainty sampling, asking for
        ``maximum_annotations`` annotators per task."""
        pid = self.find_project(title)
        if pid is None:
            p = _retry(lambda: self.ls.projects.create(title=title, label_config=labeling_config(skeleton),
                                                       sampling=SAMPLING, show_collab_predictions=True,
                                                       maximum_annotations=maximum_annotations),
                       "creating the project", self.url)
            return int(p.id)
        proj = _retry(lambda: self.ls.projects.get(id=pid), "reading the project", self.url)
        if proj.maximum_annotations != maximum_annotations:
            _retry(lambda: self.ls.projects.update(id=pid, maximum_annotations=maximum_annotations),
                   "setting maximum_annotations", self.url)
        return pid

    def project_id(self, title: str) -> int:
        pid = self.find_project(title)
        if pid is None:
            raise LabelStudioError(self.url, f"no project titled {title!r}")
        return pid

    def set_model_version(self, project: int, model_version: str) -> None:
        """Annotators only see predictions of the project's model version: switch it."""
        _retry(lambda: self.ls.projects.update(id=project, model_version=model_version), "setting model_version",
               self.url)

    def label_interface(self, project: int) -> Any:
        proj = _retry(lambda: self.ls.projects.get(id=project), "reading the project", self.url)
        return proj.get_label_interface()

    # storage -------------------------------------------------------------------------------------------
    def ensure_local_storage(self, project: int, images_dir: Path, document_root: Path) -> None:
        """Register ``images_dir`` (a strict subfolder of the server's local-files root) for the project."""
        images_dir, document_root = images_dir.resolve(), document_root.resolve()
        if images_dir == document_root or not images_dir.is_relative_to(document_root):
            raise LabelStudioError(images_dir, f"images must be in a subfolder of Label Studio's local-files root "
                                               f"{document_root} (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)")
        existing = _retry(lambda: list(self.ls.import_storage.local.list(project=project)), "listing storages",
                          self.url)
        if any(str(getattr(s, "path", "")) == str(images_dir) for s in existing):
            return
        _retry(lambda: self.ls.import_storage.local.create(project=project, path=str(images_dir),
                                                           title=images_dir.name, use_blob_urls=False,
                                                           regex_filter=r".*\.(jpe?g|png|bmp|webp)$"),
               "registering local storage", self.url)

    # tasks -----------------------------------------------------------------------------------------------
    def iter_tasks(self, project: int, only_annotated: bool = False, updated_after: str | None = None,
                   page_size: int = 500, fields: str = "all") -> Iterator[dict[str, Any]]:
        """Every task of a project (raw dicts), optionally only annotated ones updated after a time.

        ``fields="all"`` returns each task's id, data, annotations and predictions and nothing else: Label
        Studio then skips its per-task counters and lookups (3.1 instead of 5.2 ms per task on its side).
        The next page is fetched in a background thread while the caller works on this one.
        """
        params: dict[str, Any] = {"project": project, "page_size": page_size, "fields": fields}
        if fields == "all":
            params.update(include=TASK_FIELDS, expand="annotations")
        if only_annotated:
            params["only_annotated"] = "true"
        if updated_after:
            params["query"] = orjson.dumps({"filters": {"conjunction": "and", "items": [
                {"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime",
                 "value": updated_after}]}}).decode()

        def fetch(page: int) -> Any:
            return self._raw("GET", "api/tasks/", {**params, "page": page})

        with ThreadPoolExecutor(1, thread_name_prefix="label-studio-pages") as pool:
            page, pending = 1, pool.submit(fetch, 1)
            while True:
                try:
                    data = pending.result()
                except NotFound:
                    if page > 1:  # past the last page
                        return
                    raise
                tasks = data.get("tasks", data) if isinstance(data, dict) else data
                total = data.get("total") if isinstance(data, dict) else None
                last = len(tasks) < page_size or (total is not None and page * page_size >= total)
                if not last:
                    pending = pool.submit(fetch, page + 1)
                yield from tasks
                if last:
                    return
                page += 1

    def sample_ids(self, project: int) -> dict[str, int]:
        """sample_id -> task id of the tasks already in the project."""
        return {str(t["data"].get("sample_id")): int(t["id"])
                for t in self.iter_tasks(project, fields="task_only") if t.get("data", {}).get("sample_id")}

    def import_tasks(self, project: int, tasks: Sequence[dict[str, Any]]) -> list[int]:
        data = self._raw("POST", f"api/projects/{project}/import", {"return_task_ids": "true"}, list(tasks))
        return [int(i) for i in data.get("task_ids", [])]

    def create_annotation(self, task: int, result: list[dict[str, Any]]) -> None:
        """Submit an annotation of a task as the connection's user."""
        _retry(lambda: self.ls.annotations.create(id=task, result=result), "creating an annotation", self.url)

    @cached_property
    def user_id(self) -> int:
        """The Label Studio user id of the connection's key (``completed_by`` of its annotations)."""
        return int(_retry(lambda: self.ls.users.whoami(), "who am I", self.url).id)

    def invite_token(self) -> str:
        """The organization's invitation token (the ``?token=`` of its signup link)."""
        return str(self._raw("GET", "api/invite")["token"])

    def update_task_data(self, task: int, **fields: Any) -> None:
        """Set fields of a task's data (shown in the data manager), keeping the others."""
        data = self._raw("GET", f"api/tasks/{task}")["data"]
        self._raw("PATCH", f"api/tasks/{task}", body={"data": {**data, **fields}})


def annotator_key(url: str, email: str, password: str, invite: str) -> str:
    """The API key of an annotator account, created through the signup page with the organization's invitation
    (or logged into when it exists), as a person does in the browser before copying the key from Account &
    Settings."""
    import httpx

    base = url.rstrip("/")
    try:
        with httpx.Client(base_url=base, timeout=60, follow_redirects=False) as web:
            for page, params in (("/user/signup/", {"token": invite}), ("/user/login/", {})):
                web.get(page, params=params)
                form = {"email": email, "password": password, "csrfmiddlewaretoken": web.cookies.get("csrftoken", ""),
                        "persist_session": "on"}
                r = web.post(page, params=params, data=form, headers={"Referer": base + page})
                if r.status_code == 302:  # signed up (or logged in): the session is the user's
                    break
            r = web.get("/api/current-user/token")
    except (httpx.TransportError, OSError) as e:
        raise LabelStudioError(url, f"signing up {email}: cannot reach Label Studio ({e.__class__.__name__}: {e})") \
            from None
    if r.status_code != 200:
        raise LabelStudioError(url, f"signing up {email}: neither signup nor login worked (HTTP {r.status_code}); "
                                    "check the password and the invitation")
    return str(r.json()["token"])


def connect(url: str | None = None, api_key: str | None = None, server_dir: Path | None = None,
            require_root: bool = False) -> tuple[Connection, Path | None]:
    """A connection and the server's local-files root: the given URL and key (or LABEL_STUDIO_URL /
    LABEL_STUDIO_API_KEY), else the local server started from ``server_dir``; the root from
    LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT or that server. Imports in flight: ``SPINETRACK_LS_IMPORTS`` when
    set (a server on PostgreSQL that the API cannot tell apart from one on SQLite), else 2 for our server on
    PostgreSQL, else 1."""
    from .server import read_info

    url = url or os.environ.get("LABEL_STUDIO_URL")
    api_key = api_key or os.environ.get("LABEL_STUDIO_API_KEY")
    root = os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    info = read_info(server_dir) if server_dir is not None else None
    if not url and info is not None:
        url, api_key, root = info.url, api_key or info.token, root or info.document_root
    if require_root and not root:
        raise LabelStudioError(None, "Label Studio's local-files root is unknown: set "
                                     "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT as the server has it")
    imports = os.environ.get(IMPORTS_ENV, "").strip()
    if imports and not (imports.isdigit() and int(imports) >= 1):
        raise LabelStudioError(None, f"{IMPORTS_ENV} must be a whole number >= 1, not {imports!r}")
    conn = Connection.open(url, api_key)
    ours = info is not None and conn.url == info.url.rstrip("/")
    on_postgres = ours and info.database.startswith("postgresql")
    if ours and not on_postgres and imports and int(imports) > 1:
        raise LabelStudioError(conn.url, f"{IMPORTS_ENV}={imports}: this Label Studio runs on SQLite, which takes "
                                         "one import at a time (it would attach annotations to other tasks)")
    # our server on PostgreSQL takes two (see Connection.imports_in_flight)
    conn.imports_in_flight = int(imports) if imports else 2 if on_postgres else 1
    return conn, Path(root) if root else None


def image_url(document_root: Path, images_dir: Path) -> Callable[[dict[str, Any]], str]:
    """Task image URL served by Label Studio's local-files view (path relative to its root)."""
    rel = images_dir.resolve().relative_to(document_root.resolve())
    return lambda im: f"/data/local-files/?d={(rel / str(im['file_name'])).as_posix()}"


@dataclass
class PushResult:
    project: int
    created: dict[str, int] = field(default_factory=dict)  # sample_id -> new task id
    existing: dict[str, int] = field(default_factory=dict)  # sample_id -> task id already there


def push(conn: Connection, project_title: str, tasks: list[dict[str, Any]], images_dir: Path,
         document_root: Path, model_version: str, skeleton: Skeleton = SPINETRACK37,
         batch_size: int = 500, maximum_annotations: int = 1) -> PushResult:
    """Create or reuse the project (``maximum_annotations`` annotators per task), register the images, import
    the tasks that are not there yet (``data.sample_id`` is the key, so pushing twice creates nothing), with
    their predictions checked against the labeling config first."""
    pid = conn.ensure_project(project_title, skeleton, maximum_annotations)
    conn.ensure_local_storage(pid, images_dir, document_root)
    li = conn.label_interface(pid)
    for t in tasks[:1] + tasks[1::max(1, len(tasks) // 50)]:  # a spread sample: the config is the same for all
        for pred in t.get("predictions", []):
            ok, errors = _validate(li, pred)
            if not ok:
                raise LabelStudioError(conn.url, f"prediction for {t['data'].get('sample_id')} does not fit the "
                                                 f"project's labeling config: {errors}")
    out = PushResult(pid)
    out.existing = {s: i for s, i in conn.sample_ids(pid).items() if s in {t["data"]["sample_id"] for t in tasks}}
    new = [t for t in tasks if t["data"]["sample_id"] not in out.existing]
    batches = [new[s:s + batch_size] for s in range(0, len(new), batch_size)]
    with ThreadPoolExecutor(max_workers=conn.imports_in_flight) as pool:
        for batch, ids in progress(zip(batches, pool.map(lambda b: conn.import_tasks(pid, b), batches)),
                                   total=len(batches), description="importing tasks"):
            if len(ids) != len(batch):  # an old server without task ids: look them up
                ids_by_sample = conn.sample_ids(pid)
                ids = [ids_by_sample[t["data"]["sample_id"]] for t in batch]
            out.created.update({t["data"]["sample_id"]: i for t, i in zip(batch, ids)})
    if new or tasks:  # Label Studio only accepts a model version it has predictions of
        conn.set_model_version(pid, model_version)
    return out


def _validate(li: Any, prediction: dict[str, Any]) -> tuple[bool, Any]:
    res = li.validate_prediction(prediction, return_errors=True)
    if isinstance(res, tuple):
        return res[0], res[1]
    if isinstance(res, list):
        return not res, res
    return bool(res), None


def _minus(stamp: str | None, seconds: float) -> str | None:
    """An ISO time ``seconds`` earlier (None stays None)."""
    if not stamp:
        return None
    from datetime import datetime, timedelta, timezone

    t = datetime.fromisoformat(stamp.replace("Z", "+00:00")) - timedelta(seconds=seconds)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # the format Label Studio parses


@dataclass
class PullResult:
    persons: Persons  # the labels: per person the consensus of the annotators (agreement.consensus)
    findings: list[Finding]
    edits: list[dict[str, Any]]
    watermark: str | None
    tasks: int
    annotations: Persons  # every annotator's labels (attributes annotator, ls_annotation, drawn)
    agreement: np.ndarray  # [P, K] agreement between annotators per keypoint of ``persons``
    annotators: dict[str, int]  # sample id -> how many annotators submitted the task
    reviews: dict[int, dict[str, Any]]  # image id -> the reviewer's decision (REVIEW_CHOICES), who and when


def pull(conn: Connection, project_title: str, since: str | None = None, skeleton: Skeleton = SPINETRACK37,
         sample_ids: set[str] | None = None, first_new_id: int = 1) -> PullResult:
    """Annotated tasks updated after ``since`` (ISO time), converted to COCO with edit statistics.

    Every annotator's latest annotation of a task is kept; the labels are their consensus. A review choice
    the config does not offer is a finding (the task keeps waiting for a valid decision). The new
    watermark is the latest annotation time seen; re-pulling from an older watermark returns the same
    annotations again (the caller merges by annotation id, so pulls are idempotent).
    """
    from ..agreement import consensus

    pid = conn.project_id(project_title)
    ed: list[dict[str, Any]] = []
    stamps: list[str] = []
    counts: dict[str, int] = {}
    reviews: dict[int, dict[str, Any]] = {}
    findings: list[Finding] = []

    def annotated() -> Iterator[dict[str, Any]]:  # converted page by page, while the next page loads
        for t in conn.iter_tasks(pid, only_annotated=True, updated_after=_minus(since, WATERMARK_OVERLAP_S)):
            anns = annotations_of(t)
            sid = str(t["data"].get("sample_id"))
            if anns and (sample_ids is None or sid in sample_ids):
                ed.extend(edits(t, skeleton))
                stamps.extend(str(a.get("updated_at") or "") for a in anns)
                counts[sid] = len(anns)
                _review(t, reviews, findings)
                yield t

    with gc_paused():  # about a million small objects: see gcpause
        labels, f = from_labelstudio(annotated(), skeleton, first_new_id=first_new_id)
    c = consensus(labels)
    watermark = max([s for s in stamps if s] + ([since] if since else []), default=None)
    return PullResult(c.persons, f + findings, ed, watermark, len(counts), labels, c.agreement, counts, reviews)


def _review(task: dict[str, Any], reviews: dict[int, dict[str, Any]], findings: list[Finding]) -> None:
    """The task's review decision into ``reviews``, or a finding when it is not one the config offers."""
    choice, ann = review_decision(task)
    if choice is None or ann is None:
        return
    iid = int(task["data"]["image_id"])
    if choice not in REVIEW_CHOICES:
        findings.append(Finding("ls_unknown_review", "error", None, iid,
                                f"task {task.get('id')}: review choice {choice!r} is not one of "
                                f"{', '.join(map(repr, REVIEW_CHOICES))}; the task stays in review",
                                values={"task_id": task.get("id"), "annotation_id": ann.get("id")}))
        return
    reviews[iid] = {"decision": choice, "task_id": task.get("id"), "annotation_id": ann.get("id"),
                    "annotator": annotator_of(ann), "updated_at": ann.get("updated_at")}
