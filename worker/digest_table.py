"""`DigestTable`: 64-bit digests with the first line each was seen on, in flat arrays.

validate finds repeated keys and payloads of a whole file with it, and import the
payloads repeated under other keys, in constant memory per row.
"""

from __future__ import annotations

from array import array

_LINE_MAX = (1 << 32) - 1


class DigestTable:
    """64-bit digest -> first line seen; linear probing over two flat arrays.

    About 24 bytes per entry at the worst load factor, against ~100 for a dict
    of Python ints: 1M rows stay in tens of megabytes.
    """

    def __init__(self, capacity: int = 1 << 14) -> None:
        self._keys = array("Q", bytes(8 * capacity))
        self._lines = array("I", bytes(4 * capacity))
        self._mask = capacity - 1
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, digest: int) -> bool:
        digest = digest or 1
        keys, mask = self._keys, self._mask
        i = digest & mask
        while keys[i]:
            if keys[i] == digest:
                return True
            i = (i + 1) & mask
        return False

    def add(self, digest: int, line: int) -> int | None:
        """Insert; if the digest was already there, return its first line instead."""
        digest = digest or 1  # 0 marks an empty slot
        keys, mask = self._keys, self._mask
        i = digest & mask
        while True:
            k = keys[i]
            if k == 0:
                keys[i] = digest
                self._lines[i] = line if line < _LINE_MAX else _LINE_MAX
                self._size += 1
                if self._size * 2 > mask:
                    self._grow()
                return None
            if k == digest:
                return self._lines[i]
            i = (i + 1) & mask

    def _grow(self) -> None:
        old_keys, old_lines = self._keys, self._lines
        capacity = (self._mask + 1) * 2
        self._keys = array("Q", bytes(8 * capacity))
        self._lines = array("I", bytes(4 * capacity))
        self._mask = capacity - 1
        keys, lines, mask = self._keys, self._lines, self._mask
        for k, line in zip(old_keys, old_lines, strict=True):
            if k:
                i = k & mask
                while keys[i]:
                    i = (i + 1) & mask
                keys[i] = k
                lines[i] = line
