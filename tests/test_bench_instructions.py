"""bench.instructions' arithmetic: callgrind's count read from its output, and the
fixed and per-row instructions parted from two sizes."""

from __future__ import annotations

import pytest

from bench.instructions import collected, fit

_STDERR = """==123== Callgrind, a call-graph generating cache profiler
==123== Events    : Ir
==123== Collected : 4493357290
==123==
==123== I   refs:      4,493,357,290
"""


def test_the_count_is_read_from_callgrinds_summary() -> None:
    assert collected(_STDERR) == 4_493_357_290


def test_no_count_says_so() -> None:
    with pytest.raises(ValueError, match="no 'Collected' count"):
        collected("Traceback (most recent call last):\n")


def test_two_sizes_part_fixed_from_per_row() -> None:
    # The worker's figures of docs/bench-and-drills.md: 1,500 and 3,000 rows.
    line = fit({3000: 6_782_832_217, 1500: 4_493_357_290})
    assert line.per_row == pytest.approx(1_526_316, abs=1)
    assert line.fixed == pytest.approx(2_203_883_000, rel=1e-6)


def test_one_size_is_not_enough() -> None:
    with pytest.raises(ValueError, match="two sizes"):
        fit({1500: 4_493_357_290})
