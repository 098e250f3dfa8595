"""The one module that talks to OpenSim: build the model, export its kinematic tree, run its FK.

Needs the ``opensim`` extra. OpenSim holds the GIL in every call and its objects cannot be pickled, so
callers that want parallelism use processes that each load their own model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .model import AXES, OSIM_PATH, KinematicModel

# de Leva (1996) mass fractions (male), used only to give every body a plausible mass and inertia
_MASS_FRACTION = {"pelvis": 0.142, "lumbar5": 0.04, "lumbar3": 0.04, "lumbar1": 0.05, "thorax_lower": 0.06,
                  "thorax_upper": 0.06, "thorax_top": 0.043, "neck_lower": 0.01, "neck_upper": 0.01, "head": 0.0494,
                  "upper_arm": 0.0271, "forearm": 0.0222, "thigh": 0.1416, "shank": 0.0433, "foot": 0.0137}
_AXIS_VECTORS = {0: (1.0, 0.0, 0.0), 1: (0.0, 0.0, 1.0), 2: (0.0, 1.0, 0.0)}  # flex x, lat z, rot y


def _osim() -> Any:
    try:
        import opensim
    except ImportError:
        raise ImportError("OpenSim is not installed: pip install 'spinetrack-tools[opensim]'") from None
    opensim.Logger.setLevelString("off")  # before any model: no console output, no opensim.log file
    return opensim


def _mass(name: str) -> float:
    return _MASS_FRACTION[name.removeprefix("left_").removeprefix("right_")]


def build_osim(model: KinematicModel, path: Path, mass_kg: float = 75.0) -> None:
    """Write ``model`` as an OpenSim model: CustomJoints (rotations x, z, y), ranges, 37 markers."""
    osim = _osim()
    H = model.stature_m
    m = osim.Model()
    m.setName("spinetrack_fullbody")
    bodies = []
    for b, name in enumerate(model.body_names):
        mass = _mass(name) * mass_kg
        body = osim.Body(name, mass, osim.Vec3(0), osim.Inertia(mass * 0.01, mass * 0.01, mass * 0.01))
        m.addBody(body)
        bodies.append(body)
    for b, name in enumerate(model.body_names):
        p = model.parents[b]
        st = osim.SpatialTransform()
        coords = []
        for slot, axis in enumerate((0, 1, 2)):  # rotation1 = x (flex), rotation2 = z (lat), rotation3 = y (rot)
            ta = st.updTransformAxis(slot)
            ta.setAxis(osim.Vec3(*_AXIS_VECTORS[axis]))
            lo, hi = (-np.pi, np.pi) if p < 0 else model.ranges[b, axis]
            if hi > lo:
                cname = f"{name}_{AXES[axis]}"
                ta.setCoordinateNames(osim.ArrayStr(cname, 1))
                f = osim.LinearFunction(1.0, 0.0)
                f.thisown = False  # setFunction adopts the pointer (crashes otherwise)
                ta.setFunction(f)
                coords.append((cname, lo, hi))
        if p < 0:  # the root also translates
            for slot, vec in zip((3, 4, 5), ((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0))):
                ta = st.updTransformAxis(slot)
                cname = f"{name}_t{'xyz'[slot - 3]}"
                ta.setCoordinateNames(osim.ArrayStr(cname, 1))
                ta.setAxis(osim.Vec3(*vec))
                f = osim.LinearFunction(1.0, 0.0)
                f.thisown = False
                ta.setFunction(f)
                coords.append((cname, -5.0, 5.0))
            parent_frame, offset = m.getGround(), osim.Vec3(0, model.joints[b, 1] * H, 0)
        else:
            parent_frame = bodies[p]
            offset = osim.Vec3(*((model.joints[b] - model.joints[p]) * H))
        joint = osim.CustomJoint(f"{name}_joint", parent_frame, offset, osim.Vec3(0), bodies[b], osim.Vec3(0),
                                 osim.Vec3(0), st)
        m.addJoint(joint)
        for i, (cname, lo, hi) in enumerate(coords):
            c = joint.upd_coordinates(i)
            c.setRangeMin(float(lo))
            c.setRangeMax(float(hi))
            c.setDefaultClamped(True)
    for name, b, pos in zip(model.marker_names, model.marker_body, model.markers):
        m.addMarker(osim.Marker(name, bodies[b], osim.Vec3(*((pos - model.joints[b]) * H))))
    m.finalizeConnections()
    m.initSystem()
    path.parent.mkdir(parents=True, exist_ok=True)
    m.printToXML(str(path))


class OsimModel:
    """A loaded OpenSim model with forward kinematics over joint-angle arrays."""

    _shared: "OsimModel | None" = None

    @classmethod
    def shared(cls) -> "OsimModel":
        """The shipped model, loaded once per process."""
        if cls._shared is None:
            cls._shared = cls(OSIM_PATH)
        return cls._shared

    def __init__(self, path: Path):
        osim = _osim()
        self.path = Path(path)
        self.model = osim.Model(str(path))
        self.state = self.model.initSystem()
        self.coords = {c.getName(): c for c in self.model.getCoordinateSet()}
        self.bodies = [self.model.getBodySet().get(i) for i in range(self.model.getBodySet().getSize())]
        self.markers = [self.model.getMarkerSet().get(i) for i in range(self.model.getMarkerSet().getSize())]

    def assembles(self) -> bool:
        """True when the model assembles in its default pose."""
        try:
            self.model.assemble(self.state)
        except RuntimeError:
            return False
        return True

    def coordinate_ranges(self) -> dict[str, tuple[float, float]]:
        return {n: (c.getRangeMin(), c.getRangeMax()) for n, c in self.coords.items()}

    def export(self, normals: dict[str, np.ndarray], stature_m: float) -> KinematicModel:
        """The kinematic tree as read from OpenSim in the default pose (lengths / stature)."""
        s = self.state
        for c in self.coords.values():
            c.setValue(s, 0.0, False)
        self.model.realizePosition(s)
        names = [b.getName() for b in self.bodies]
        parents, joints, ranges = [], [], []
        for b in self.bodies:
            joint = self._joint_of(b.getName())
            parent = joint.getParentFrame().findBaseFrame().getName()
            parents.append(names.index(parent) if parent in names else -1)
            joints.append(b.getPositionInGround(s).to_numpy() / stature_m)
            r = np.zeros((3, 2))
            if parent in names:
                for i in range(joint.numCoordinates()):
                    c = joint.get_coordinates(i)
                    axis = AXES.index(c.getName().rsplit("_", 1)[1])
                    r[axis] = (c.getRangeMin(), c.getRangeMax())
            ranges.append(r)
        marker_names = tuple(mk.getName() for mk in self.markers)
        return KinematicModel(
            body_names=tuple(names),
            parents=np.array(parents),
            joints=np.array(joints),
            ranges=np.array(ranges),
            marker_names=marker_names,
            marker_body=np.array([names.index(mk.getParentFrame().findBaseFrame().getName()) for mk in self.markers]),
            markers=np.array([mk.getLocationInGround(s).to_numpy() / stature_m for mk in self.markers]),
            normals=np.array([normals[n] for n in marker_names]),
            stature_m=stature_m,
        )

    def _joint_of(self, body: str) -> Any:
        js = self.model.getJointSet()
        for i in range(js.getSize()):
            j = js.get(i)
            if j.getChildFrame().findBaseFrame().getName() == body:
                return j
        raise KeyError(body)

    def forward_kinematics(self, model: KinematicModel, angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Markers [N, M, 3] (fractions of stature, pelvis joint at the origin) and body rotations
        [N, B, 3, 3] computed by OpenSim for joint angles [N, B, 3] (root rotation: identity)."""
        s = self.state
        names = model.coordinate_names()
        coords = [(b, a, self.coords[n]) for b, a, n in names]
        n = len(angles)
        pts = np.empty((n, len(self.markers), 3))
        rots = np.empty((n, len(self.bodies), 3, 3))
        origin = None
        for k in range(n):
            for b, a, c in coords:
                c.setValue(s, float(angles[k, b, a]), False)
            self.model.realizePosition(s)
            if origin is None:
                origin = self.bodies[0].getPositionInGround(s).to_numpy()
            for i, mk in enumerate(self.markers):
                pts[k, i] = mk.getLocationInGround(s).to_numpy()
            for i, body in enumerate(self.bodies):
                r = body.getTransformInGround(s).R().asMat33()
                rots[k, i] = [[r.get(a, c) for c in range(3)] for a in range(3)]
        return (pts - origin) / model.stature_m, rots
