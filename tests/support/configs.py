"""Configs several test modules share."""

from __future__ import annotations

CFG = """
[api]
timezone = "Europe/Istanbul"
[tenants.1]
[mapping]
tenant = { value = 1 }
source_key = { column = "id" }
customer_id = "customer"
user_id = "doctor"
scheduled_at = "start"
status = { column = "status", default = "pending" }
treatments = { column = "treatments", split = "|" }
description = "notes"
"""


BASE = """
[api]
timezone = "Europe/Istanbul"

[tenants.1]
[tenants.2]
timezone = "Europe/Berlin"
"""


MAPPING = """
[mapping]
tenant = { column = "clinic" }
source_key = { column = "id" }
customer_id = "customer"
user_id = "doctor"
scheduled_at = { column = "start" }
status = { column = "status", default = "pending" }
treatments = { column = "treatments", split = "|" }
room_id = "room"
description = "notes"
"""


ROW = {
    "id": "A1",
    "clinic": "1",
    "customer": "1001",
    "doctor": "101",
    "start": "2026-12-01T10:30:00",
    "status": "approved",
    "treatments": "201|203",
    "room": "",
    "notes": "  first visit ",
}
