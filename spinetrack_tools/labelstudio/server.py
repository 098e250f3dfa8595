"""A local Label Studio server: started detached on 127.0.0.1 with SQLite under a folder of ours (or on
PostgreSQL: a private server of ours, see ``postgres``, or one given by URL), an admin user and API token
created non-interactively, local-file serving restricted to a data root, telemetry and version checks off.
``stop`` ends only the servers this module started (pid file + command line check)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from ..io import InputError, atomic_write_text
from . import postgres as pg

STATE = "server.json"
USERNAME = "admin@spinetrack.local"


@dataclass
class ServerInfo:
    url: str
    port: int
    pid: int
    username: str
    password: str
    token: str
    data_dir: str
    document_root: str
    log: str
    database: str = "sqlite"  # or the PostgreSQL URL, without its password


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health/", timeout=timeout) as r:
            return r.status == 200 and json.loads(r.read()).get("status") == "UP"
    except (OSError, ValueError, urllib.error.URLError):
        return False


def _executable() -> str:
    exe = Path(sys.executable).with_name("label-studio")
    if exe.is_file():
        return str(exe)
    found = shutil.which("label-studio")
    if not found:
        raise InputError(None, "label-studio is not installed: pip install 'spinetrack-tools[label-studio]'")
    return found


def read_info(folder: Path) -> ServerInfo | None:
    p = folder / STATE
    if not p.is_file():
        return None
    try:
        return ServerInfo(**json.loads(p.read_text()))
    except (ValueError, TypeError):
        return None


def _alive(pid: int, data_dir: str) -> bool:
    """True when ``pid`` is a running Label Studio of ours (its command line names our data folder)."""
    return pg.ours(pid, "label-studio", data_dir)


def start(folder: Path, document_root: Path, port: int | None = None, timeout: float = 240.0,
          postgres: bool = False, database_url: str | None = None) -> ServerInfo:
    """Start (or find running) the server whose state lives in ``folder``; wait for ``/health/``.

    ``postgres``: on a PostgreSQL server of ours with its data in ``folder`` (started too); ``database_url``:
    on that PostgreSQL database (``postgresql://USER:PASSWORD@HOST:PORT/NAME``); else SQLite in ``folder``,
    unless ``folder`` already has a PostgreSQL of ours (the folder keeps its back end).
    """
    folder = folder.resolve()
    document_root = document_root.resolve()
    if postgres and database_url:
        raise InputError(None, "give either --postgres (a server of ours) or --database-url, not both")
    info = read_info(folder)
    if info and _alive(info.pid, info.data_dir) and healthy(info.url):
        wanted = pg.Database.from_url(database_url).url if database_url else "postgresql" if postgres else None
        if wanted and not info.database.startswith(wanted):
            raise InputError(folder, f"Label Studio already runs from here on {info.database}: stop it first")
        return info
    folder.mkdir(parents=True, exist_ok=True)
    postgres = postgres or (not database_url and pg.initialised(folder))
    db = pg.start(folder).database() if postgres else pg.Database.from_url(database_url) if database_url else None
    data_dir = folder / "data"
    data_dir.mkdir(exist_ok=True)
    secret_file = folder / "credentials.json"  # the user and token exist from the first start on
    if secret_file.is_file():
        cred = json.loads(secret_file.read_text())
    else:
        cred = {"password": secrets.token_hex(10), "token": secrets.token_hex(20)}
        atomic_write_text(secret_file, json.dumps(cred))
        os.chmod(secret_file, 0o600)
    port = port or pg.free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT", "USERNAME", "PASSWORD")}
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "LATEST_VERSION_CHECK": "false", "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false", "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "DJANGO_SETTINGS_MODULE": "spinetrack_tools.labelstudio.ls_settings",  # no telemetry, GC paused per request
    })
    if db is not None:
        env.update(db.label_studio_env())
    log = folder / "server.log"
    cmd = [_executable(), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(port),
           "--data-dir", str(data_dir), f"--username={USERNAME}", f"--password={cred['password']}",
           f"--user-token={cred['token']}", "--enable-legacy-api-token", "--log-level", "WARNING"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    info = ServerInfo(url, port, proc.pid, USERNAME, cred["password"], cred["token"], str(data_dir),
                      str(document_root), str(log), db.url if db else _default_database(env))
    atomic_write_text(folder / STATE, json.dumps(asdict(info), indent=1))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-5:]
            stop(folder)  # our PostgreSQL, if any
            raise InputError(log, f"Label Studio exited with code {proc.returncode}: {' | '.join(tail)}")
        if healthy(url):
            return info
        time.sleep(1.0)
    stop(folder)
    raise InputError(log, f"Label Studio did not answer on {url}/health/ within {timeout:.0f} s")


def _default_database(env: dict[str, str]) -> str:
    """What Label Studio uses without our database settings: SQLite unless the environment says otherwise."""
    return "sqlite" if env.get("DJANGO_DB", "sqlite") == "sqlite" else f"DJANGO_DB={env['DJANGO_DB']} (environment)"


def stop(folder: Path, timeout: float = 30.0) -> bool:
    """Stop the server started from ``folder``, and then its PostgreSQL if it has one of ours; False when
    none of ours was running."""
    stopped = _stop_label_studio(folder, timeout)
    return pg.stop(folder.resolve(), timeout) or stopped


def _stop_label_studio(folder: Path, timeout: float) -> bool:
    info = read_info(folder.resolve())
    if info is None or not _alive(info.pid, info.data_dir):
        return False
    try:
        os.killpg(info.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(info.pid, info.data_dir):
        time.sleep(0.2)
    if _alive(info.pid, info.data_dir):
        os.killpg(info.pid, signal.SIGKILL)
    return True


def status(folder: Path) -> dict:
    info = read_info(folder.resolve())
    if info is None:
        return {"running": False, "folder": str(folder)}
    running = _alive(info.pid, info.data_dir)
    out = {"running": running, "healthy": running and healthy(info.url), **asdict(info)}
    own = pg.read_info(folder.resolve())
    if own is not None:
        out["postgres"] = {"running": pg.running(own), **asdict(own)}
    return out
