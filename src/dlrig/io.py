"""Reading and writing results: atomic (temp file, then rename), so a crash never leaves half a file.

A stage's outputs are also written as a set: inside :func:`output_set` (every stage runs in one, see
``dlrig.stage.run_stage``) each file goes to a temp file beside its target, and all are renamed into place
only when the stage finishes. A crash, a Ctrl-C or an error leaves the old set of outputs, never a mix of
old and new (a fresh ``reports/cv/`` beside a stale ``models/model.pt``).

npz for arrays, json for metrics and metadata, ``torch.save`` for checkpoints (read back only with
``weights_only=True``). Every writer is deterministic: the same content gives the same bytes.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dlrig.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


# target -> temp file holding its new content, while an output set is open (None: write at once)
_PENDING: contextvars.ContextVar[dict[Path, Path] | None] = contextvars.ContextVar("pending", default=None)


@contextlib.contextmanager
def output_set() -> Iterator[None]:
    """Make every write inside the block visible together, when the block succeeds; discard them if not.

    Nested sets join the outermost one. Reads of a file written earlier in the same set go through
    :func:`resolve` (or the ``load_*`` helpers here), which see the new content.
    """
    if _PENDING.get() is not None:
        yield
        return
    pending: dict[Path, Path] = {}
    token = _PENDING.set(pending)
    try:
        yield
    except BaseException:
        for tmp in pending.values():
            tmp.unlink(missing_ok=True)
        raise
    else:
        for path, tmp in pending.items():  # all written; now the renames, a few microseconds each
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)
    finally:
        _PENDING.reset(token)


@contextlib.contextmanager
def immediate() -> Iterator[None]:
    """Write at once even inside an output set: for results that must survive a crash (the fit cache)."""
    token = _PENDING.set(None)
    try:
        yield
    finally:
        _PENDING.reset(token)


def resolve(path: str | Path) -> Path:
    """Where ``path``'s current content is: its pending temp file inside an output set, else itself."""
    path = Path(path)
    pending = _PENDING.get()
    return pending.get(path.absolute(), path) if pending else path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it becomes ``path`` only if the block succeeds (and, inside
    an output set, only when the whole set does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pending = _PENDING.get()
    if pending is None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path: Path | None = Path(tmp)
    else:
        # One fixed name per target inside a stage's set (a stage's outputs have one writer): a temp file
        # that a killed earlier run left (SIGKILL runs no cleanup) is overwritten, then renamed away.
        tmp_path = path.parent / f".{path.name}.partial"
        tmp_path.write_bytes(b"")
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are ordinary files
    try:
        yield tmp_path
        if pending is None:
            os.replace(tmp_path, path)
        else:
            pending[path.absolute()] = tmp_path
        tmp_path = None
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
            if pending is not None:
                pending.pop(path.absolute(), None)


def adopt_tree(src: str | Path, dest: str | Path) -> None:
    """Move every file under ``src`` (written by a library that writes its own files, e.g. DVCLive) to the
    same place under ``dest``, as part of the current output set; ``src`` is removed."""
    src, dest = Path(src), Path(dest)
    for file in sorted(p for p in src.rglob("*") if p.is_file()):
        with atomic_path(dest / file.relative_to(src)) as tmp:
            os.replace(file, tmp)
    shutil.rmtree(src, ignore_errors=True)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def load_json(path: str | Path) -> Any:
    path = Path(path)
    current = resolve(path)  # inside an output set: this stage's own new content, if it wrote the file
    if not current.is_file():
        raise UserError(f"{path}: file not found (run the stage that writes it first)")
    try:
        return json.loads(current.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def save_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def load_npz(path: str | Path, required: tuple[str, ...] = ("X", "y")) -> dict[str, np.ndarray]:
    """Load every array of an npz file (no pickles); name the file and the missing array on error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found (run the stage that writes it first)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc})") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise UserError(f"{path}: missing array(s) {missing}; found {sorted(arrays)}")
    return arrays


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """``torch.save`` through memory: written to a file path, torch names the archive inside the zip after
    the (random) temp file, so the same weights would give different bytes -- and DVC a new hash -- on
    every run. Through a buffer the archive is always called ``archive``."""
    import torch

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found (run the train stage first)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own text here spans many lines and suggests weights_only=False, which dlrig never does.
        raise UserError(f"{path}: holds objects other than tensors and plain values; dlrig loads "
                        "checkpoints with weights_only=True only (save a state dict)") from None
    except Exception as exc:  # torch raises several types for a bad file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable dlrig checkpoint ({reason[:200]})") from None
