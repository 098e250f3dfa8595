"""COCO keypoint files on disk: load them as ``Persons`` (strict) or as a ``CocoFile`` (lenient, for ``validate``).

``load_coco`` never trusts the file: malformed entries become NaN / ``MISSING_ID`` in the arrays and a
per-annotation status, so ``validate`` can report them and the label checks skip them instead of the loader
crashing. ``read_persons`` is for everything that needs well-formed labels: it raises one ``InputError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .io import InputError, load_json, save_json
from .persons import BAD_LENGTH, BAD_TYPE, MISSING, OK, ParseStatus, Persons, parse_coco
from .skeleton import SPINETRACK37, Skeleton

__all__ = ["BAD_LENGTH", "BAD_TYPE", "MISSING", "OK", "CocoFile", "empty_coco", "load_coco", "parse_file",
           "read_persons", "read_results", "require", "save_coco"]


@dataclass
class CocoFile:
    """A COCO keypoint file: the raw dict, its persons (one row per entry of ``raw["annotations"]``) and what
    could not be parsed."""

    raw: dict[str, Any]
    path: Path | None
    persons: Persons
    status: ParseStatus

    def __len__(self) -> int:
        return len(self.persons)

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "<memory>"

    @property
    def annotations(self) -> list[Any]:
        return self.raw.get("annotations") or []

    def subset_dict(self, keep: np.ndarray | Sequence[bool]) -> dict[str, Any]:
        """The raw dict with only the annotations where ``keep`` is true (other keys shared, not copied)."""
        out = dict(self.raw)
        out["annotations"] = [a for a, k in zip(self.annotations, keep) if k]
        return out


def parse_file(raw: Any, skeleton: Skeleton | None = None, path: Path | None = None,
               attrs: Sequence[str] = ()) -> CocoFile:
    """A ``CocoFile`` from an already parsed dict. The skeleton comes from the keypoint category unless given."""
    persons, status = parse_coco(raw, skeleton, path, attrs)
    return CocoFile(raw, path, persons, status)


def load_coco(path: str | Path, skeleton: Skeleton | None = None) -> CocoFile:
    """Load a COCO keypoint file leniently. Raises ``InputError`` only when it is not a COCO-shaped JSON object."""
    path = Path(path)
    return parse_file(load_json(path), skeleton=skeleton, path=path)


def read_persons(path: str | Path, skeleton: Skeleton | None = None, attrs: Sequence[str] = ()) -> Persons:
    """The labels of a COCO keypoint file; ``InputError`` naming the file for the first malformed annotation."""
    path = Path(path)
    return Persons.from_coco(load_json(path), skeleton, path, attrs)


def read_results(path: str | Path, skeleton: Skeleton, images: Any = None) -> Persons:
    """The predictions of a COCO results file (``spinetrack predict`` output)."""
    path = Path(path)
    return Persons.from_results(load_json(path), skeleton, path, images)


def save_coco(path: str | Path, data: dict[str, Any] | Persons) -> None:
    """Write a COCO dict (or persons as one) atomically (non-finite numbers become null)."""
    save_json(path, data.to_coco() if isinstance(data, Persons) else data)


def empty_coco(skeleton: Skeleton = SPINETRACK37) -> dict[str, Any]:
    """A COCO dict with no images or annotations and the skeleton's person category."""
    return {"info": {}, "images": [], "annotations": [], "categories": [skeleton.to_category()]}


def require(persons: Persons, what: str, mask: np.ndarray) -> None:
    """``InputError`` naming the first person where ``mask`` is false (e.g. areas the metric needs)."""
    bad = ~mask
    if bad.any():
        r = int(np.argmax(bad))
        raise InputError(persons.source, f"annotation {persons.ann_ids[r]} (and {int(bad.sum()) - 1} more) "
                                         f"{what}")

