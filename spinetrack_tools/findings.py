"""The one report format: every checker returns ``Finding`` records collected in a ``Report``."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .io import MISSING_ID, atomic_write_bytes, dumps_json

SEVERITIES = ("error", "warning", "info")


@dataclass
class Finding:
    """One problem found in a file. ``annotation_id`` / ``image_id`` are None for file-level findings."""

    check: str
    severity: str
    annotation_id: int | None
    image_id: int | None
    message: str
    score: float = 1.0
    keypoints: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    """Findings of one or more checks on one file."""

    source: str
    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def extend(self, findings: Iterable[Finding]) -> None:
        self.findings.extend(findings)

    def by_severity(self, severity: str) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    def flagged_annotation_ids(self, severity: str = "error") -> set[int]:
        return {f.annotation_id for f in self.findings if f.severity == severity and f.annotation_id is not None}

    def summary(self) -> dict[str, Any]:
        sev = Counter(f.severity for f in self.findings)
        checks = Counter((f.check, f.severity) for f in self.findings)
        return {
            "source": self.source,
            **self.stats,
            "errors": sev.get("error", 0),
            "warnings": sev.get("warning", 0),
            "infos": sev.get("info", 0),
            "annotations_with_errors": len(self.flagged_annotation_ids("error")),
            "by_check": {f"{c}:{s}": n for (c, s), n in sorted(checks.items())},
        }

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "findings": [f.to_dict() for f in self.findings]}

    def write_json(self, path: str | Path) -> None:
        atomic_write_bytes(path, dumps_json(self.to_dict(), indent=True))

    def render_table(self, examples: int = 2) -> str:
        """Plain-text summary table: one row per (check, severity) with counts and example messages."""
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        console = Console(record=True, width=140, file=io.StringIO())
        s = self.summary()
        console.print(escape(f"{self.source}: {s.get('annotations', '?')} annotations, "
                             f"{s.get('images', '?')} images"), soft_wrap=True)
        if not self.findings:
            console.print("no findings")
            return console.export_text()
        table = Table()
        for col in ("check", "severity", "count", "example"):
            table.add_column(col, overflow="fold")
        grouped: dict[tuple[str, str], list[Finding]] = {}
        for f in self.findings:
            grouped.setdefault((f.check, f.severity), []).append(f)
        order = {s: i for i, s in enumerate(SEVERITIES)}
        for (check, sev), items in sorted(grouped.items(), key=lambda kv: (order[kv[0][1]], kv[0][0])):
            ex = "\n".join(_locate(f) for f in items[:examples])
            table.add_row(check, sev, str(len(items)), escape(ex))
        console.print(table)
        console.print(f"errors: {s['errors']}  warnings: {s['warnings']}  infos: {s['infos']}  "
                      f"annotations with errors: {s['annotations_with_errors']}")
        return console.export_text()


def _locate(f: Finding) -> str:
    where = []
    if f.annotation_id is not None:
        where.append(f"ann {f.annotation_id}")
    if f.image_id is not None:
        where.append(f"img {f.image_id}")
    return (f"[{', '.join(where)}] " if where else "") + f.message


def findings_from_mask(
    check: str,
    severity: str,
    mask: np.ndarray,
    ann_ids: np.ndarray,
    image_ids: np.ndarray,
    message: str | Callable[[int], str],
    scores: np.ndarray | None = None,
    keypoints: Sequence[str] | Callable[[int], list[str]] | None = None,
    values: dict[str, np.ndarray] | None = None,
) -> list[Finding]:
    """Turn a per-annotation boolean mask from a vectorised check into findings.

    ``message`` is a string or a function of the row index (called only for flagged rows); ``keypoints``
    is one list of names for every row or such a function; ``scores`` and each array in ``values`` are
    indexed like ``mask``.
    """
    rows = np.flatnonzero(mask)
    out = []
    for r in rows:
        out.append(Finding(
            check=check,
            severity=severity,
            annotation_id=_opt_int(ann_ids[r]),
            image_id=_opt_int(image_ids[r]),
            message=message if isinstance(message, str) else message(int(r)),
            score=float(scores[r]) if scores is not None else 1.0,
            keypoints=[] if keypoints is None else keypoints(int(r)) if callable(keypoints) else list(keypoints),
            values={k: _py(v[r]) for k, v in (values or {}).items()},
        ))
    return out


def findings_per_keypoint(
    check: str,
    severity: str,
    mask: np.ndarray,
    ann_ids: np.ndarray,
    image_ids: np.ndarray,
    names: Sequence[str],
    what: str,
    scores: np.ndarray | None = None,
) -> list[Finding]:
    """One finding per annotation with any keypoint set in ``mask`` [N, K], naming those keypoints."""
    rows = mask.any(axis=1)
    if not rows.any():
        return []

    def kps(r: int) -> list[str]:
        return [names[j] for j in np.flatnonzero(mask[r])]

    def message(r: int) -> str:
        k = kps(r)
        return f"{what}: {', '.join(k[:6])}{' ...' if len(k) > 6 else ''}"

    return findings_from_mask(check, severity, rows, ann_ids, image_ids, message, keypoints=kps,
                              scores=scores if scores is not None else mask.sum(axis=1) / mask.shape[1])


def _opt_int(x: Any) -> int | None:
    return None if x is None or int(x) == MISSING_ID else int(x)


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v
