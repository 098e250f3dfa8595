import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from spinetrack_tools import __version__, synth
from spinetrack_tools.cli import main

from .conftest import write_json

COMMANDS = ["validate", "flag", "synth", "quickstart"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_version_and_help():
    r = run("--version")
    assert r.exit_code == 0 and __version__ in r.output
    r = run("--help")
    assert r.exit_code == 0
    for c in COMMANDS:
        assert c in r.output
        h = run(c, "--help")
        assert h.exit_code == 0 and "Usage:" in h.output and len(h.output) > 200


def test_validate_exit_codes_and_outputs(tmp_path, coco):
    good = write_json(tmp_path / "good.json", coco)
    r = run("validate", good)
    assert r.exit_code == 0, r.output
    assert "no findings" in r.output
    coco["annotations"][0]["area"] = 0
    bad = write_json(tmp_path / "bad.json", coco)
    r = run("validate", bad, "--report", tmp_path / "r.json")
    assert r.exit_code == 1
    assert "area" in r.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["summary"]["errors"] == 1
    r = run("validate", bad, "--json")
    assert r.exit_code == 1
    assert json.loads(r.output)["findings"][0]["check"] == "area"


@pytest.mark.parametrize("content", ["{not json", "[]", '{"images": []}'])
def test_bad_input_is_one_line_exit_2(tmp_path, content):
    p = tmp_path / "x.json"
    p.write_text(content)
    for cmd in ("validate", "flag"):
        r = subprocess.run([sys.executable, "-m", "spinetrack_tools", cmd, str(p), "--report",
                            str(tmp_path / "r.json"), "--clean-out" if cmd == "flag" else "--json",
                            *([str(tmp_path / "c.json")] if cmd == "flag" else [])],
                           capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and str(p) in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "r.json").exists() and not (tmp_path / "c.json").exists()


def test_missing_file_and_bad_usage(tmp_path):
    r = run("validate", tmp_path / "none.json")
    assert r.exit_code == 2 and "file not found" in r.output
    assert run("validate").exit_code == 2
    assert run("synth", "--out", tmp_path, "--persons-per-image", "3-1").exit_code == 2


def test_unwritable_report_is_a_clear_error(tmp_path, coco):
    good = write_json(tmp_path / "good.json", coco)
    (tmp_path / "ro").write_text("a file, not a folder")
    r = run("validate", good, "--report", tmp_path / "ro" / "r.json")
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output


def test_flag_clean_out(tmp_path):
    data, truth = synth.corrupt(synth.generate(200, seed=3), 0.2, seed=4)
    src = write_json(tmp_path / "in.json", data)
    r = run("flag", src, "--clean-out", tmp_path / "clean.json", "--report", tmp_path / "flags.json")
    assert r.exit_code == 1, r.output
    clean = json.loads((tmp_path / "clean.json").read_text())
    flags = json.loads((tmp_path / "flags.json").read_text())
    errors = {f["annotation_id"] for f in flags["findings"] if f["severity"] == "error"}
    kept = {a["id"] for a in clean["annotations"]}
    assert kept == {a["id"] for a in data["annotations"]} - errors
    assert clean["images"] == data["images"] and clean["categories"] == data["categories"]
    assert len(errors) >= 0.8 * len(truth)
    r = run("flag", tmp_path / "clean.json")
    assert r.exit_code in (0, 1)


def test_synth(tmp_path):
    r = run("synth", "--out", tmp_path / "s", "--images", 6, "--seed", 2, "--corrupt", 0.2)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "s" / "annotations.json").read_text())["images"][0]["id"] == 1
    assert json.loads((tmp_path / "s" / "corruptions.json").read_text())
    assert len(list((tmp_path / "s" / "images").glob("*.jpg"))) == 6
