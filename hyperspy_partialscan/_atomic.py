# Copyright 2025 The hyperspy_partialscan developers
#
# This file is part of hyperspy_partialscan.
#
# hyperspy_partialscan is free software: you can redistribute it and/or modify
# it under the terms of the GNU General Public License as published by
# the Free Software Foundation, either version 3 of the License, or
# (at your option) any later version.
#
# hyperspy_partialscan is distributed in the hope that it will be useful,
# but WITHOUT ANY WARRANTY; without even the implied warranty of
# MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE. See the
# GNU General Public License for more details.
#
# You should have received a copy of the GNU General Public License
# along with hyperspy_partialscan. If not, see <https://www.gnu.org/licenses/>.
"""Write outputs so that a failed run never destroys what was there before.

Every file (or folder, such as a ``.zspy`` store) a user keeps is written to a
temporary path beside its target -- same folder, so the final rename is atomic
-- flushed to disk, and renamed over the target only once it is complete. On
any failure (an exception, a full disk, Ctrl-C) the temporary is removed and
the target is left as it was. A process killed outright may leave a hidden
``.NAME.tmp-XXXXXXXX.EXT`` beside the target, never a half-written target.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["atomic_path", "atomic_paths", "same_file", "write_text_atomic", "temporary_name"]


def temporary_name(target: str | os.PathLike, tag: str = "tmp") -> Path:
    """A fresh hidden path beside ``target`` with the same extension.

    Parameters
    ----------
    target : str or os.PathLike
        The path the temporary stands in for.
    tag : str, default "tmp"
        Marks the purpose of the temporary (``tmp``, ``old``...).

    Returns
    -------
    pathlib.Path
        ``.STEM.TAG-XXXXXXXX.EXT`` in the target's folder; nothing exists there yet.

    Examples
    --------
    >>> p = temporary_name("/data/out.hspy")
    >>> p.parent.as_posix(), p.name.startswith(".out.tmp-"), p.suffix
    ('/data', True, '.hspy')
    """
    target = Path(target)
    while True:
        cand = target.with_name(f".{target.stem}.{tag}-{secrets.token_hex(4)}{target.suffix}")
        if not os.path.lexists(cand):
            return cand


def _remove(path: Path) -> None:
    """Remove a file, link or folder if it exists (never follows a link into a folder)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fsync(path: Path) -> None:
    """Flush a written file, or every file of a written folder, to disk."""
    files = [path] if not path.is_dir() else [Path(d) / f for d, _, fs in os.walk(path) for f in fs]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make renames in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` onto ``target``; a folder on either side is swapped, not merged."""
    if not (tmp.is_dir() or (target.is_dir() and not target.is_symlink())):
        os.replace(tmp, target)
        return
    old = None
    if os.path.lexists(target):
        old = temporary_name(target, "old")
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        _remove(old)


@contextlib.contextmanager
def atomic_paths(targets: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Temporary paths for several outputs that are renamed over their targets together on success.

    Parameters
    ----------
    targets : sequence of str or os.PathLike
        The final paths. Their folders must exist.

    Yields
    ------
    list of pathlib.Path
        One temporary path per target (see :func:`temporary_name`); write
        each output (a file or a folder) there.

    Notes
    -----
    When the block ends normally, each temporary is flushed to disk and moved
    onto its target in the order given; a temporary that was not written
    leaves its target untouched. When the block raises (any exception,
    including :class:`KeyboardInterrupt`), the temporaries are removed, the
    targets are left as they were, and the exception propagates. The renames
    of several targets are each atomic, not jointly: a reader that needs a
    set to match (a model's weights and JSON) must check it.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_paths([folder / "a.txt", folder / "b.txt"]) as (ta, tb):
    ...     _ = ta.write_text("A")
    ...     _ = tb.write_text("B")
    >>> sorted(p.name for p in folder.iterdir())
    ['a.txt', 'b.txt']
    """
    targets = [Path(t) for t in targets]
    temps = [temporary_name(t) for t in targets]
    try:
        yield list(temps)
        for tmp in temps:
            if os.path.lexists(tmp):
                _fsync(tmp)
    except BaseException:
        for tmp in temps:
            _remove(tmp)
        raise
    try:
        for tmp, target in zip(temps, targets, strict=True):
            if os.path.lexists(tmp):
                _commit(tmp, target)
    finally:
        for tmp in temps:
            _remove(tmp)
    for folder in {t.parent for t in targets}:
        _fsync_folder(folder)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``target`` that replaces it only if the block succeeds.

    Parameters
    ----------
    target : str or os.PathLike
        The final path of a file or folder (``.zspy``). Its folder must exist.

    Yields
    ------
    pathlib.Path
        Where to write: hidden, in the same folder, with the same extension
        (so writers that choose the format by extension pick the right one).

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "result.txt"
    >>> _ = target.write_text("previous")
    >>> try:
    ...     with atomic_path(target) as tmp:
    ...         _ = tmp.write_text("half")
    ...         raise OSError(28, "No space left on device")
    ... except OSError:
    ...     pass
    >>> target.read_text(), len(list(target.parent.iterdir()))
    ('previous', 1)
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("new")
    >>> target.read_text()
    'new'
    """
    with atomic_paths([target]) as (tmp,):
        yield tmp


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` are the same file (same device and inode: links included).

    Parameters
    ----------
    a, b : str or os.PathLike

    Returns
    -------
    bool
        False when either does not exist.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "in.hspy").write_bytes(b"data")
    >>> os.link(folder / "in.hspy", folder / "hard.hspy")
    >>> same_file(folder / "in.hspy", folder / "hard.hspy"), same_file(folder / "in.hspy", folder / "new.hspy")
    (True, False)
    """
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`).

    Parameters
    ----------
    path : str or os.PathLike
    text : str
    encoding : str, default "utf-8"

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import tempfile
    >>> p = write_text_atomic(Path(tempfile.mkdtemp()) / "report.md", "| a | b |\\n")
    >>> p.read_text()
    '| a | b |\\n'
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return path
