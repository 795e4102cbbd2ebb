"""Two nights of the multi-branch sample in one ledger, shaped for the HTML report's tests:
patient names and phones, notes with phone numbers and a formula, rows refused by the
mapping and by the API, a rate limit that makes the worker pause, then rows changed in
and removed from the next night's export."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.sandbox_process import BRANCH_ZONES, sandbox_process
from tests.support.sync import import_file

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "multi-branch.csv"
NAME_COLUMN = "Hasta Adı"
_FIRST = ("Zeynep", "Ayşe", "Elif", "Fatma", "Emine", "Hülya", "Derya", "Sevgi", "Melek")
_LAST = ("Yılmaz", "Kaya", "Demirci", "Şahin", "Çelikkol", "Yıldırım", "Öztürk", "Aydınlı")
REFUSED_DOCTOR = "Dr. Nergis Yokmuş"  # in the staff table as an id the API does not know


@dataclass
class Nights:
    """The config, the ledger and the rows of the two nights."""

    config: Path
    ledger: Path
    header: list[str]
    night1: list[dict[str, str]]
    night2: list[dict[str, str]]
    bad_keys: dict[str, str] = field(default_factory=dict)
    """source key -> the kind of problem night 1 gives it."""
    changed_keys: list[str] = field(default_factory=list)
    removed_keys: list[str] = field(default_factory=list)

    def rows_needing_a_person(self) -> list[dict[str, str]]:
        keys = set(self.bad_keys) | set(self.changed_keys) | set(self.removed_keys)
        return [r for r in self.night1 if r["Randevu No"] in keys]


def _write(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="cp1254", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, delimiter=";")
        writer.writeheader()
        writer.writerows(rows)
    return path


def build_nights(tmp: Path) -> Nights:
    """Import night 1 and night 2 through a rate-limited sandbox; exit 1 both times."""
    shutil.copytree(ROOT / "config" / "lookups", tmp / "lookups")
    with (tmp / "lookups" / "multi-branch" / "staff.csv").open("a", encoding="utf-8") as fh:
        fh.write(f"{REFUSED_DOCTOR},99999\n")
    text = (ROOT / "config" / "multi-branch.toml").read_text(encoding="utf-8")
    text = text.replace('rate_limit = "20/second"', 'rate_limit = "40/second"\ntimeout = 5')
    config = tmp / "multi-branch.toml"
    config.write_text(text + '\n[ledger]\npath = "ledger.sqlite"\n', encoding="utf-8")

    with SAMPLE.open(encoding="cp1254", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=";")
        header = [*(reader.fieldnames or []), NAME_COLUMN]
        rows = list(reader)
    for i, row in enumerate(rows):
        row[NAME_COLUMN] = f"{_FIRST[i % len(_FIRST)]} {_LAST[(i // 3) % len(_LAST)]}"
    nights = Nights(config, tmp / "ledger.sqlite", header, rows, [])
    bad = {
        0: ("Hasta Tel", "+90 599 870 44 13", "invalid"),  # not in the patients table
        1: ("Doktor", REFUSED_DOCTOR, "failed"),  # the API answers 422
        2: ("Durum", "Belki", "invalid"),  # not a status word
        3: ("Hasta Tel", "555 12", "invalid"),  # too short for a phone: still masked
    }
    for i, (column, value, kind) in bad.items():
        rows[i][column] = value
        rows[i]["Not"] = f"{rows[i][NAME_COLUMN]} aradı, {value if 'Tel' in column else ''}"
        nights.bad_keys[rows[i]["Randevu No"]] = kind
    # 10 POSTs per tenant every 2 s while the worker may send 40/s, and a 429 now and
    # then on top (the pacer learns the window from the first answer, the tenants'
    # listing, and may meet none of the limit's own): the report shows it waiting.
    faults = ("--fault", "throttle429=0.1", "--fault-seed", "4", "--retry-after", "2")
    with sandbox_process(tmp, "--rate-limit", "10/2s", *faults, *BRANCH_ZONES) as sb:
        first, _ = import_file(config, sb, _write(tmp / "night1.csv", header, rows))
        assert first.exit_code == 1, first.output
        night2 = [dict(r) for r in rows]
        good = [r for r in night2 if r["Randevu No"] not in nights.bad_keys]
        for row in good[:2]:
            row["Saat"] = "19:30" if row["Saat"] != "19:30" else "08:00"
            nights.changed_keys.append(row["Randevu No"])
        for row in good[-2:]:
            nights.removed_keys.append(row["Randevu No"])
            night2.remove(row)
        nights.night2 = night2
        second, _ = import_file(config, sb, _write(tmp / "night2.csv", header, night2))
        assert second.exit_code == 1, second.output
    return nights
