"""Simulated annotators (for demos, tests and benchmarks, not people): they work through Label Studio's API
like people, each with an account and API key of their own, submitting the true keypoints wherever the
model's pre-annotation is off by more than a tolerance (with their own click noise) and accepting the rest
untouched."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..labelstudio.client import Connection, annotator_key
from ..labelstudio.convert import annotator_of, from_result, latest_prediction, to_result
from ..persons import Persons

NOISE_STEP = 0.004  # the i-th simulated annotator's click noise: i x this, as a fraction of the person's box size


@dataclass
class Annotator:
    """A simulated annotator: a Label Studio connection with the user's own key, and how sloppily it clicks."""

    conn: Connection
    noise: float = 0.0  # Gaussian noise per coordinate of the points it places, fraction of the box size
    tolerance: float = 0.05  # it keeps a predicted point within this fraction of the box size of the truth


def team(conn: Connection, count: int, noise: list[float] | None = None, tolerance: float = 0.05) -> list[Annotator]:
    """``count`` simulated annotators: the connection's own user first, then users signed up with the
    organization's invitation (``annotator-<i>@spinetrack.local``, created once, their keys read back as a person
    would). Noise per annotator: ``noise`` or ``i x NOISE_STEP``."""
    noise = list(noise) if noise else [i * NOISE_STEP for i in range(count)]
    if len(noise) < count:
        noise += [i * NOISE_STEP for i in range(len(noise), count)]
    members = [Annotator(conn, noise[0], tolerance)]
    invite = conn.invite_token() if count > 1 else ""
    for i in range(1, count):
        email = f"annotator-{i}@spinetrack.local"
        # a password of the server's own: reproducible from the admin key, so a re-run logs in again
        password = hashlib.sha256(f"{conn.api_key}:{email}".encode()).hexdigest()[:24]
        key = annotator_key(conn.url, email, password, invite)
        members.append(Annotator(Connection.open(conn.url, key), noise[i], tolerance))
    return members


def correct(prediction: list[dict[str, Any]], truth: Persons, width: float, height: float,
            tolerance: float, noise: float = 0.0, rng: np.random.Generator | None = None) -> list[dict[str, Any]]:
    """The result a careful annotator would submit for one task: the true persons (``truth``, one image),
    with each predicted point kept where it lies within ``tolerance`` x the person's box size of the truth, and
    the points it places off by Gaussian ``noise`` x the box size."""
    predicted, _ = from_result(prediction, width, height, truth.skeleton)
    row_of = {int(a): r for r, a in enumerate(predicted.ann_ids)}
    kp = truth.keypoints.copy()
    size = truth.boxes[:, 2:].max(axis=1)
    if noise > 0:
        rng = rng or np.random.default_rng(0)
        lab = kp[..., 2] > 0
        kp[..., :2] += np.where(lab[..., None], rng.normal(0, 1, kp[..., :2].shape) * noise * size[:, None, None], 0)
        kp[..., :2] = np.clip(kp[..., :2], 0, [width - 1e-6, height - 1e-6])
    for t, aid in enumerate(truth.ann_ids):
        r = row_of.get(int(aid))
        if r is None:
            continue
        pred = predicted.keypoints[r]
        tol = tolerance * size[t]
        close = (pred[:, 2] > 0) & (truth.keypoints[t, :, 2] > 0) & \
            (np.linalg.norm(pred[:, :2] - truth.keypoints[t, :, :2], axis=1) <= tol)
        kp[t, close, :2] = pred[close, :2]
    return to_result(replace(truth, keypoints=kp), range(len(truth)), width, height)


def annotate(conn: Connection | Annotator | list[Annotator], project: str, truth: Persons,
             sample_ids: set[str] | None = None, tolerance: float = 0.05) -> int:
    """Each annotator annotates every task of ``project`` (optionally only ``sample_ids``) it has not annotated
    yet, from ``truth`` (labels on the same image ids); returns how many annotations were submitted. A bare
    connection is one exact annotator with ``tolerance``."""
    members = [Annotator(conn, 0.0, tolerance)] if isinstance(conn, Connection) else \
        [conn] if isinstance(conn, Annotator) else list(conn)
    rows = truth.rows_by_image()
    pid = members[0].conn.project_id(project)
    done = 0
    for task in members[0].conn.iter_tasks(pid):
        d = task["data"]
        if sample_ids is not None and str(d.get("sample_id")) not in sample_ids:
            continue
        had = {annotator_of(a) for a in task.get("annotations") or [] if not a.get("was_cancelled")}
        pred = latest_prediction(task)
        mine = truth.select(rows.get(int(d["image_id"]), np.zeros(0, np.int64)))
        for m in members:
            if m.conn.user_id in had:
                continue
            rng = np.random.default_rng([m.conn.user_id, int(task["id"])])
            result = correct((pred or {}).get("result") or [], mine, float(d["width"]), float(d["height"]),
                             m.tolerance, m.noise, rng)
            m.conn.create_annotation(int(task["id"]), result)
            done += 1
    return done
