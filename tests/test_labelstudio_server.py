"""Label Studio integration against a real server started by the test suite: push a multi-person set,
annotate through the REST API as a person would (move, occlude, delete, add, add without a parent), pull,
and compare exactly; idempotent push, incremental pull, clear errors."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from spinetrack_tools import synth
from spinetrack_tools.labelstudio.client import Connection, LabelStudioError, connect, image_url, pull, push
from spinetrack_tools.labelstudio.convert import to_labelstudio, to_result
from spinetrack_tools.persons import Persons
from spinetrack_tools.labelstudio.server import status, stop
from spinetrack_tools.skeleton import SPINETRACK37

pytestmark = pytest.mark.integration
K = SPINETRACK37.num_keypoints


@pytest.fixture(scope="module")
def pushed(label_studio):
    info, root, _ = label_studio
    images = root / "set1"
    coco = synth.generate(6, seed=4, persons_per_image=(2, 3), image_dir=images, fk="numpy")
    conn = Connection.open(info.url, info.token)
    tasks = to_labelstudio(Persons.from_coco(coco), image_url=image_url(root, images), model_version="round-1")
    res = push(conn, "integration", tasks, images, root, "round-1")
    return conn, coco, tasks, res, images


def test_push_creates_tasks_with_visible_predictions_and_is_idempotent(pushed, label_studio):
    conn, coco, tasks, res, images = pushed
    info, root, _ = label_studio
    assert len(res.created) == len(coco["images"]) and not res.existing
    project = conn.ls.projects.get(id=res.project)
    assert project.model_version == "round-1"
    again = push(conn, "integration", tasks, images, root, "round-1")
    assert not again.created and again.existing == res.created
    t = conn.ls.tasks.get(id=next(iter(res.created.values())))
    assert t.predictions and t.predictions[0].model_version == "round-1"
    # the image is served from local files
    req = urllib.request.Request(info.url + tasks[0]["data"]["image"], headers={"Authorization": f"Token {info.token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200 and r.read(3) == b"\xff\xd8\xff"


def test_annotator_edits_come_back_exactly(pushed):
    conn, coco, tasks, res, _ = pushed
    task = tasks[0]
    im = coco["images"][0]
    W, H = im["width"], im["height"]
    result = copy.deepcopy(task["predictions"][0]["result"])
    anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
    expected = {a["id"]: np.array(a["keypoints"], dtype=float).reshape(K, 3) for a in anns}
    first, second = anns[0]["id"], anns[1]["id"]

    def region(pid, name):
        return next(r for r in result if r.get("parentID") == f"a{pid}" and r["value"]["keypointlabels"] == [name])

    lab = [SPINETRACK37.names[k] for k in np.flatnonzero(expected[first][:, 2] > 0)]
    # move one joint by (7.5, -3.25) px
    moved = region(first, lab[0])
    moved["value"]["x"] += 7.5 / W * 100
    moved["value"]["y"] -= 3.25 / H * 100
    j = SPINETRACK37.index(lab[0])
    expected[first][j, :2] += (7.5, -3.25)
    # mark another occluded (or visible again)
    j2 = SPINETRACK37.index(lab[1])
    occ = [r for r in result if r["type"] == "choices" and r["id"] == f"a{first}_k{j2}"]
    if occ:
        result.remove(occ[0])
        expected[first][j2, 2] = 2
    else:
        result.append({"id": f"a{first}_k{j2}", "from_name": "kp_vis", "to_name": "image", "type": "choices",
                       "value": {"choices": ["occluded"]}})
        expected[first][j2, 2] = 1
    # delete a third
    j3 = SPINETRACK37.index(lab[2])
    result = [r for r in result if r.get("id") != f"a{first}_k{j3}"]
    expected[first][j3] = 0
    # add a missing joint with its parent, and one without a parent inside the second person's box only
    missing = [k for k in range(K) if expected[second][k, 2] == 0]
    box = np.array(anns[1]["bbox"])
    x, y = box[0] + box[2] * 0.5, box[1] + box[3] * 0.5
    for k, with_parent in zip(missing[:2], (True, False)):
        one = Persons.build(SPINETRACK37, np.where(np.arange(K)[:, None] == k, [[x, y, 2]], 0.0), [im["id"]],
                            ann_ids=[second], boxes=box)
        r = to_result(one, [0], W, H)[1]
        if not with_parent:
            del r["parentID"]
            r["id"] = "manual-1"
        result.append(r)
        expected[second][k] = (x, y, 2)
    conn.ls.annotations.create(id=res.created[task["data"]["sample_id"]], result=result)
    out = pull(conn, "integration")
    assert out.findings == [] and out.tasks == 1
    got = {a["id"]: np.array(a["keypoints"], dtype=float).reshape(K, 3) for a in out.persons.to_coco()["annotations"]}
    other = [a for a in anns if a["id"] not in (first, second)]
    assert set(got) == set(expected)
    for aid, kp in expected.items():
        assert np.array_equal(got[aid][:, 2], kp[:, 2]), aid
        assert np.allclose(got[aid][:, :2], kp[:, :2], rtol=0, atol=1e-6), aid
    for a in other:
        assert np.allclose(got[a["id"]], np.array(a["keypoints"]).reshape(K, 3), atol=1e-6)
    by = {(e["region"], e["keypoint"]): e for e in out.edits}
    assert by[(f"a{first}", lab[0])]["edit"] == "moved"
    assert abs(by[(f"a{first}", lab[0])]["distance_px"] - np.hypot(7.5, 3.25)) < 1e-6
    assert by[(f"a{first}", lab[2])]["edit"] == "removed"


def test_incremental_pull_and_cancelled_annotations(pushed):
    conn, coco, tasks, res, _ = pushed
    first = pull(conn, "integration")
    t2 = tasks[1]
    tid = res.created[t2["data"]["sample_id"]]
    conn.ls.annotations.create(id=tid, result=t2["predictions"][0]["result"])
    later = pull(conn, "integration", since=first.watermark)
    assert set(later.persons.images["id"]) >= {t2["data"]["image_id"]}
    tid3 = res.created[tasks[2]["data"]["sample_id"]]
    conn.ls.annotations.create(id=tid3, result=[], was_cancelled=True)
    ids = set(pull(conn, "integration").persons.images["id"])
    assert tasks[2]["data"]["image_id"] not in ids


def test_task_listing_pages_through_every_task_once_with_the_fields_pull_reads(pushed):
    conn, coco, tasks, res, _ = pushed
    pid = res.project
    one_page = list(conn.iter_tasks(pid))
    paged = list(conn.iter_tasks(pid, page_size=2))  # 3 pages, the next fetched while this one is read
    assert [t["id"] for t in paged] == [t["id"] for t in one_page]
    assert sorted(t["id"] for t in paged) == sorted(res.created.values())
    t = next(t for t in paged if t["id"] == res.created[tasks[0]["data"]["sample_id"]])
    assert set(t) == {"id", "data", "annotations", "predictions"}
    assert t["data"] == {**tasks[0]["data"], "image": t["data"]["image"]}
    assert t["predictions"][0]["result"] == tasks[0]["predictions"][0]["result"]
    assert {"id", "model_version", "created_at"} <= set(t["predictions"][0])
    annotated = [a for t in paged for a in t["annotations"]]
    assert annotated and all({"id", "result", "was_cancelled", "updated_at"} <= set(a) for a in annotated)


def test_errors_are_clear(label_studio):
    info, _, _ = label_studio
    with pytest.raises(LabelStudioError, match="cannot reach Label Studio"):
        Connection.open("http://127.0.0.1:9", "x" * 40)
    with pytest.raises(LabelStudioError, match="API key was rejected"):
        Connection.open(info.url, "0" * 40)
    conn = Connection.open(info.url, info.token)
    with pytest.raises(LabelStudioError, match="no project titled"):
        pull(conn, "no such project")


def test_imports_in_flight_from_the_environment(label_studio, monkeypatch, tmp_path):
    """SPINETRACK_LS_IMPORTS sets the imports in flight for a server named by URL (one the toolkit cannot see
    the database of); our own server on SQLite refuses more than one, and a bad value is one clear line."""
    info, root, folder = label_studio
    monkeypatch.setenv("SPINETRACK_LS_IMPORTS", "3")
    assert connect(info.url, info.token)[0].imports_in_flight == 3
    with pytest.raises(LabelStudioError, match="runs on SQLite, which takes one import at a time"):
        connect(server_dir=folder)
    monkeypatch.setenv("SPINETRACK_LS_IMPORTS", "1")
    assert connect(server_dir=folder)[0].imports_in_flight == 1
    monkeypatch.setenv("SPINETRACK_LS_IMPORTS", "two")
    env = {**os.environ, "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(root)}
    r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "labelstudio", "pull", "--project", "cli",
                        "--out", str(tmp_path / "o.json"), "--url", info.url, "--api-key", info.token],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "SPINETRACK_LS_IMPORTS must be a whole number >= 1, not 'two'" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "o.json").exists()


def test_cli_push_pull_and_status(tmp_path, label_studio):
    info, root, folder = label_studio
    images = root / "set2"
    coco = synth.generate(3, seed=9, image_dir=images, fk="numpy")
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    env_args = ["--url", info.url, "--api-key", info.token]
    import os

    env = {**os.environ, "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(root)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "spinetrack_tools", "labelstudio", *a],  # noqa: E731
                                    capture_output=True, text=True, env=env)
    r = run("push", str(tmp_path / "gt.json"), "--images", str(images), "--project", "cli", *env_args,
            "--record", str(tmp_path / "tasks.json"))
    assert r.returncode == 0, r.stderr
    assert "3 tasks created" in r.stdout and len(json.loads((tmp_path / "tasks.json").read_text())) == 3
    r = run("push", str(tmp_path / "gt.json"), "--images", str(images), "--project", "cli", *env_args)
    assert "0 tasks created, 3 already there" in r.stdout
    r = run("pull", "--project", "cli", "--out", str(tmp_path / "out.json"), *env_args)
    assert r.returncode == 0 and "0 annotated tasks" in r.stdout
    r = run("pull", "--project", "nope", "--out", str(tmp_path / "o2.json"), *env_args)
    assert r.returncode == 2 and "no project titled 'nope'" in r.stderr and not (tmp_path / "o2.json").exists()
    r = run("status", "--dir", str(folder))
    assert r.returncode == 0 and info.url in r.stdout
    assert status(folder)["healthy"]
    assert not stop(tmp_path)  # nothing of ours runs from an unrelated folder


def test_local_server_runs_label_studios_settings_without_telemetry_and_with_gc_paused_per_request(label_studio):
    info, _, _ = label_studio
    raw = open(f"/proc/{info.pid}/environ", "rb").read().split(b"\0")
    environ = dict(kv.split(b"=", 1) for kv in raw if b"=" in kv)
    assert environ[b"DJANGO_SETTINGS_MODULE"] == b"spinetrack_tools.labelstudio.ls_settings"
    code = ("import os, sys, label_studio; sys.path.insert(0, os.path.dirname(label_studio.__file__)); "
            "from spinetrack_tools.labelstudio import ls_settings as ours; "
            "from label_studio.core.settings import label_studio as theirs; "
            "changed = ('MIDDLEWARE', 'INSTALLED_APPS', 'REST_FRAMEWORK'); "
            "names = [n for n in dir(theirs) if n.isupper() and n not in changed]; "
            "assert all(getattr(ours, n) is getattr(theirs, n) for n in names), 'a setting differs'; "
            "assert ours.INSTALLED_APPS == [*theirs.INSTALLED_APPS, ours.ORJSON_APP]; "
            "assert ours.REST_FRAMEWORK == {**theirs.REST_FRAMEWORK, "
            "'DEFAULT_RENDERER_CLASSES': (ours.ORJSON_RENDERER,)}; "
            "assert ours.TELEMETRY_MIDDLEWARE in theirs.MIDDLEWARE; "
            "assert ours.MIDDLEWARE == [ours.PAUSE_GC_MIDDLEWARE] + "
            "[m for m in theirs.MIDDLEWARE if m != ours.TELEMETRY_MIDDLEWARE]; "
            "import gc; from django.utils.module_loading import import_string; "
            "mw = import_string(ours.PAUSE_GC_MIDDLEWARE)(lambda request: gc.isenabled()); "
            "assert gc.isenabled() and mw(None) is False and gc.isenabled(); print('ok')")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "spinetrack_tools.labelstudio.ls_settings",
           "LABEL_STUDIO_BASE_DATA_DIR": str(info.data_dir)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


ORJSON_CHECK = r"""
import datetime, decimal, io, json, os, sys, uuid
import label_studio
sys.path.insert(0, os.path.dirname(label_studio.__file__))
import django
django.setup()  # as the server does, first
from spinetrack_tools.labelstudio import ls_settings as ours, lsapp
from spinetrack_tools.labelstudio.pgbackend.base import _dumps
from django.db.models import JSONField
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from django.utils.module_loading import import_string
assert JSONField.from_db_value is lsapp.from_db_value and JSONParser.parse is lsapp.parse
value = {"result": [{"x": 12.5, "name": "spine_03", "t": "\u2028 é"}] * 3, "n": 2 ** 70, "m": -1, "e": 1e-07}
text = json.dumps(value)
assert JSONField().from_db_value(text, None, None) == json.loads(text)
assert json.loads(_dumps(value)) == value  # what the PostgreSQL backend stores (2**70 through json.dumps)
assert JSONField().from_db_value("not json", None, None) == "not json"  # as Django: the raw value
parse = lambda body: JSONParser().parse(io.BytesIO(body), parser_context={})
assert parse(text.encode()) == json.loads(text)  # 2**70 goes through DRF's own parser
for bad in (b'{"a": NaN}', b"{nope"):
    try:
        parse(bad)
        raise SystemExit(f"accepted {bad!r}")
    except ParseError:
        pass
data = {**value, "when": datetime.datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2026, 12, 3), "price": decimal.Decimal("1.50"), "id": uuid.UUID(int=7), 3: "int key"}
data["n"] = 5
mine, drf = import_string(ours.ORJSON_RENDERER)().render(data), JSONRenderer().render(data)
assert json.loads(mine) == json.loads(drf) and b"\\u2028" in mine, (mine, drf)
assert import_string(ours.ORJSON_RENDERER)().render({"n": 2 ** 70}) == JSONRenderer().render({"n": 2 ** 70})
print("ok")
"""


def test_local_server_decodes_parses_and_renders_json_with_orjson_as_label_studio_does(label_studio):
    info, _, folder = label_studio
    # on SQLite, Label Studio guesses the ids of the tasks it has just created: one import at a time
    assert connect(server_dir=folder)[0].imports_in_flight == 1
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "spinetrack_tools.labelstudio.ls_settings",
           "LABEL_STUDIO_BASE_DATA_DIR": str(info.data_dir), "SECRET_KEY": "a-test-key"}
    r = subprocess.run([sys.executable, "-c", ORJSON_CHECK], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
