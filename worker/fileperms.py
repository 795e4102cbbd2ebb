"""Owner-only files: what the worker writes holds tokens or patient data.

Two layers, so that neither a forgotten call site nor an odd umask leaks a file:
the console entry point sets a private umask (`apply_private_umask`), and every
place that creates a ledger, lock, token, report or failures file asks for
mode 0600 explicitly (directories 0700).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any

from worker.errors import ConfigError
from worker.reading import refuse_input

FILE_MODE = 0o600
DIR_MODE = 0o700
PRIVATE_UMASK = 0o077


def apply_private_umask() -> None:
    """Make everything this process creates owner-only, whatever the caller's umask."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> None:
    """Create `path` (and missing parents) as 0700; an existing directory is left as it is."""
    missing: list[Path] = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIR_MODE)
        os.chmod(directory, DIR_MODE)  # mkdir's mode passes through the umask


def create_private(path: Path) -> None:
    """Create an empty file 0600 unless it exists (so SQLite opens a file that is ours)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def make_private(path: Path) -> int | None:
    """Tighten an existing file this user owns to 0600; its old mode when group or others
    had access, else None (absent, private already, or another user's: left alone)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077 or st.st_uid != os.getuid() or not stat.S_ISREG(st.st_mode):
        return None
    os.chmod(path, FILE_MODE)
    return mode


def open_private(path: Path | str, **kwargs: Any) -> IO[str]:
    """Open `path` for writing text, truncated, with mode 0600 (also when it existed);
    never a file the command reads (`refuse_input`)."""
    refuse_input(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    handle: IO[str] = os.fdopen(fd, "w", **kwargs)
    return handle


def write_private_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: 0600 temp file in the same dir, fsync, rename, fsync dir;
    never a file the command reads (`refuse_input`)."""
    refuse_input(path)
    write_atomically(path, data, mode=FILE_MODE)


def write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Replace `path` with `data` (file mode `mode`): temp file in the same dir, fsync,
    rename, fsync dir, so a reader sees the old file or the new one, never a part.

    A path that is a device, a FIFO or a socket (``/dev/null``, ``/dev/stdout``) is
    written in place: a rename would put a regular file where it was, which for root
    means in place of /dev/null for every process of the machine. A symbolic link to
    a file keeps the link: the file it points at is replaced."""
    found = _stat(path)
    if _written_in_place(found):
        with open(path, "wb") as handle:
            handle.write(data)
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def check_output_place(path: Path, option: str) -> None:
    """Before a long run: raise ConfigError for an output path its end could not write
    (`write_atomically` there): in a directory that is not there, or that this user
    cannot create a file in (click refuses a directory itself). Found after a night's
    import, the error would replace the run's own exit code; found now, the import has
    not started. A device or a FIFO (/dev/null) is written in place, so it must take
    writes; a link's file is replaced where it is; a file in a sticky directory (/tmp)
    that belongs to another user cannot be replaced."""
    given = path
    found = _stat(path)
    if _written_in_place(found):  # a device or a FIFO must take writes
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{option} {given}: cannot write to it (permission denied)")
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))  # its file is replaced, in the file's directory
    where = path.parent
    if not where.is_dir():
        what = "is not a directory" if where.exists() else "does not exist"
        raise ConfigError(
            f"{option} {given}: {where} {what}; create the directory first, or give a "
            "path in one that exists"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=where)
    except OSError as exc:
        raise ConfigError(
            f"{option} {given}: cannot create a file in {where}: {exc.strerror}"
        ) from None
    os.close(fd)
    os.unlink(probe)
    if found is not None and _sticky_and_not_ours(where, found):
        raise ConfigError(
            f"{option} {given}: it belongs to another user, in a directory where only a "
            f"file's owner may replace it ({where}, like /tmp): remove it, or give "
            "another path"
        )


def _stat(path: Path) -> os.stat_result | None:
    """`path`'s status through a link, or None when there is nothing there."""
    try:
        return os.stat(path)
    except OSError:
        return None


def _written_in_place(found: os.stat_result | None) -> bool:
    """A device, a FIFO or a socket: written as it is, never replaced by a rename."""
    return found is not None and not stat.S_ISREG(found.st_mode) and not stat.S_ISDIR(found.st_mode)


def _sticky_and_not_ours(where: Path, found: os.stat_result) -> bool:
    """Whether a rename over the file `found` in `where` would be refused: a sticky
    directory (/tmp) lets only the file's or the directory's owner replace it (or a
    process with CAP_FOWNER: root, unless it dropped that)."""
    uid = os.geteuid()
    if found.st_uid == uid or _owner_override():
        return False
    held = os.stat(where)
    return bool(held.st_mode & stat.S_ISVTX) and held.st_uid != uid


_CAP_FOWNER = 1 << 3


def _owner_override() -> bool:
    """Whether this process may act on files it does not own (CAP_FOWNER in effect)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return os.geteuid() == 0
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & _CAP_FOWNER)
    return os.geteuid() == 0


def refuse_shared(path: Path, what: str) -> None:
    """Raise ConfigError if group or others may read or write `path` (as ssh does for keys)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return  # the reader reports a missing or unreadable file in its own words
    if mode & 0o077:
        raise ConfigError(
            f"{what} {path}: permissions {mode:04o} are too open (group or others can "
            f"access it); it holds a secret: run `chmod 600 {path}`"
        )
