"""Generate the sample inputs and lookup tables (deterministic: same output every run).

    python samples/generate.py

Writes samples/appointments.csv, samples/appointments.jsonl, samples/messy-export.csv
and config/lookups/*.csv, and the multi-branch sample (samples/multi_branch.py). Ids follow the sandbox's default seed data:
tenant 1: customers 1001-1030, doctors 101-105, assistants 151-153, treatments
201-210, rooms 301-304; tenant 2: 2001-2030, 111-115, 161-163, 211-220, 311-314.
"""

from __future__ import annotations

import csv
import json
import random
from datetime import date, datetime, timedelta
from pathlib import Path

from multi_branch import write_multi_branch  # samples/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
LOOKUPS = ROOT / "config" / "lookups"

TENANTS = {
    1: {
        "customers": range(1001, 1031),
        "doctors": range(101, 106),
        "assistants": range(151, 154),
        "treatments": range(201, 211),
        "rooms": range(301, 305),
    },
    2: {
        "customers": range(2001, 2031),
        "doctors": range(111, 116),
        "assistants": range(161, 164),
        "treatments": range(211, 221),
        "rooms": range(311, 315),
    },
}
FIRST = [
    "Ayşe", "Mehmet", "Fatma", "Mustafa", "Emine", "Ahmet", "Hatice", "Ali", "Zeynep",
    "Hüseyin", "Elif", "İbrahim", "Merve", "Can", "Şeyma", "Oğuz", "Gül", "Murat",
    "Esra", "Burak", "Derya", "Emre", "Ebru", "Kerem", "Selin", "Ilgaz", "Deniz", "Cem",
    "Büşra", "Yusuf",
]
LAST = [
    "Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Yıldız", "Öztürk", "Aydın", "Özdemir",
    "Arslan", "Doğan", "Kılıç", "Aslan", "Çetin", "Kara", "Koç", "Kurt", "Özkan", "Şimşek",
    "Polat", "Erdoğan", "Güneş", "Aksoy", "Işık", "Tekin", "Bulut", "Acar", "Uçar", "Ünal",
    "Turan",
]
DOCTORS = ["Dr. Ayşe Kaya", "Dr. Mehmet Öz", "Dr. Elif Şen", "Dr. İlker Aydın", "Dr. Selin Uysal"]
TREATMENTS = [  # (Turkish name, English name) for 201-210
    ("Botox", "Botox"),
    ("Lazer Epilasyon", "Laser Hair Removal"),
    ("Dolgu", "Filler"),
    ("Cilt Bakımı", "Facial"),
    ("Kimyasal Peeling", "Chemical Peel"),
    ("Mezoterapi", "Mesotherapy"),
    ("PRP", "PRP"),
    ("Leke Tedavisi", "Pigmentation Treatment"),
    ("Akne Tedavisi", "Acne Treatment"),
    ("Dermapen", "Microneedling"),
]
NOTES = ["", "", "", "İlk seans", "Kontrol randevusu", "Hasta telefonla onayladı", "Alerji: lateks"]
CANCEL_REASONS = ["Hasta iptal etti", "Doktor izinli", "Hasta şehir dışında"]


def customer_names() -> list[str]:
    """60 distinct names: the i-th name belongs to customer 1001+i (then 2001+i-30)."""
    return [f"{FIRST[i % 30]} {LAST[(i * 7 + i // 30) % 30]}" for i in range(60)]


def slots(rng: random.Random, count: int) -> list[datetime]:
    """Distinct half-hour slots, Mon-Sat 09:00-18:00, 2026-12-01 .. 2027-03-31."""
    days = [date(2026, 12, 1) + timedelta(d) for d in range(121)]
    days = [d for d in days if d.weekday() < 6]
    chosen: set[datetime] = set()
    while len(chosen) < count:
        day = rng.choice(days)
        minute = rng.randrange(9 * 60, 18 * 60 + 1, 30)
        chosen.add(datetime(day.year, day.month, day.day, minute // 60, minute % 60))
    return sorted(chosen)


def clean_rows(rng: random.Random) -> list[dict[str, object]]:
    """150 rows per tenant; one doctor and one room per slot, so nothing overlaps."""
    rows: list[dict[str, object]] = []
    for tenant, ids in TENANTS.items():
        for n, start in enumerate(slots(rng, 150), start=1):
            status = rng.choices(["pending", "approved", "cancelled"], weights=[50, 44, 6])[0]
            treatments = rng.sample(list(ids["treatments"]), rng.choice([1, 1, 1, 2, 2, 3]))
            rows.append(
                {
                    "appointment_id": f"{'KAD' if tenant == 1 else 'BES'}-{n:04d}",
                    "clinic": tenant,
                    "customer_id": rng.choice(ids["customers"]),
                    "doctor_id": rng.choice(ids["doctors"]),
                    "start": start.strftime("%Y-%m-%dT%H:%M:%S"),
                    "status": status,
                    "treatment_ids": treatments,
                    "room_id": rng.choice(ids["rooms"]) if rng.random() < 0.8 else None,
                    "assistant_id": rng.choice(ids["assistants"]) if rng.random() < 0.4 else None,
                    "notes": rng.choice(NOTES),
                    "cancellation_reason": rng.choice(CANCEL_REASONS)
                    if status == "cancelled"
                    else "",
                }
            )
    return rows


def write_clean(rows: list[dict[str, object]]) -> None:
    columns = list(rows[0])
    with (SAMPLES / "appointments.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            cells = {k: "" if v is None else v for k, v in row.items()}
            cells["treatment_ids"] = "|".join(str(t) for t in row["treatment_ids"])  # type: ignore[attr-defined]
            writer.writerow(cells)
    with (SAMPLES / "appointments.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            record = {k: (v if v != "" else None) for k, v in row.items()}
            # Top-level keys match the CSV columns, so config/demo.toml maps both files;
            # the nested block is extra context the mapping ignores.
            record["meta"] = {"source": "demo", "channel": "phone" if row["clinic"] == 1 else "web"}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_lookups(names: list[str]) -> None:
    LOOKUPS.mkdir(parents=True, exist_ok=True)
    with (LOOKUPS / "customers.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["legacy_id", "name", "flextell_id"])
        for i, name in enumerate(names[:30]):
            w.writerow([f"H-{i + 17:05d}", name, 1001 + i])
    with (LOOKUPS / "doctors.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["name", "flextell_id"])
        for i, name in enumerate(DOCTORS):
            w.writerow([name, 101 + i])
    with (LOOKUPS / "treatments.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["name", "name_en", "flextell_id"])
        for i, (tr, en) in enumerate(TREATMENTS):
            w.writerow([tr, en, 201 + i])
    with (LOOKUPS / "rooms.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["name", "flextell_id"])
        for i in range(4):
            w.writerow([f"Oda {i + 1}", 301 + i])


STATUS_WORDS = ["Onaylandı", "Bekliyor", "Bekliyor", "Onaylandı", "İptal", "Gelmedi", "Tamamlandı"]


def messy_rows(rng: random.Random, names: list[str]) -> list[list[str]]:
    """Tenant 1's export from another system; returns rows (header first)."""
    header = ["Randevu No", "Hasta", "Doktor", "Tarih", "Durum", "İşlemler", "Oda", "Açıklama",
              "İptal Nedeni"]
    rows = [header]
    for n, start in enumerate(slots(rng, 52), start=1):
        idx = rng.randrange(30)
        patient = f"H-{idx + 17:05d}" if rng.random() < 0.5 else names[idx]
        if rng.random() < 0.3:  # the other system did not care about case or spacing
            patient = f"  {patient.upper()} " if rng.random() < 0.5 else patient.lower()
        doctor = rng.choice(DOCTORS)
        if rng.random() < 0.2:
            doctor = doctor.upper()
        status = rng.choices(STATUS_WORDS, weights=[30, 30, 20, 10, 4, 3, 3])[0]
        picked = rng.sample(TREATMENTS, rng.choice([1, 1, 2, 2, 3]))
        treatments = ", ".join(tr if rng.random() < 0.8 else en for tr, en in picked)
        rows.append(
            [
                f"R{2026000 + n}",
                patient,
                doctor,
                start.strftime("%d.%m.%Y %H:%M"),
                status,
                treatments,
                rng.choice(["Oda 1", "Oda 2", "Oda 3", "Oda 4", ""]),
                rng.choice(NOTES),
                rng.choice(CANCEL_REASONS) if status == "İptal" else "",
            ]
        )
    # The bad rows, one kind each (samples/README-style list in the README).
    bad = {
        5: (1, "Zeynep Bilinmeyen"),  # no such patient in lookups/customers.csv
        11: (3, "31.02.2027 10:00"),  # not a real date
        17: (4, "Belki"),  # a status word the mapping does not know
        23: (2, ""),  # no doctor
        29: (5, "Botox, Saç Ekimi"),  # an unknown treatment
        41: (6, "Oda 9"),  # an unknown room
        47: (3, "2027-01-15"),  # ISO date without a time, not the export's format
    }
    for line, (col, value) in bad.items():
        rows[line][col] = value
    rows[35][0] = rows[34][0]  # a repeated appointment number
    rows[44] = rows[44][:6]  # a truncated record: too few cells
    return rows


def write_messy(rows: list[list[str]]) -> None:
    with (SAMPLES / "messy-export.csv").open("w", encoding="utf-8-sig", newline="") as fh:
        csv.writer(fh, delimiter=";", lineterminator="\r\n").writerows(rows)


def main() -> None:
    rng = random.Random(20261121)
    names = customer_names()
    write_clean(clean_rows(rng))
    write_lookups(names)
    write_messy(messy_rows(rng, names))
    write_multi_branch(SAMPLES, LOOKUPS)


if __name__ == "__main__":
    main()
