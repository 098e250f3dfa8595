"""The house: every module on a floor, imports only downwards, a light command-line entry, the README's map."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "spinetrack_tools"

# Lowest first. A module may import only from floors below its own (lazy imports inside functions included).
FLOORS = [
    ["", "io", "skeleton", "gcpause", "progress", "active_learning", "biomech", "inference", "labelstudio", "train",
     "labelstudio.lsapp", "labelstudio.pgbackend", "labelstudio.pgbackend.base"],
    ["persons", "findings", "labelstudio.config", "labelstudio.ls_settings", "labelstudio.postgres", "render",
     "inference.transforms", "train.model", "train.rtmpose"],
    ["coco", "evaluate", "biomech.model", "download"],
    ["pool"],
    ["biomech.osim", "biomech.geometry", "biomech.population", "validate", "inference.model", "agreement"],
    ["inference.hub", "train.onnx_import"],
    ["biomech.poses", "biomech.rules", "biomech.fit", "labelstudio.convert", "inference.predict"],
    ["quality", "synth", "biomech.calibrate", "labelstudio.server", "browse", "train.trainer",
     "inference.distributed"],
    ["labelstudio.client", "active_learning.workspace", "active_learning.strategies", "active_learning.gate",
     "active_learning.review"],
    ["active_learning.simulate", "active_learning.rounds"],
    ["quickstart"],
    ["cli.common"],
    ["cli.check", "cli.data", "cli.models", "cli.labelstudio", "cli.browse", "cli.al"],
    ["cli"],
    ["__main__"],
]
FLOOR = {m: i for i, ms in enumerate(FLOORS) for m in ms}


def modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that a module imports (relative or absolute, at any depth of the code)."""
    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    pkg = [p for p in pkg if p]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "spinetrack_tools":
                base = node.module.split(".")[1:]
            else:
                continue
            mod = ".".join(base)
            targets = [f"{mod}.{a.name}".strip(".") if f"{mod}.{a.name}".strip(".") in known else mod
                       for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [".".join(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "spinetrack_tools"]
        out.update(t for t in targets if t != name)
    return out


def test_every_module_has_a_floor_and_imports_only_downwards():
    mods = modules()
    assert set(mods) == set(FLOOR), f"place new modules on a floor: {sorted(set(mods) ^ set(FLOOR))}"
    upward = [(m, t) for m, p in mods.items() for t in imports(m, p, set(mods)) if FLOOR[t] >= FLOOR[m]]
    assert upward == [], f"imports that do not run downwards: {upward}"


def test_the_command_line_entry_imports_nothing_heavy():
    heavy = ("pandas", "onnxruntime", "cv2", "scipy", "torch", "fiftyone", "label_studio_sdk", "opensim", "PIL",
             "matplotlib", "huggingface_hub", "rich", "ray")
    code = ("import sys, spinetrack_tools.cli; print(' '.join(m for m in sys.modules if m.split('.')[0] in "
            f"{heavy!r}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == []


def test_readme_layout_names_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.index("```", layout.index("```") + 3)]
    for name in modules():
        leaf = name.split(".")[-1] if name else ""
        if leaf and not name.endswith("__main__"):
            assert re.search(rf"\b{re.escape(leaf)}(\.py|/)", layout), f"README Layout does not name {name}"
