#!/usr/bin/env python3
"""Build opensim_models/spinetrack_fullbody.osim from the model definition and export its kinematics.

Run with the opensim extra installed:  python scripts/build_opensim_model.py
Writes the .osim (OpenSim 4.6 API: CustomJoints with ranges, 37 markers) and
spinetrack_fullbody.kinematics.json, the kinematic tree read back from the built OpenSim model, which the
numpy forward kinematics, the synthetic generator and the checks load.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spinetrack_tools.biomech.model import KINEMATICS_PATH, OSIM_PATH, definition
from spinetrack_tools.biomech.osim import OsimModel, build_osim
from spinetrack_tools.io import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--osim", type=Path, default=OSIM_PATH)
    ap.add_argument("--kinematics", type=Path, default=KINEMATICS_PATH)
    args = ap.parse_args()
    spec = definition()
    tmp = args.osim.with_suffix(".tmp.osim")
    build_osim(spec, tmp)
    tmp.replace(args.osim)
    loaded = OsimModel(args.osim)
    assert loaded.assembles(), "the built model does not assemble"
    exported = loaded.export(dict(zip(spec.marker_names, spec.normals)), spec.stature_m)
    atomic_write_text(args.kinematics, json.dumps(exported.to_json(), indent=1) + "\n")
    print(f"wrote {args.osim} ({len(loaded.bodies)} bodies, {len(loaded.coords)} coordinates, "
          f"{len(loaded.markers)} markers) and {args.kinematics}")


if __name__ == "__main__":
    main()
