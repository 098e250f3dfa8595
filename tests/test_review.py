"""Human review in the loop against a real Label Studio: two annotators (two users, each with their own key)
per task, their consensus, a reviewer's decisions through the REST API, bad review input, a deleted task, and a
round killed while it merges."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from spinetrack_tools.active_learning.workspace import Status, Workspace
from spinetrack_tools.biomech.calibrate import corrupt_spines
from spinetrack_tools.coco import read_persons, save_coco
from spinetrack_tools.labelstudio.client import Connection, pull
from spinetrack_tools.labelstudio.config import CONFIRM, REVIEW

from .test_active_learning import _kill_at, cli, make_workspace, n_tasks

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def rest(info, method: str, path: str, body=None):
    """One REST call with the admin's key, as a person with curl would make it."""
    r = httpx.request(method, f"{info.url}/{path}", json=body, timeout=60,
                      headers={"Authorization": f"Token {info.token}"})
    assert r.status_code < 400, (path, r.status_code, r.text[:300])
    return r.json() if r.content else None


def decide(info, task_id: int, choice: str) -> None:
    """A reviewer opens the task, picks one annotation, ticks ``choice`` in the review control, clicks Update."""
    ann = rest(info, "GET", f"api/tasks/{task_id}/annotations/")[0]
    result = [r for r in ann["result"] if r.get("from_name") != REVIEW]
    result.append({"id": "review", "from_name": REVIEW, "to_name": "image", "type": "choices",
                   "value": {"choices": [choice]}})
    rest(info, "PATCH", f"api/annotations/{ann['id']}/", {"result": result})


def points(result: list[dict]) -> dict[tuple[str, str], tuple[float, float]]:
    """(person region, joint) -> pixel position, read straight from Label Studio's result JSON."""
    return {(r["parentID"], r["value"]["keypointlabels"][0]): (r["value"]["x"] / 100 * r["original_width"],
                                                               r["value"]["y"] / 100 * r["original_height"])
            for r in result if r.get("type") == "keypointlabels"}


def test_two_annotators_reviewer_decisions_and_a_round_killed_while_merging(label_studio):
    info, root, _ = label_studio
    project = "al-review"
    ws, env, pool = make_workspace(root, project, info, extra=("--annotators", "2"))
    assert Workspace.open(ws).config["labelstudio"]["maximum_annotations"] == 2
    r = cli(env, "al-round", "--iter", "1", "--workspace", str(ws))
    assert r.returncode == 0 and "0 of 6 images annotated by 2 annotators" in r.stdout, r.stdout + r.stderr
    w = Workspace.open(ws)
    # the truth of one selected image has a bent spine: both annotators submit it, the gate must catch it
    truth = read_persons(ws.parent / "truth.json")
    tasks = w.task_ids()
    chain = truth.skeleton.spine_chain
    full = (truth.keypoints[:, chain, 2] > 0).all(1)
    bent_row = next(r for r in np.flatnonzero(full) if int(truth.image_ids[r]) in set(w.round_samples(1).values()))
    bent_image = int(truth.image_ids[bent_row])
    one = truth.select([bent_row])
    corrupt_spines(one, "bend", np.random.default_rng(0))
    truth.keypoints[bent_row] = one.keypoints[0]
    save_coco(ws.parent / "truth_bent.json", truth.to_coco())
    r = cli(env, "annotate-sim", "--workspace", str(ws), "--truth", str(ws.parent / "truth_bent.json"),
            "--tolerance", "0.01")
    assert r.returncode == 0 and "simulated annotators (2): 12 annotations submitted" in r.stdout, r.stderr
    anns = rest(info, "GET", f"api/tasks/{tasks[bent_image]}/annotations/")
    users = {a["completed_by"] for a in anns}
    assert len(anns) == 2 and len(users) == 2  # two users, each with their own key
    r = cli(env, "al-round", "--iter", "1", "--workspace", str(ws))
    assert r.returncode == 0 and "round 1: done" in r.stdout, r.stdout + r.stderr
    w = Workspace.open(ws)
    assert bent_image in w.ids_with(Status.REJECTED)
    gate = json.loads((w.round_dir(1) / "gate.json").read_text())
    assert any("deep fit confirms" in m for m in gate["rejected"][str(bent_image)])
    assert rest(info, "GET", f"api/tasks/{tasks[bent_image]}")["data"][REVIEW].startswith("needs review")
    st = cli(env, "status", "--workspace", str(ws))
    assert "review queue: " in st.stdout and f"image {bent_image} (" in st.stdout, st.stdout
    assert (ws / "annotators.json").is_file() and (ws / "annotators.png").stat().st_size > 1000
    assert "OKS between them" in st.stdout and "most moved by annotators" in st.stdout

    # the consensus is the median of the two annotators' points, read straight from Label Studio
    pulled = json.loads((w.round_dir(1) / "pulled.json").read_text())
    other = next(i for i in w.round_samples(1).values() if i != bent_image)
    a, b = (points(x["result"]) for x in rest(info, "GET", f"api/tasks/{tasks[other]}/annotations/"))
    got = {(f"a{p['id']}", truth.skeleton.names[k]): p["keypoints"][3 * k:3 * k + 2]
           for p in pulled["annotations"] if p["image_id"] == other for k in range(truth.skeleton.num_keypoints)}
    assert set(a) == set(b) and a != b  # the second annotator clicks with noise
    for key in a:
        assert np.allclose(got[key], np.median([a[key], b[key]], axis=0), atol=1e-6), key
    assert all(p["annotators"] == 2 and 0 < p["agreement"] <= 1
               for p in pulled["annotations"] if p["image_id"] == other)

    # a reviewer confirms the flagged image; round 2 brings a deleted task and an unknown choice
    decide(info, tasks[bent_image], CONFIRM)
    r = cli(env, "al-round", "--iter", "2", "--workspace", str(ws))
    assert r.returncode == 0, r.stderr
    w = Workspace.open(ws)
    tasks = w.task_ids()
    deleted, odd, *_ = sorted(w.round_samples(2).values())
    rest(info, "DELETE", f"api/tasks/{tasks[deleted]}/")
    assert cli(env, "annotate-sim", "--workspace", str(ws), "--truth", str(ws.parent / "truth.json")).returncode == 0
    decide(info, tasks[odd], "looks fine to me")
    r = cli(env, "al-round", "--iter", "2", "--workspace", str(ws), "--until", "gate")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"task {tasks[deleted]} (image " in r.stdout and "was deleted in Label Studio" in r.stdout
    assert "review choice 'looks fine to me' is not one of 'plausible as drawn', 'needs fixing'" in r.stdout
    assert "1 confirmed by a reviewer" in r.stdout, r.stdout
    w = Workspace.open(ws)
    assert deleted in w.ids_with(Status.POOL) and odd in w.ids_with(Status.REJECTED)
    _kill_at(env, ws, "merge-mid", info, project, n=2)
    assert Workspace.open(ws).stage(2) == "gate"
    r = cli(env, "al-round", "--iter", "2", "--workspace", str(ws))
    assert r.returncode == 0 and "round 2: done" in r.stdout, r.stdout + r.stderr
    w = Workspace.open(ws)
    assert bent_image in w.ids_with(Status.MERGED) and odd in w.ids_with(Status.REJECTED)
    merged = json.loads((ws / "datasets" / "labeled_v002.json").read_text())
    mine = [x for x in merged["annotations"] if x["image_id"] == bent_image]
    assert len(mine) == int((truth.image_ids == bent_image).sum())  # merged once, one label per person
    bent = next(x for x in mine if x["provenance"]["source_annotation_id"] == int(truth.ann_ids[bent_row]))
    prov = bent["provenance"]
    assert prov["via"] == "review-override" and prov["round"] == 2 and prov["review"]["decision"] == CONFIRM
    assert prov["findings"] and all(f["check"].startswith("biomech_") for f in prov["findings"])
    assert len({im["id"] for im in merged["images"]}) == len(merged["images"])
    assert any("looks fine to me" in m for q in w.review_queue() if q["image_id"] == odd for m in q["reasons"])
    assert rest(info, "GET", f"api/tasks/{tasks[bent_image]}")["data"][REVIEW].startswith("confirmed by a reviewer")

    # re-running changes nothing: the state, the files, Label Studio; pulling twice gives the same labels
    files = {p: p.read_bytes() for p in [*(ws / "datasets").glob("*.json"), *w.round_dir(2).glob("*.json")]}
    counts, n_ls = w.counts(), n_tasks(info, project)
    r = cli(env, "al-round", "--iter", "2", "--workspace", str(ws))
    assert r.returncode == 0 and "round 2: done" in r.stdout
    assert {p: p.read_bytes() for p in files} == files and Workspace.open(ws).counts() == counts
    assert n_tasks(info, project) == n_ls == 11
    conn = Connection.open(info.url, info.token)
    first, again = pull(conn, project), pull(conn, project)
    assert first.persons.to_coco() == again.persons.to_coco() and first.edits == again.edits
    assert first.reviews == again.reviews and len(first.annotations) == len(again.annotations)


def test_bad_workspace_settings_are_one_line_errors(label_studio, tmp_path):
    info, root, _ = label_studio
    ws, env, _ = make_workspace(root, "al-badcfg", info)
    cfg = (ws / "config.toml").read_text()
    for bad, message in (("maximum_annotations = 0", "maximum_annotations (annotators per task) must be"),
                         ("agreement = 2.0", "[gate] agreement")):
        key = bad.split(" =")[0]
        lines = [f"{bad}" if line.startswith(f"{key} =") else line for line in cfg.splitlines()]
        (ws / "config.toml").write_text("\n".join(lines) + "\n")
        r = cli(env, "status", "--workspace", str(ws))
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
