"""Small I/O helpers: fast JSON with a NaN-tolerant fallback, atomic writes, the input error type."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson

MISSING_ID = np.iinfo(np.int64).min  # sentinel for an id that is absent or not an integer
_UMASK = os.umask(0)
os.umask(_UMASK)


class InputError(Exception):
    """Unreadable or unusable input. The CLI prints it as one line and exits with code 2."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


def load_json(path: str | Path) -> Any:
    """Parse a JSON file with orjson; fall back to the stdlib parser for NaN/Infinity tokens."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, expected a JSON file") from None
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as first:
        try:  # the stdlib parser accepts NaN, Infinity and -Infinity, so such files can still be checked
            return json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError(path, "not UTF-8 text") from None
        except json.JSONDecodeError as e:
            raise InputError(path, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        except RecursionError:
            raise InputError(path, f"invalid JSON: {first}") from None


def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


def dumps_json(obj: Any, indent: bool = False) -> bytes:
    """Serialise with orjson (numpy aware). Non-finite floats become null, as JSON requires."""
    opts = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    if indent:
        opts |= orjson.OPT_INDENT_2
    return orjson.dumps(obj, default=_default, option=opts)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_json(path: str | Path, obj: Any, indent: bool = False) -> None:
    atomic_write_bytes(path, dumps_json(obj, indent=indent))
