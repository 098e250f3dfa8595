"""The gate between the pulled corrections and the next dataset version.

Two stages for the biomechanics: the fast rules (``biomech.rules.check``) flag, and the deep fit of the
OpenSim model with the person's build (``biomech.fit``) confirms each flagged finding before an image is rejected:
a finding stands when the fitted pose misses one of its keypoints by more than ``DEEP_SPINE_RESIDUAL`` torso
lengths beyond the annotation noise, and becomes a warning when the model explains it (only the flagged few are
fitted). With several annotators,
persons whose annotators agree less than the threshold (OKS between them) go to review too. A reviewer's
decision in Label Studio settles what the checks cannot: "plausible as drawn" merges the labels with
``via: review-override`` and the findings kept, "needs fixing" keeps the image out until the decision
changes; a task without a decision is re-gated every round, so a fixed one passes when the checks do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..biomech.fit import DEEP_SPINE_RESIDUAL, PoseFitter, fit_persons, unexplained
from ..biomech.rules import Thresholds, check
from ..agreement import AgreementTable
from ..coco import CocoFile
from ..findings import Finding, Report
from ..labelstudio.config import CONFIRM, NEEDS_FIXING
from ..io import MISSING_ID
from ..persons import Persons
from ..validate import validate

OVERRIDE = "review-override"
AGREEMENT_CHECK = "annotator_agreement"


def overridable(check_name: str) -> bool:
    """Findings a reviewer may overrule: the biomechanical ones and the annotators' disagreement (not the
    structural ones: a keypoint without a person, a malformed annotation)."""
    return check_name.startswith("biomech_") or check_name == AGREEMENT_CHECK


def two_stage(ds: Persons, deep: bool = True, thresholds: Thresholds | None = None,
              fitter: PoseFitter | None = None, bound: float = DEEP_SPINE_RESIDUAL,
              noise: float | None = None) -> Report:
    """The fast rules' findings on ``ds``, each error confirmed by the deep fit (``deep``) or made a warning.

    ``noise``: the annotation noise level (default: measured on ``ds``). Every judged finding carries ``values["deep_residual"]``: the largest residual of the fit at the
    finding's keypoints beyond what the annotation noise explains (``fit.unexplained``), in torso lengths (NaN
    where the fit could not judge them: the error stands).
    """
    report = check(ds, thresholds, noise)
    errors = [f for f in report.findings if f.severity == "error"]
    if not deep or not errors:
        return report
    row_of = {(_opt(i), _opt(a)): r for r, (i, a) in enumerate(zip(ds.image_ids, ds.ann_ids))}
    errors = [f for f in errors if (f.image_id, f.annotation_id) in row_of]
    rows = sorted({row_of[(f.image_id, f.annotation_id)] for f in errors})
    fits = fit_persons(ds, np.array(rows), fitter)
    residuals = dict(zip(rows, unexplained(ds, np.array(rows), fits.residuals, noise)))
    index = {n: k for k, n in enumerate(ds.skeleton.names)}
    for f in errors:
        res = residuals[row_of[(f.image_id, f.annotation_id)]][[index[k] for k in f.keypoints if k in index]]
        worst = float(np.nanmax(res)) if np.isfinite(res).any() else float("nan")
        f.values["deep_residual"] = None if np.isnan(worst) else round(worst, 4)
        if worst <= bound:
            f.severity = "warning"
            f.message += f"; the deep fit explains it (residual {worst:.3f} <= {bound} torso lengths)"
        else:
            f.message += f"; the deep fit confirms it (residual {worst:.3f} torso lengths)" if np.isfinite(worst) \
                else "; the deep fit cannot judge its keypoints"
    report.stats["deep_fitted_annotations"] = len(rows)
    return report


def _opt(x: int) -> int | None:
    return None if int(x) == MISSING_ID else int(x)


@dataclass
class GateResult:
    report: Report
    rejected: dict[int, list[str]] = field(default_factory=dict)  # image id -> reasons
    overridden: dict[int, dict[str, Any]] = field(default_factory=dict)  # image id -> decision and findings

    def to_json(self) -> dict[str, Any]:
        return {"rejected": {str(k): v for k, v in sorted(self.rejected.items())},
                "overridden": {str(k): v for k, v in sorted(self.overridden.items())}}


def gate(pulled: CocoFile, pull_findings: list[dict[str, Any]], reviews: dict[int, dict[str, Any]],
         agreement: AgreementTable | None = None, min_agreement: float = 0.5, deep: bool = True) -> GateResult:
    """Judge the pulled labels: ``validate``, the two-stage biomechanics, the annotators' agreement, and the
    reviewers' decisions (``reviews``: image id -> {"decision", ...})."""
    persons = pulled.persons
    report = validate(pulled, expected=persons.skeleton)
    report.extend(two_stage(persons, deep).findings)
    report.extend(_disagreement(agreement, min_agreement))
    report.extend(Finding(f["check"], f["severity"], f.get("annotation_id"), f.get("image_id"), f["message"],
                          f.get("score", 1.0), f.get("keypoints") or [], f.get("values") or {})
                  for f in pull_findings)
    errors: dict[int, list[Finding]] = {}
    for f in report.findings:
        if f.severity == "error" and f.image_id is not None:
            errors.setdefault(int(f.image_id), []).append(f)
    out = GateResult(report)
    images = set(int(i) for i in persons.images["id"]) | set(errors)
    for iid in sorted(images):
        found, decision = errors.get(iid, []), (reviews.get(iid) or {}).get("decision")
        if decision == NEEDS_FIXING:
            out.rejected[iid] = [f"a reviewer marked it {NEEDS_FIXING!r}"] + [f.message for f in found]
        elif found and decision == CONFIRM and all(overridable(f.check) for f in found):
            out.overridden[iid] = {**reviews[iid], "via": OVERRIDE, "findings": [
                {"check": f.check, "annotation_id": f.annotation_id, "message": f.message,
                 "keypoints": f.keypoints} for f in found]}
        elif found:
            fixed = sorted({f.check for f in found if not overridable(f.check)})
            note = [f"{CONFIRM!r} cannot overrule {', '.join(fixed)}"] if decision == CONFIRM else []
            out.rejected[iid] = note + [f.message for f in found]
    return out


def _disagreement(table: AgreementTable | None, threshold: float) -> list[Finding]:
    """An error for each person whose annotators agree less than ``threshold`` (OKS between them)."""
    if table is None:
        return []
    out = []
    names, kp = table.keypoints, table.per_keypoint
    for r in np.flatnonzero(table.oks < threshold):
        worst = [k for k in np.argsort(np.nan_to_num(kp[r], nan=np.inf))[:3] if np.isfinite(kp[r, k])]
        out.append(Finding(AGREEMENT_CHECK, "error", int(table.ann_ids[r]), int(table.image_ids[r]),
                           f"the {table.annotators[r]} annotators agree at OKS {table.oks[r]:.2f} < {threshold} "
                           f"(least on {', '.join(f'{names[k]} {kp[r, k]:.2f}' for k in worst)})",
                           score=float(table.oks[r]), keypoints=[names[k] for k in worst],
                           values={"agreement": round(float(table.oks[r]), 4)}))
    return out
