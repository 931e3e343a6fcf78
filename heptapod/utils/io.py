"""Atomic file writes and checked checkpoint loading.

Every output is written to a temporary file in the same folder and renamed into place, so a
job killed mid-write never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch


_UMASK = os.umask(0)
os.umask(_UMASK)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or of the wrong kind; the message names the file."""


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs follow the umask
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        # the old folder is moved aside, not deleted, before the new one takes its name: a kill
        # leaves the old folder whole (aside, if not in place) or the new one, never half of one
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old.")) / path.name
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing input file: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def save_checkpoint(path: str | Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | Path, kind: str) -> dict:
    """Load a checkpoint written by ``save_checkpoint`` with ``weights_only=True``.

    ``kind`` is checked against the checkpoint's own ``kind`` entry so that, say, a tokenizer
    file passed where a generator is expected fails with a clear message.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        found = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"checkpoint {path} holds '{found}', expected '{kind}'")
    return obj


def copy_pinned(path: str | Path, out: str | Path) -> dict:
    """Copy a fixed weights file (a pinned classifier or tokenizer) byte for byte, atomically, and
    name it and its hash for the stage's record."""
    with atomic_path(out) as tmp:
        shutil.copyfile(path, tmp)
    return {"checkpoint": str(path), "checkpoint_sha256": file_sha256(path)}


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str:
    """Short commit of the working tree, with '-dirty' when it has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "heptapod", "workflow",
             "Snakefile", "params.yaml"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
