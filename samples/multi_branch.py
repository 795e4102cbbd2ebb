"""The multi-branch sample: one export of a clinic chain's two branches (``samples/generate.py``
calls `write_multi_branch`).

Writes samples/multi-branch.csv (cp1254, ``;``), its lookup tables under
config/lookups/multi-branch/ and samples/multi-branch.expected.jsonl: the exact
body every row must be sent as, computed here from the ids the rows were made
from (not by the worker), so a test can compare what the sandbox received.

Branch "Berlin" is tenant 1 (Europe/Berlin), branch "Atina" tenant 2
(Europe/Athens): both change clocks on the same days at different wall times.
Both branches have rooms named "Room 1 - Laser" (301 and 311), a patient
registered in both has one phone number and two Flextell ids, and an assistant
sometimes leads an appointment.
"""

from __future__ import annotations

import csv
import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

BRANCHES = {
    "Berlin": {"tenant": 1, "zone": "Europe/Berlin", "prefix": "BER"},
    "Atina": {"tenant": 2, "zone": "Europe/Athens", "prefix": "ATH"},
}
STAFF = {  # name -> id, as in the sandbox's default seed
    1: {"Dr. Esra Aslan": 101, "Dr. Merve Arslan": 102, "Dr. Serkan Demir": 103,
        "Dr. Mehmet Çelik": 104, "Dr. Tuğba Koç": 105, "Tuğba Polat": 151,
        "Merve Özkan": 152, "Selin Kara": 153},
    2: {"Dr. Kerem Korkmaz": 111, "Dr. İbrahim Şahin": 112, "Dr. Hatice Demir": 113,
        "Dr. Hatice Doğan": 114, "Dr. Esra Çetin": 115, "Özlem Aksoy": 161,
        "Elif Aydın": 162, "Kerem Özkan": 163},
}  # fmt: skip
TREATMENTS = {
    1: ["Botoks", "Lazer Epilasyon", "Hyaluronik Dolgu", "Kimyasal Peeling", "Hydrafacial",
        "PRP Saç Terapisi", "Mikroiğneleme", "Diş Beyazlatma", "Mezoterapi", "Akne İzi Tedavisi"],
    2: ["Karbon Peeling", "Dermapen Yüz Bakımı", "Fraksiyonel CO2 Lazer", "Dudak Dolgusu",
        "İp Askı", "Cilt Gençleştirme", "Dövme Silme", "IPL Fotofasiyal", "Kriyolipoliz",
        "Saç Mikropigmentasyonu"],
}  # fmt: skip
ROOMS = ["Room 1 - Laser", "Room 2 - Injection", "Room 3 - Facial", "Room 4 - Consultation"]
STATUS = {"pending": "Bekliyor", "approved": "Onaylandı", "cancelled": "İptal",
          "completed": "Tamamlandı", "no_show": "Gelmedi"}  # fmt: skip
NOTES = [
    "", "", "İlk seans", "Kontrol randevusu", "Hasta telefonla onayladı",
    '=HYPERLINK("https://klinik.example/hasta/17")', "+90 532 111 22 33 aradı",
    "- kontrol sonrası tekrar", "@Dr. Esra bilgilendirildi", "Alerji: lateks; ağrı kesici yok",
]  # fmt: skip
EXTRA_NOTES = ["", "", "", "Şikayet: ağrı", "Ödeme: kredi kartı", "İğne korkusu var"]
HEADER = ["Randevu No", "Şube", "Hasta Tel", "Doktor", "Asistan", "Tarih", "Saat", "Durum",
          "İşlem", "Oda", "Not", "Ek Not", "İptal Nedeni"]  # fmt: skip


def phone(tenant: int, i: int) -> str:
    # Patient 0 is registered in both branches: one phone, two Flextell ids.
    if i == 0:
        return "+90 532 111 22 33"
    return f"+90 5{3 + tenant}{i % 10} {100 + i * 7:03d} {i * 3 % 100:02d} {i:02d}"


def _rows(rng: random.Random) -> list[tuple[dict[str, str], dict[str, object], int]]:
    """(export row, expected body, tenant) for 30 rows of each branch, in file order."""
    out: list[tuple[dict[str, str], dict[str, object], int]] = []
    for branch, info in BRANCHES.items():
        tenant = int(str(info["tenant"]))
        zone = ZoneInfo(str(info["zone"]))
        staff = list(STAFF[tenant].items())
        doctors, assistants = staff[:5], staff[5:]
        walls: list[tuple[datetime, int]] = []
        # The two clock changes of 2026 (29 March, 25 October), on each branch's side.
        if tenant == 1:
            walls += [(datetime(2026, 3, 29, 3, 30), 0), (datetime(2026, 10, 25, 4, 0), 0)]
        else:  # 02:30 exists in Athens; 03:30 on 25 October happens twice (later: EET)
            walls += [(datetime(2026, 3, 29, 2, 30), 0), (datetime(2026, 10, 25, 3, 30), 1)]
        days = [date(2026, 3, 16) + timedelta(d) for d in range(240)]
        while len(walls) < 28:
            day = rng.choice(days)
            minute = rng.randrange(9 * 60, 18 * 60 + 1, 30)
            wall = datetime(day.year, day.month, day.day, minute // 60, minute % 60)
            if all(w != wall for w, _ in walls):
                walls.append((wall, 0))
        walls.sort()
        n = 0
        for wall, fold in walls:
            n += 1
            patient = rng.randrange(12)
            doctor = rng.choice(doctors if rng.random() < 0.85 else assistants)
            assistant = rng.choice([*assistants, doctors[0]]) if rng.random() < 0.4 else None
            status = rng.choices(list(STATUS), weights=[40, 40, 8, 8, 4])[0]
            picked = rng.sample(range(10), rng.choice([1, 1, 2]))
            room = rng.randrange(4) if rng.random() < 0.85 else None
            note, extra = rng.choice(NOTES), rng.choice(EXTRA_NOTES)
            rebook = status == "cancelled"
            for again in (False, True) if rebook else (False,):
                if again:  # the re-booking: same patient, doctor and time
                    n += 1
                    status = "approved"
                word = STATUS[status]
                if tenant == 2 and status == "completed":
                    word = "Tamam"  # Athens' own word (a tenant-2 mapping key)
                cells = {
                    "Randevu No": f"{info['prefix']}-{n:04d}",
                    "Şube": branch if rng.random() < 0.8 else branch.upper(),
                    "Hasta Tel": phone(tenant, patient),
                    "Doktor": doctor[0],
                    "Asistan": assistant[0] if assistant else "",
                    "Tarih": wall.strftime("%d.%m.%Y"),
                    "Saat": wall.strftime("%H:%M"),
                    "Durum": word,
                    "İşlem": ", ".join(TREATMENTS[tenant][i] for i in picked),
                    "Oda": "" if room is None else ROOMS[room],
                    "Not": note,
                    "Ek Not": extra,
                    "İptal Nedeni": "Hasta iptal etti" if status == "cancelled" else "",
                }
                instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
                body: dict[str, object] = {
                    "customer_id": (1000 if tenant == 1 else 2000) + 1 + patient,
                    "user_id": doctor[1],
                    "scheduled_at": instant.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "status": status,
                    "treatments": [(200 if tenant == 1 else 210) + 1 + i for i in picked],
                }
                if assistant:
                    body["assistant_id"] = assistant[1]
                text = " / ".join(t for t in (note, extra) if t)
                if text:
                    body["description"] = text
                if status == "cancelled":
                    body["cancellation_reason"] = "Hasta iptal etti"
                if room is not None:
                    body["room_id"] = (300 if tenant == 1 else 310) + 1 + room
                out.append((cells, body, tenant))
    return out


def write_multi_branch(samples: Path, lookups: Path) -> None:
    """Write the export, its lookup tables and the expected bodies."""
    rows = _rows(random.Random(20260329))
    rng = random.Random(7)
    rng.shuffle(rows)  # an export mixes the branches
    with (samples / "multi-branch.csv").open("w", encoding="cp1254", newline="") as fh:
        writer = csv.DictWriter(fh, HEADER, delimiter=";", lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(cells for cells, _, _ in rows)
    with (samples / "multi-branch.expected.jsonl").open("w", encoding="utf-8") as fh:
        for cells, body, tenant in rows:
            line = {"key": cells["Randevu No"], "tenant": tenant, "body": body}
            fh.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
    folder = lookups / "multi-branch"
    folder.mkdir(parents=True, exist_ok=True)

    def table(name: str, header: list[str], records: list[list[object]]) -> None:
        with (folder / name).open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(header)
            w.writerows(records)

    for branch, info in BRANCHES.items():
        t = int(str(info["tenant"]))
        base = 1000 if t == 1 else 2000
        table(f"patients-{branch.lower()}.csv", ["phone", "flextell_id"],
              [[phone(t, i), base + 1 + i] for i in range(12)])  # fmt: skip
    table("staff.csv", ["name", "flextell_id"],
          [[n, i] for t in STAFF for n, i in STAFF[t].items()])  # fmt: skip
    table("treatments.csv", ["name", "flextell_id"],
          [[n, (200 if t == 1 else 210) + 1 + i] for t in TREATMENTS
           for i, n in enumerate(TREATMENTS[t])])  # fmt: skip
    table("rooms.csv", ["branch", "name", "flextell_id"],
          [[b, r, (300 if info["tenant"] == 1 else 310) + 1 + i]
           for b, info in BRANCHES.items() for i, r in enumerate(ROOMS)])  # fmt: skip
