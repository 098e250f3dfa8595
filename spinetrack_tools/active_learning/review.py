"""What the annotators did, over every round of a workspace: per keypoint, how well annotators of the same
person agree (OKS term between them) and how they edited the pre-annotations (which joints they move most,
by how far), as ``annotators.json`` and the plot ``annotators.png`` in the workspace (both atomic).

It reads the round folders' ``agreement.json`` and ``edits.json`` (written by the pull); an image pulled in
several rounds (back for review) counts once, with its latest labels.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..agreement import AgreementTable
from ..io import atomic_write_bytes, load_json, save_json
from ..skeleton import Skeleton

REPORT = "annotators.json"
PLOT = "annotators.png"


def keypoint_stats(round_dirs: Iterable[Path], skeleton: Skeleton) -> dict[str, Any]:
    """Per-keypoint agreement and edit statistics over the rounds (see the module docstring)."""
    import pandas as pd

    dirs = [Path(d) for d in round_dirs]
    tables = [AgreementTable.from_json(load_json(d / "agreement.json")) for d in dirs
              if (d / "agreement.json").is_file()]
    names = list(skeleton.names)
    k = len(names)
    if tables:
        img = np.concatenate([t.image_ids for t in tables])
        ann = np.concatenate([t.ann_ids for t in tables])
        # the latest round's row of each person
        last = len(img) - 1 - np.unique(np.stack([img, ann], 1)[::-1], axis=0, return_index=True)[1]
        who = np.concatenate([t.annotators for t in tables])[last]
        oks = np.concatenate([t.oks for t in tables])[last]
        per_kp = np.concatenate([t.per_keypoint for t in tables])[last]
    else:
        who, oks, per_kp = np.zeros(0, np.int64), np.zeros(0), np.zeros((0, k))
    multi = who >= 2
    compared = np.isfinite(per_kp[multi]).sum(0)
    with np.errstate(invalid="ignore"):
        agreement = np.where(compared > 0, np.nansum(per_kp[multi], 0) / np.maximum(compared, 1), np.nan)
    records = [e for d in dirs if (d / "edits.json").is_file() for e in load_json(d / "edits.json")]
    ed = pd.DataFrame(records, columns=["annotation_id", "region", "keypoint", "edit", "distance_px", "distance_rel",
                                        "image_id"]).astype({"distance_px": float, "distance_rel": float})
    ed = ed.drop_duplicates(["image_id", "annotation_id", "region", "keypoint"], keep="last")
    moved = ed[ed["edit"] == "moved"]
    by = ed.groupby("keypoint")["edit"]
    count, n_moved = by.size(), moved.groupby("keypoint").size()
    added = ed[ed["edit"] == "added"].groupby("keypoint").size()
    removed = ed[ed["edit"] == "removed"].groupby("keypoint").size()
    dist = moved.groupby("keypoint")["distance_px"]
    rel = moved.dropna(subset=["distance_rel"]).groupby("keypoint")["distance_rel"]
    med, p90, med_rel = dist.median(), dist.quantile(0.9), rel.median()

    def get(s: Any, name: str, default: Any = 0) -> Any:
        v = s.get(name, default)
        return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else (
            int(v) if isinstance(v, (int, np.integer)) else round(float(v), 4))

    rows = [{"keypoint": n, "agreement": None if not np.isfinite(agreement[j]) else round(float(agreement[j]), 4),
             "persons_compared": int(compared[j]), "edits": get(count, n), "moved": get(n_moved, n),
             "moved_share": round(get(n_moved, n) / get(count, n), 4) if get(count, n) else None,
             "moved_median_px": get(med, n, None), "moved_p90_px": get(p90, n, None),
             "moved_median_rel": get(med_rel, n, None), "added": get(added, n), "removed": get(removed, n)}
            for j, n in enumerate(names)]
    return {"rounds": len(dirs), "persons": int(len(who)), "persons_compared": int(multi.sum()),
            "agreement": round(float(np.nanmean(oks[multi])), 4) if np.isfinite(oks[multi]).any() else None,
            "keypoints": rows}


def write_report(workspace: Path, round_dirs: Iterable[Path], skeleton: Skeleton) -> dict[str, Any]:
    """``annotators.json`` and ``annotators.png`` in ``workspace`` from the rounds; returns the report."""
    stats = keypoint_stats(round_dirs, skeleton)
    save_json(workspace / REPORT, stats, indent=True)
    atomic_write_bytes(workspace / PLOT, plot(stats))
    return stats


def plot(stats: dict[str, Any]) -> bytes:
    """PNG: agreement per keypoint next to the share of pre-annotated points moved and how far (median, in
    units of the person's sqrt(area), the OKS scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = stats["keypoints"]
    names = [r["keypoint"] for r in rows]
    y = np.arange(len(names))

    def col(key: str) -> np.ndarray:
        return np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)

    fig, axes = plt.subplots(1, 3, figsize=(12, 0.22 * len(names) + 1.5), sharey=True)
    for ax, key, title in zip(axes, ("agreement", "moved_share", "moved_median_rel"),
                              (f"agreement (OKS term), {stats['persons_compared']} persons",
                               "share of pre-annotated points moved", "median move / sqrt(area)")):
        ax.barh(y, np.nan_to_num(col(key)), color="#3cb44b" if key == "agreement" else "#4363d8")
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, names, fontsize=7)
    axes[0].invert_yaxis()
    axes[0].set_xlim(0, 1)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def summary_lines(stats: dict[str, Any], top: int = 5) -> list[str]:
    """A few lines for ``spinetrack status``: overall agreement, the least agreed and the most moved joints."""
    rows = stats["keypoints"]
    out = []
    if stats["persons_compared"]:
        agreed = sorted((r for r in rows if r["agreement"] is not None), key=lambda r: r["agreement"])[:top]
        out.append(f"annotators: {stats['persons_compared']} persons labelled by several annotators, OKS between them "
                   f"{stats['agreement']:.3f}; least agreed: " +
                   ", ".join(f"{r['keypoint']} {r['agreement']:.2f}" for r in agreed))
    moved = sorted((r for r in rows if r["moved"]), key=lambda r: -r["moved_share"])[:top]
    if moved:
        out.append("most moved by annotators: " + ", ".join(
            f"{r['keypoint']} {r['moved_share']:.0%} (median {r['moved_median_px']:.1f} px)" for r in moved))
    return out
