"""Label Studio on a real PostgreSQL: the private server of `labelstudio start --postgres` (loopback only, a 0600
password file, not root), a push/pull round trip that survives both servers being killed, active-learning rounds
killed mid-stage and rerun, and a second Label Studio on the same database through --database-url."""

from __future__ import annotations

import copy
import json
import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spinetrack_tools import synth
from spinetrack_tools.io import InputError
from spinetrack_tools.labelstudio import postgres, server
from spinetrack_tools.labelstudio.client import Connection, connect, image_url, pull, push
from spinetrack_tools.labelstudio.convert import to_labelstudio
from spinetrack_tools.persons import Persons
from spinetrack_tools.skeleton import SPINETRACK37


pytestmark = [pytest.mark.integration, pytest.mark.slow]
K = SPINETRACK37.num_keypoints


def _listening(port: int) -> list[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6, hex as the kernel writes them)."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                out.append(addr)
    return out


def _connect(db: postgres.Database, password: str | None = None):
    psycopg = pytest.importorskip("psycopg")
    return psycopg.connect(host=db.host, port=db.port, user=db.user, dbname=db.name, connect_timeout=10,
                           password=db.password if password is None else password)


def test_the_private_server_is_loopback_only_not_root_with_a_0600_password(label_studio_pg):
    _, _, folder = label_studio_pg
    info = server.read_info(folder)  # the servers' current pids (another test restarts them)
    own = postgres.read_info(folder)
    assert own is not None and postgres.running(own)
    db = own.database()
    assert info.database == db.url == f"postgresql://spinetrack@127.0.0.1:{own.port}/labelstudio"
    assert (Path(own.password_file).stat().st_mode & 0o777) == 0o600 and len(db.password) >= 24
    assert _listening(own.port) == ["0100007F"]  # 127.0.0.1, nothing else, no IPv6
    uid = os.stat(f"/proc/{own.pid}").st_uid
    assert uid == os.geteuid() if os.geteuid() != 0 else uid == pwd.getpwnam(own.run_as).pw_uid != 0
    with pytest.raises(Exception, match="password authentication failed"):
        _connect(db, password="wrong")
    # Label Studio runs with DJANGO_DB=default and the POSTGRE_* settings, and keeps nothing in SQLite
    raw = open(f"/proc/{info.pid}/environ", "rb").read().split(b"\0")
    env = dict(kv.decode().split("=", 1) for kv in raw if b"=" in kv)
    assert env["DJANGO_DB"] == "default" and env["POSTGRE_PORT"] == str(own.port)
    assert env["POSTGRE_HOST"] == "127.0.0.1" and env["POSTGRE_NAME"] == "labelstudio"
    assert not list(Path(info.data_dir).glob("*.sqlite3"))
    with _connect(db) as c:
        assert c.execute("select email from htx_user").fetchall() == [(server.USERNAME,)]
    st = server.status(folder)
    assert st["healthy"] and st["postgres"]["running"]


def _moved(task: dict, dx: float, dy: float) -> list[dict]:
    """The task's prediction with every keypoint moved by (dx, dy) px, as an annotator would submit it."""
    result = copy.deepcopy(task["predictions"][0]["result"])
    for r in result:
        if r["type"] == "keypointlabels":
            r["value"]["x"] += dx / r["original_width"] * 100
            r["value"]["y"] += dy / r["original_height"] * 100
    return result


def _by_id(coco: dict) -> dict[int, np.ndarray]:
    return {a["id"]: np.array(a["keypoints"], dtype=float).reshape(K, 3) for a in coco["annotations"]}


def _kill_group(pid: int) -> None:
    """SIGKILL a server's process group and reap it (it is this process's child: a zombie would still hold
    its pid, which PostgreSQL's lock file names)."""
    os.killpg(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # already reaped (by subprocess's own clean-up)
        pass


def test_push_pull_round_trip_survives_killing_both_servers(label_studio_pg):
    info, root, folder = label_studio_pg
    images = root / "pg-set"
    coco = synth.generate(8, seed=11, persons_per_image=(1, 3), image_dir=images, fk="numpy")
    tasks = to_labelstudio(Persons.from_coco(coco), image_url=image_url(root, images), model_version="pg-1")
    conn = Connection.open(info.url, info.token)
    res = push(conn, "pg-roundtrip", tasks, images, root, "pg-1")
    assert len(res.created) == len(tasks) and not res.existing
    expected = _by_id(coco)
    for i, t in enumerate(tasks):
        dx, dy = 1.25 * (i + 1), -0.5 * i
        conn.ls.annotations.create(id=res.created[t["data"]["sample_id"]], result=_moved(t, dx, dy))
        for a in coco["annotations"]:
            if a["image_id"] == t["data"]["image_id"]:
                kp = expected[a["id"]]
                kp[kp[:, 2] > 0, :2] += (dx, dy)

    def check(out) -> None:
        assert out.tasks == len(tasks) and out.findings == []
        got = _by_id(out.persons.to_coco())
        assert set(got) == set(expected)
        for aid, kp in expected.items():
            assert np.array_equal(got[aid][:, 2], kp[:, 2]), aid
            assert np.allclose(got[aid][:, :2], kp[:, :2], rtol=0, atol=1e-6), aid

    first = pull(conn, "pg-roundtrip")
    check(first)
    # both servers killed without warning (no shutdown, PostgreSQL recovers from its log), then started again
    own, current = postgres.read_info(folder), server.read_info(folder)
    _kill_group(current.pid)
    _kill_group(own.pid)
    assert not server.status(folder)["running"] and not postgres.running(own)
    again = server.start(folder, root, port=info.port)
    assert again.database.startswith("postgresql://") and postgres.read_info(folder).pid != own.pid
    conn = Connection.open(again.url, again.token)
    check(pull(conn, "pg-roundtrip"))
    assert pull(conn, "pg-roundtrip", since=first.watermark).watermark == first.watermark  # nothing new
    re_push = push(conn, "pg-roundtrip", tasks, images, root, "pg-1")
    assert not re_push.created and re_push.existing == res.created


def test_two_imports_at_once_attach_every_annotation_to_its_own_task(label_studio_pg):
    info, root, folder = label_studio_pg
    conn, _ = connect(server_dir=folder)
    assert conn.imports_in_flight == 2  # our server, on PostgreSQL
    images = root / "pg-concurrent"
    coco = synth.generate(12, seed=12, persons_per_image=(1, 3), image_dir=images, fk="numpy")
    tasks = to_labelstudio(Persons.from_coco(coco), image_url=image_url(root, images), model_version="pg-1")
    expected = _by_id(coco)
    for i, t in enumerate(tasks):  # each task's annotation moved its own way: a mix-up cannot go unseen
        dx, dy = 2.0 * (i + 1), 0.75 * i
        t["annotations"] = [{"result": _moved(t, dx, dy)}]
        for a in coco["annotations"]:
            if a["image_id"] == t["data"]["image_id"]:
                kp = expected[a["id"]]
                kp[kp[:, 2] > 0, :2] += (dx, dy)
    res = push(conn, "pg-concurrent", tasks, images, root, "pg-1", batch_size=2)  # 6 imports, 2 at a time
    assert len(res.created) == len(tasks) == len(set(res.created.values()))
    out = pull(conn, "pg-concurrent")
    got = _by_id(out.persons.to_coco())
    assert out.tasks == len(tasks) and set(got) == set(expected)
    for aid, kp in expected.items():
        assert np.allclose(got[aid][:, :2], kp[:, :2], rtol=0, atol=1e-6) and np.array_equal(got[aid][:, 2], kp[:, 2])


def _ls(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spinetrack_tools", "labelstudio", *args], capture_output=True,
                          text=True, env=env, timeout=400)


def test_a_second_label_studio_on_the_same_database_by_url(label_studio_pg, tmp_path):
    info, root, folder = label_studio_pg
    own = postgres.read_info(folder)
    db = own.database()
    conn = Connection.open(info.url, info.token)
    pid = conn.ls.projects.create(title="shared").id
    second = tmp_path / "front2"
    second.mkdir()
    (second / "credentials.json").write_text((folder / "credentials.json").read_text())  # the same admin
    url = f"postgresql://{db.user}:{db.password}@127.0.0.1:{db.port}/{db.name}"
    r = _ls("start", "--dir", str(second), "--data-root", str(root), "--database-url", url)
    try:
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"database: {db.url}" in r.stdout and db.password not in r.stdout
        st = server.status(second)
        assert st["healthy"] and st["database"] == db.url and "postgres" not in st  # no server of its own
        other = Connection.open(st["url"], info.token)
        assert other.find_project("shared") == pid  # what one front end wrote, the other reads
    finally:
        r = _ls("stop", "--dir", str(second))
    assert r.returncode == 0 and "stopped" in r.stdout
    assert postgres.running(own) and server.healthy(info.url)  # the shared database was not ours to stop


def test_bad_database_options_are_one_line_and_exit_2(tmp_path):
    r = _ls("start", "--dir", str(tmp_path / "a"), "--postgres", "--database-url", "postgresql://u:p@h/db")
    assert r.returncode == 2 and "not both" in r.stderr and "Traceback" not in r.stderr
    r = _ls("start", "--dir", str(tmp_path / "b"), "--database-url", "mysql://u:secret@h/db")
    assert r.returncode == 2 and "not a PostgreSQL URL" in r.stderr and "secret" not in r.stderr


def test_a_running_server_is_not_switched_to_another_database(label_studio_pg):
    info, root, folder = label_studio_pg
    with pytest.raises(InputError, match="already runs from here on postgresql://spinetrack@127.0.0.1"):
        server.start(folder, root, database_url="postgresql://someone:pw@127.0.0.1:1/other")
    assert server.start(folder, root, postgres=True).pid == server.read_info(folder).pid  # the same one
