"""Atomic file writes: a reader (or a crashed run) never sees a half-written file."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

_DEFAULT_MODE = 0o644  # mkstemp makes 0600 files; datasets and reports are meant to be shared


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception it is
    moved over ``path`` with os.replace, otherwise removed and ``path`` is left as it was.

    The temporary file sits in the same folder so the rename stays on one filesystem, which
    POSIX makes atomic. Use it for writers that want a file name (safetensors, torch.save).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else _DEFAULT_MODE
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO]:
    """Like ``open(path, mode)``, but the file appears at ``path`` only once fully written."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, replace_existing: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; move it to ``target`` when the block
    ends without an exception, otherwise delete it. A crash mid-write leaves no half folder.

    An existing ``target`` is kept (a concurrent writer got there first with an equal copy) unless
    ``replace_existing``: then it is moved aside, the new folder moved in, and the old one deleted,
    so ``target`` is at every moment either the complete old folder, absent, or the complete new one."""
    target = Path(target)
    tmp = _folder_beside(target)
    old = None
    try:
        yield tmp
        if replace_existing and target.is_dir():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
            os.replace(target, old / target.name)
        try:
            os.replace(tmp, target)
        except OSError:
            if old is not None:  # could not move the new one in: put the old one back, and say so
                if not target.exists():
                    os.replace(old / target.name, target)
                raise
            if not target.is_dir():  # a concurrent writer got there first: keep its (equal) copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and target.is_dir():  # never delete the old copy while nothing replaced it
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_files(target: str | os.PathLike, last: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; when the block ends without an exception,
    move each file written there into the folder ``target`` (see :func:`move_files`), ``last`` after
    the others. The temporary folder is deleted either way.

    Unlike :func:`atomic_directory` this updates ``target`` file by file and keeps the files it does
    not rewrite: a reader never sees a torn file, and when ``last`` is the file that describes the
    folder (a config), a crash in between leaves the previous one in place."""
    staging = _folder_beside(Path(os.path.abspath(target)))
    try:
        yield staging
        move_files(staging, target, last)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def move_files(source: str | os.PathLike, target: str | os.PathLike, last: str | None = None) -> None:
    """Move every file of the folder ``source`` into the folder ``target`` (created if missing), each
    with one ``os.replace``; the file named ``last`` goes after all the others. ``source`` must hold
    files only: a subfolder raises ValueError."""
    os.makedirs(target, exist_ok=True)
    for name in sorted(os.listdir(source), key=lambda name: name == last):
        if os.path.isdir(os.path.join(source, name)):
            raise ValueError(f"unexpected folder {name!r} in {os.fspath(source)}: only files can be moved "
                             "(a named peft adapter writes one; those are not supported)")
        os.replace(os.path.join(source, name), os.path.join(target, name))


def _folder_beside(target: Path) -> Path:
    """A new empty folder in ``target``'s parent (created if missing), so that renames stay on one filesystem."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
