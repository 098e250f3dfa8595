"""A local stand-in for the Hugging Face Hub: the dataset and model APIs, `resolve` redirects and a CDN with
ranges.

It speaks the Hub's URL layout and headers (`/api/datasets/<repo>[/revision/<rev>]`, `/api/models/<repo>[/revision/
<rev>]`, `/datasets/<repo>/resolve/<rev>/<file>` and `/<repo>/resolve/<rev>/<file>` with `X-Repo-Commit`,
`X-Linked-Etag`, `X-Linked-Size` and a 302 to the content URL, `Accept-Ranges`, 206 with `Content-Range`,
`X-Error-Code` on 404s), records every request, and can cut or stall a transfer part-way to exercise resuming.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class FakeHub:
    """One dataset repository (``repo_id``, ``files``) and any number of model repositories (``models``: repo id
    -> files), all at one commit, reachable by the names in ``revisions`` too."""

    def __init__(self, repo_id: str | None, files: dict[str, bytes] | None = None,
                 revisions: dict[str, str] | None = None, token: str | None = None,
                 models: dict[str, dict[str, bytes]] | None = None):
        self.repo_id = repo_id
        self.files = files or {}
        self.models = models or {}
        self.commit = "0123456789abcdef0123456789abcdef01234567"
        self.revisions = {"main": self.commit, self.commit: self.commit, **(revisions or {})}
        self.token = token
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.cut_once: dict[str, int] = {}  # file name -> drop the connection once after this many bytes
        self.stall: dict[str, int] = {}  # file name -> once, after this many bytes, hang until stopped
        self.corrupt: set[str] = set()  # names served with a flipped byte
        self.ignore_ranges = False
        self._stop = threading.Event()
        # the content is served from another origin (port), as the Hub's CDN: huggingface_hub follows a
        # redirect on the same origin while reading a file's metadata, and stops at one to another
        self.servers = [ThreadingHTTPServer(("127.0.0.1", 0), self._handler()) for _ in range(2)]
        for server in self.servers:
            server.daemon_threads = True
        self.server = self.servers[0]
        self.url, self.cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in self.servers)
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in self.servers]

    def __enter__(self) -> "FakeHub":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for server in self.servers:
            server.shutdown()
            server.server_close()

    def sha256(self, name: str, repo: str | None = None) -> str:
        return hashlib.sha256(self._files(repo)[name]).hexdigest()

    def _files(self, repo: str | None) -> dict[str, bytes]:
        return self.files if repo is None else self.models[repo]

    def _cdn(self, name: str, repo: str | None) -> str:
        return f"/cdn/{name}" if repo is None else f"/cdn/{repo}/{name}"

    def content_requests(self, name: str, repo: str | None = None) -> list[str | None]:
        """Range headers of the GETs of one file's content (of the dataset, or of model repository ``repo``)."""
        return [r for m, p, r in self.requests if m == "GET" and p == self._cdn(name, repo)]

    def _info(self, repo: str | None = None) -> dict:
        return {
            "id": self.repo_id if repo is None else repo, "sha": self.commit, "private": False, "gated": False,
            "siblings": [
                {"rfilename": n, "size": len(b), "blobId": hashlib.sha1(b).hexdigest(),
                 "lfs": {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b), "pointerSize": 134}}
                for n, b in self._files(repo).items()
            ],
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _authorised(self) -> bool:
                if hub.token is None or self.headers.get("Authorization") == f"Bearer {hub.token}":
                    return True
                self._send(401, b'{"error": "Invalid credentials"}', {"X-Error-Message": "Invalid credentials"})
                return False

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path, self.headers.get("Range")))
                repos = [(f"/api/models/{r}", f"/{r}/resolve/", r) for r in hub.models]
                if hub.repo_id:
                    repos.append((f"/api/datasets/{hub.repo_id}", f"/datasets/{hub.repo_id}/resolve/", None))
                for api, resolve, repo in repos:
                    if path == api or path.startswith(api + "/revision/"):
                        self._api(path, api, repo)
                        return
                    if path.startswith(resolve):
                        self._resolve(path[len(resolve):], repo)
                        return
                if path.startswith("/cdn/"):
                    rest = path[len("/cdn/"):]
                    repo = next((r for r in hub.models if rest.startswith(r + "/")), None)
                    self._content(rest[len(repo) + 1:] if repo else rest, repo)
                elif path.startswith("/api/"):
                    self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
                else:
                    self._send(404)

            def _api(self, path: str, api: str, repo: str | None) -> None:
                if not self._authorised():
                    return
                rev = path[len(api + "/revision/"):] if path != api else "main"
                if rev not in hub.revisions:
                    self._send(404, b'{"error": "Invalid rev id"}', {"X-Error-Code": "RevisionNotFound"})
                    return
                self._send(200, json.dumps(hub._info(repo)).encode(), {"Content-Type": "application/json"})

            def _resolve(self, rest: str, repo: str | None) -> None:
                if not self._authorised():
                    return
                rev, _, name = rest.partition("/")
                files = hub._files(repo)
                if rev not in hub.revisions or name not in files:
                    self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": hub.commit})
                    return
                self._send(302, b"", {
                    "Location": f"{hub.cdn_url}{hub._cdn(name, repo)}", "X-Repo-Commit": hub.revisions[rev],
                    "X-Linked-Etag": f'"{hub.sha256(name, repo)}"', "X-Linked-Size": str(len(files[name])),
                    "ETag": f'"{hashlib.sha1(files[name]).hexdigest()}"'})

            def _content(self, name: str, repo: str | None = None) -> None:
                files = hub._files(repo)
                if name not in files:
                    self._send(404)
                    return
                data = files[name]
                if name in hub.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start, end = 0, len(data) - 1
                rng = self.headers.get("Range")
                partial = rng is not None and not hub.ignore_ranges
                if partial:
                    a, _, b = rng.removeprefix("bytes=").partition("-")
                    start, end = int(a), min(int(b) if b else len(data) - 1, len(data) - 1)
                body = data[start:end + 1]
                self.send_response(206 if partial else 200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{hub.sha256(name, repo)}"')
                self.send_header("Content-Length", str(len(body)))
                if partial:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.end_headers()
                if self.command == "HEAD":
                    return
                def hits(table: dict[str, int]) -> int | None:  # once, for the transfer that crosses it
                    at = table.get(name)
                    return table.pop(name) if at is not None and start < at <= end + 1 else None

                cut, stall = hits(hub.cut_once), hits(hub.stall)
                limit = cut if cut is not None else stall
                if limit is not None:
                    self.wfile.write(body[:limit - start])
                    self.wfile.flush()
                    if cut is None:
                        while not hub._stop.is_set():
                            time.sleep(0.05)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        return Handler


def closed_port_url() -> str:
    """An address on this machine where nothing listens: the Hub unreachable."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def hub_env(hub: FakeHub | None, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a process that reaches ``hub`` (None: no Hub) as HF_ENDPOINT with its own cache
    under ``home``."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE")}
    env.update({"HF_HOME": str(home), "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"})
    env["HF_ENDPOINT"] = hub.url if hub is not None else closed_port_url()
    env.update(extra)
    return env


if __name__ == "__main__":  # python -m tests.hub_server NAME ...: serve random-weight released models until killed
    import sys
    import tempfile

    from .onnx_models import released_repos

    with tempfile.TemporaryDirectory() as tmp, FakeHub(None, models=released_repos(Path(tmp), tuple(sys.argv[1:]))) \
            as served:
        print(f"HF_ENDPOINT={served.url}", flush=True)
        threading.Event().wait()
