"""A local stand-in for the Hugging Face Hub: the dataset API, `resolve` redirects and a CDN with ranges.

It speaks the Hub's URL layout and headers (`X-Repo-Commit`, `X-Linked-Etag`, `X-Linked-Size`, 302 to
the content URL, `Accept-Ranges`, 206 with `Content-Range`, `X-Error-Code` on 404s), records every
request, and can cut or stall a transfer part-way to exercise resuming.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self, repo_id: str, files: dict[str, bytes], revisions: dict[str, str] | None = None,
                 token: str | None = None):
        self.repo_id = repo_id
        self.files = files
        self.commit = "0123456789abcdef0123456789abcdef01234567"
        self.revisions = {"main": self.commit, self.commit: self.commit, **(revisions or {})}
        self.token = token
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.cut_once: dict[str, int] = {}  # file name -> drop the connection once after this many bytes
        self.stall: dict[str, int] = {}  # file name -> once, after this many bytes, hang until stopped
        self.corrupt: set[str] = set()  # names served with a flipped byte
        self.ignore_ranges = False
        self._stop = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def sha256(self, name: str) -> str:
        return hashlib.sha256(self.files[name]).hexdigest()

    def content_requests(self, name: str) -> list[str | None]:
        """Range headers of the GETs of one file's content."""
        return [r for m, p, r in self.requests if m == "GET" and p == f"/cdn/{name}"]

    def _info(self) -> dict:
        return {
            "id": self.repo_id, "sha": self.commit, "private": False, "gated": False,
            "siblings": [
                {"rfilename": n, "size": len(b), "blobId": hashlib.sha1(b).hexdigest(),
                 "lfs": {"sha256": self.sha256(n), "size": len(b), "pointerSize": 134}}
                for n, b in self.files.items()
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
                api = f"/api/datasets/{hub.repo_id}"
                resolve = f"/datasets/{hub.repo_id}/resolve/"
                if path == api or path.startswith(api + "/revision/"):
                    if not self._authorised():
                        return
                    rev = path[len(api + "/revision/"):] if path != api else "main"
                    if rev not in hub.revisions:
                        self._send(404, b'{"error": "Invalid rev id"}', {"X-Error-Code": "RevisionNotFound"})
                        return
                    self._send(200, json.dumps(hub._info()).encode(), {"Content-Type": "application/json"})
                elif path.startswith(resolve):
                    if not self._authorised():
                        return
                    rev, _, name = path[len(resolve):].partition("/")
                    if rev not in hub.revisions or name not in hub.files:
                        self._send(404, b"", {"X-Error-Code": "EntryNotFound"})
                        return
                    self._send(302, b"", {
                        "Location": f"{hub.url}/cdn/{name}", "X-Repo-Commit": hub.revisions[rev],
                        "X-Linked-Etag": f'"{hub.sha256(name)}"', "X-Linked-Size": str(len(hub.files[name])),
                        "ETag": f'"{hashlib.sha1(hub.files[name]).hexdigest()}"'})
                elif path.startswith("/cdn/"):
                    self._content(path[len("/cdn/"):])
                else:
                    self._send(404)

            def _content(self, name: str) -> None:
                if name not in hub.files:
                    self._send(404)
                    return
                data = hub.files[name]
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
                self.send_header("ETag", f'"{hub.sha256(name)}"')
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
