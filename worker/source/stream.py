"""Open the input as decoded text: file or stdin, gzip detected by its magic bytes.

Byte counters sit under the gzip layer (for progress) and above it (so a decode
error can name the byte offset in the uncompressed data). The one under gzip is
a `SnapshotReader`: it hashes the bytes as they are read, and stops the read
when the file is rewritten or replaced under it (see `SourceChangedError`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import sys
import zlib
from typing import BinaryIO, NoReturn, cast

from worker.errors import SourceError

STDIN_NAME = "<stdin>"
GZIP_MAGIC = b"\x1f\x8b"

# What reading can raise: undecodable bytes, a broken gzip stream, I/O errors.
READ_ERRORS = (UnicodeDecodeError, OSError, EOFError, zlib.error)


def check_path(path: str) -> None:
    """Fail early, before the format is chosen, when `path` is missing or a directory."""
    if path == "-":
        return
    if os.path.isdir(path):
        raise SourceError(f"{path}: is a directory, not a file")
    if not os.path.lexists(path):
        raise SourceError(f"{path}: file not found")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # opening it says what is wrong
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode):
        # Read once for its encoding and header, the rest of a pipe was gone: "file is
        # empty". /dev/stdin, <(zcat x.gz) and named pipes are such paths.
        raise SourceError(
            f"{path}: a pipe or device, which can be read only once: give `-` to read "
            "standard input (zcat export.csv.gz | flextell-worker validate - --format csv "
            "-c run.toml; "
            "a .gz file is also read as it is), or save it to a file"
        )


class CountingReader(io.BufferedIOBase):
    """A read-only pass-through that counts the bytes handed out."""

    def __init__(self, inner: BinaryIO, *, close_inner: bool = True) -> None:
        super().__init__()
        self._inner = inner
        self._close_inner = close_inner
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._inner.read(-1 if size is None else size)
        self.count += len(data)
        return data

    def read1(self, size: int = -1) -> bytes:
        read1 = getattr(self._inner, "read1", None)
        data = read1(size) if read1 is not None else self._inner.read(size)
        self.count += len(data)
        return bytes(data)

    def close(self) -> None:
        if not self.closed and self._close_inner:
            self._inner.close()
        super().close()


class SourceChangedError(SourceError):
    """The file was rewritten or replaced while it was being read: what was read is
    neither the old file nor the new one, so the run must not treat it as complete."""


def _identity(info: os.stat_result) -> tuple[int, int, int, int]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


class SnapshotReader(CountingReader):
    """CountingReader that hashes every byte handed out and checks, before handing out
    each read, that the file is still the one opened: same size and modification time
    through the open descriptor (an in-place rewrite) and the same inode at the path
    (a file replaced by rename). A change raises `SourceChangedError`."""

    def __init__(self, inner: BinaryIO, name: str, path: str | None) -> None:
        super().__init__(inner, close_inner=path is not None)
        self._name = name
        self._path = path
        self._digest = hashlib.sha256()
        self._opened: tuple[int, int, int, int] | None = None
        self.at_end = False
        if path is not None:
            info = os.fstat(inner.fileno())
            if stat.S_ISREG(info.st_mode):  # a pipe or device has no identity to keep
                self._opened = _identity(info)

    def read(self, size: int | None = -1) -> bytes:
        return self._took(super().read(size))

    def read1(self, size: int = -1) -> bytes:
        return self._took(super().read1(size))

    def _took(self, data: bytes) -> bytes:
        # Checked after the read: a write updates the modification time before its bytes
        # can be read, so bytes handed out with no change seen are the opened file's.
        self._check()
        if data:
            self._digest.update(data)
        else:
            self.at_end = True
        return data

    def _check(self) -> None:
        opened, path = self._opened, self._path
        if opened is None or path is None:
            return
        now = _identity(os.fstat(self._inner.fileno()))
        if now[2:] != opened[2:]:
            self._changed(
                f"size {opened[2]:,} -> {now[2]:,} bytes"
                if now[2] != opened[2]
                else "rewritten at the same size"
            )
        try:
            at_path = _identity(os.stat(path))
        except OSError:
            self._changed("the path no longer names a file")
        if at_path[:2] != opened[:2]:
            self._changed("another file was moved to its path")

    def _changed(self, what: str) -> NoReturn:
        raise SourceChangedError(
            f"{self._name}: changed while it was read ({what}; {self.count:,} bytes read); "
            "read it again once the export is complete"
        )

    def sha256(self) -> str | None:
        """Hex SHA-256 of the bytes read, once all of them were (else None)."""
        return self._digest.hexdigest() if self.at_end else None


class TextInput:
    """The decoded text of one input plus what is known about its bytes."""

    def __init__(
        self,
        name: str,
        path: str,
        encoding: str,
        codec: str,
        newline: str,
        *,
        errors: str = "strict",
    ) -> None:
        self.name = name
        self.encoding = encoding
        """The encoding as configured (named in errors)."""
        self.total_bytes: int | None = None
        self.hint: str | None = None
        """The encoding the file seems to be in, when it does not decode as declared."""
        binary = self._open_binary(path)
        self.compressed = SnapshotReader(binary, name, None if path == "-" else path)
        self.decoded_counter: CountingReader = self.compressed
        try:
            head = binary.peek(2)[:2] if isinstance(binary, io.BufferedReader) else b""
        except OSError as exc:
            self.compressed.close()
            raise SourceError(f"{name}: cannot read: {exc.strerror or exc}") from None
        data: io.BufferedIOBase = self.compressed
        if head == GZIP_MAGIC:
            gz = gzip.GzipFile(fileobj=self.compressed, mode="rb")
            self.decoded_counter = CountingReader(gz)  # type: ignore[arg-type]
            data = self.decoded_counter
        elif path.lower().endswith(".gz"):
            self.compressed.close()
            raise SourceError(f"{name}: not a gzip file (the name ends in .gz)")
        self.text = io.TextIOWrapper(
            cast(BinaryIO, data), encoding=codec, errors=errors, newline=newline
        )

    def _open_binary(self, path: str) -> BinaryIO:
        if path == "-":
            return sys.stdin.buffer
        try:
            binary = open(path, "rb")  # noqa: SIM115 - closed by TextInput.close
        except FileNotFoundError:
            raise SourceError(f"{self.name}: file not found") from None
        except IsADirectoryError:
            raise SourceError(f"{self.name}: is a directory, not a file") from None
        except PermissionError:
            raise SourceError(f"{self.name}: not readable (permission denied)") from None
        except OSError as exc:
            raise SourceError(f"{self.name}: cannot open: {exc.strerror or exc}") from None
        info = os.fstat(binary.fileno())
        if stat.S_ISDIR(info.st_mode):
            binary.close()
            raise SourceError(f"{self.name}: is a directory, not a file")
        if stat.S_ISREG(info.st_mode):
            self.total_bytes = info.st_size
        return binary

    def decode_error(self, exc: UnicodeDecodeError) -> SourceError:
        """A one-line error naming the byte offset where decoding failed."""
        # The decoder raised on the bytes it was handed last; they end at the counter.
        offset = self.decoded_counter.count - len(exc.object) + exc.start
        gzipped = self.decoded_counter is not self.compressed
        where = "uncompressed byte offset" if gzipped else "byte offset"
        bad = exc.object[exc.start : min(exc.end, exc.start + 4)].hex(" ")
        if self.hint is not None:
            fix = (
                f"the start of the file reads right as {self.hint}: set [source] "
                f'encoding = "{self.hint}" (or "auto")'
            )
        else:
            fix = "set [source] encoding to the file's encoding (e.g. cp1254, latin-1, utf-16)"
        return SourceError(
            f"{self.name}: bytes do not decode as {self.encoding} at {where} {offset} "
            f"(0x{bad}): {fix}"
        )

    def translate(self, exc: Exception) -> SourceError:
        """A one-line `SourceError` for one of `READ_ERRORS`."""
        if isinstance(exc, UnicodeDecodeError):
            return self.decode_error(exc)
        if isinstance(exc, gzip.BadGzipFile | EOFError | zlib.error):
            return SourceError(f"{self.name}: broken or truncated gzip data ({exc})")
        if isinstance(exc, OSError) and exc.strerror:
            return SourceError(f"{self.name}: cannot read: {exc.strerror}")
        return SourceError(f"{self.name}: cannot read: {exc}")

    def close(self) -> None:
        # GzipFile does not close the file object it was given: close both layers.
        self.text.close()
        self.compressed.close()
