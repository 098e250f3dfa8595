"""A private PostgreSQL server for the local Label Studio, or the settings of one given by URL.

``start(folder)`` runs Debian's PostgreSQL (``initdb`` / ``postgres`` from ``/usr/lib/postgresql/<v>/bin`` or
``PATH``) on its own data directory under ``folder``, listening on 127.0.0.1 only (a free port, no Unix
socket), password authentication with a random password kept in a 0600 file. PostgreSQL refuses to run as
root, so under uid 0 it runs as the ``postgres`` user (``nobody`` if there is none), who then owns the data
directory. ``stop`` ends only the server this module started (pid + command line check).

``Database`` is what Label Studio needs either way: ``DJANGO_DB=default`` and the ``POSTGRE_*`` settings.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

from ..io import InputError, atomic_write_text

STATE = "postgres.json"
PASSWORD_FILE = "postgres.password"
USER = "spinetrack"
DBNAME = "labelstudio"
TOOLS = ("initdb", "postgres", "pg_isready", "createdb")


@dataclass
class Database:
    """A PostgreSQL database for Label Studio."""

    host: str
    port: int
    user: str
    password: str
    name: str

    @classmethod
    def from_url(cls, url: str) -> Database:
        """``postgresql://USER:PASSWORD@HOST:PORT/NAME`` (port 5432, name ``postgres`` by default)."""
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("postgres", "postgresql") or not u.hostname or not u.username:
            raise InputError(None, f"not a PostgreSQL URL (postgresql://USER:PASSWORD@HOST:PORT/NAME): {redact(url)}")
        try:
            port = u.port or 5432
        except ValueError:
            raise InputError(None, f"bad port in the database URL {redact(url)}") from None
        return cls(u.hostname, port, urllib.parse.unquote(u.username), urllib.parse.unquote(u.password or ""),
                   urllib.parse.unquote(u.path.lstrip("/")) or "postgres")

    @property
    def url(self) -> str:
        """The URL without the password."""
        return f"postgresql://{urllib.parse.quote(self.user)}@{self.host}:{self.port}/{urllib.parse.quote(self.name)}"

    def label_studio_env(self) -> dict[str, str]:
        """Label Studio's settings for this database (``core/settings/base.py``)."""
        return {"DJANGO_DB": "default", "POSTGRE_NAME": self.name, "POSTGRE_USER": self.user,
                "POSTGRE_PASSWORD": self.password, "POSTGRE_HOST": self.host, "POSTGRE_PORT": str(self.port)}


def redact(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    if u.password is None:
        return url
    return u._replace(netloc=u.netloc.replace(f":{u.password}@", ":***@", 1)).geturl()


@dataclass
class PostgresInfo:
    pid: int
    port: int
    data_dir: str
    run_as: str
    log: str
    password_file: str

    def database(self) -> Database:
        return Database("127.0.0.1", self.port, USER, Path(self.password_file).read_text().strip(), DBNAME)


def binaries() -> Path | None:
    """The folder of PostgreSQL's server programs: next to ``initdb`` on PATH, else Debian's newest
    ``/usr/lib/postgresql/<version>/bin``; None when they are not installed."""
    found = shutil.which("initdb")
    candidates = [Path(os.path.realpath(found)).parent] if found else []
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version(p.parent.name), reverse=True)
    for d in candidates + versions:
        if all((d / t).is_file() for t in TOOLS):
            return d
    return None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in name.split(".") if x.isdigit())


def _bin() -> Path:
    d = binaries()
    if d is None:
        raise InputError(None, "PostgreSQL is not installed (Debian: apt-get install postgresql); "
                               "or give --database-url of a server you run")
    return d


def _run_user() -> pwd.struct_passwd:
    """Who runs the server: ourselves, or under root the ``postgres`` user (else ``nobody``)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise InputError(None, "running as root, and there is no 'postgres' or 'nobody' user to run PostgreSQL as")


def _as_user(user: pwd.struct_passwd) -> dict:
    """Popen arguments that run the child as ``user`` (nothing when that is us)."""
    if user.pw_uid == os.geteuid():
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for this server and the Label Studio in front of it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_info(folder: Path) -> PostgresInfo | None:
    p = folder / STATE
    try:
        return PostgresInfo(**json.loads(p.read_text())) if p.is_file() else None
    except (ValueError, TypeError):
        return None


def ours(pid: int, program: str, data_dir: str) -> bool:
    """True when ``pid`` runs ``program`` on our ``data_dir`` (both in its command line): a pid in a state
    file may have been reused by another process since."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return program in cmd and data_dir in cmd


def running(info: PostgresInfo) -> bool:
    """True when ``info.pid`` is a running postgres of ours."""
    return ours(info.pid, "postgres", info.data_dir)


def _ready(bin_dir: Path, port: int) -> bool:
    r = subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
                       capture_output=True)
    return r.returncode == 0


def _write_secret(path: Path, text: str) -> None:
    """Write ``text`` to a file that is 0600 from its creation on (never readable by others, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode otherwise
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _initdb(bin_dir: Path, home: Path, data: Path, user: pwd.struct_passwd, password: str) -> None:
    """A new cluster in ``data`` owned by ``user``: superuser USER, password (SCRAM) authentication only."""
    pwfile = home / "initdb.pw"  # readable by the run user only, removed at once
    _write_secret(pwfile, password + "\n")
    os.chown(pwfile, user.pw_uid, user.pw_gid)
    try:
        r = subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}",
                            "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"],
                           capture_output=True, text=True, cwd=home, **_as_user(user))
    finally:
        pwfile.unlink(missing_ok=True)
    if r.returncode != 0:
        raise InputError(data, f"initdb failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    # loopback only: replace the sample rules (which also allow the Unix socket) with TCP from 127.0.0.1
    hba = data / "pg_hba.conf"
    hba.write_text("# spinetrack: TCP from 127.0.0.1 only, password (SCRAM)\n"
                   "host all all 127.0.0.1/32 scram-sha-256\n")
    os.chown(hba, user.pw_uid, user.pw_gid)


def initialised(folder: Path) -> bool:
    """Whether ``folder`` has a cluster of ours (made by an earlier ``start``)."""
    if not (folder / "postgres" / "data" / "PG_VERSION").is_file():
        return False
    if not (folder / PASSWORD_FILE).is_file():
        raise InputError(folder / PASSWORD_FILE, "the PostgreSQL cluster here has lost its password file")
    return True


def start(folder: Path, timeout: float = 60.0) -> PostgresInfo:
    """Start (or find running) the PostgreSQL whose data lives in ``folder/postgres``; create the database."""
    folder = folder.resolve()
    info = read_info(folder)
    bin_dir = _bin()
    if info and running(info):
        return info
    user = _run_user()
    folder.mkdir(parents=True, exist_ok=True)
    home, pw_path = folder / "postgres", folder / PASSWORD_FILE
    data = home / "data"
    if not initialised(folder):
        if user.pw_uid != os.geteuid():
            probe = subprocess.run(["test", "-x", str(folder)], **_as_user(user))
            if probe.returncode != 0:
                raise InputError(folder, f"PostgreSQL runs as user {user.pw_name!r} (it refuses root), who cannot "
                                         "reach this folder: use a --dir that user can traverse")
        shutil.rmtree(home, ignore_errors=True)  # a half-made cluster from an interrupted first start
        home.mkdir(mode=0o700)
        os.chown(home, user.pw_uid, user.pw_gid)
        password = secrets.token_urlsafe(24)
        _write_secret(pw_path, password)
        _initdb(bin_dir, home, data, user, password)
    port = free_port()
    log = folder / "postgres.log"
    cmd = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
           "-c", "unix_socket_directories=", "-c", "max_connections=100"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=home, **_as_user(user))
    info = PostgresInfo(proc.pid, port, str(data), user.pw_name, str(log), str(pw_path))
    atomic_write_text(folder / STATE, json.dumps(asdict(info), indent=1))
    deadline = time.monotonic() + timeout
    while not _ready(bin_dir, port):
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-3:]
            raise InputError(log, f"PostgreSQL exited with code {proc.returncode}: {' | '.join(tail)}")
        if time.monotonic() > deadline:
            stop(folder)
            raise InputError(log, f"PostgreSQL did not accept connections on 127.0.0.1:{port} within {timeout:.0f} s")
        time.sleep(0.2)
    _create_database(bin_dir, info.database())
    return info


def _create_database(bin_dir: Path, db: Database) -> None:
    env = {**os.environ, "PGPASSWORD": db.password}
    r = subprocess.run([str(bin_dir / "createdb"), "-h", db.host, "-p", str(db.port), "-U", db.user, db.name],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0 and "already exists" not in r.stderr:
        raise InputError(None, f"createdb {db.name} failed: {r.stderr.strip()}")


def stop(folder: Path, timeout: float = 30.0) -> bool:
    """Stop the PostgreSQL started from ``folder`` (fast shutdown); False when none of ours was running."""
    info = read_info(folder.resolve())
    if info is None or not running(info):
        return False
    try:
        os.kill(info.pid, signal.SIGINT)  # "fast" shutdown: roll back open transactions, checkpoint, exit
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running(info):
        time.sleep(0.1)
    if running(info):
        os.kill(info.pid, signal.SIGQUIT)
    return True
