"""bench.null_api, the `own-cost` scenario's server, as a real process over HTTP: a
201 with the given body and an id that counts up for every POST (so no two rows of an
import claim one appointment), an empty calendar for every GET, keep-alive."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

from bench.sandbox import SandboxProcess

BODY = {
    "success": "Appointment created successfully.",
    "data": {"id": 1, "customer_id": 7, "code": "APT-000001", "customer": {"id": 7}},
}


def test_posts_get_the_body_with_ids_counting_up_and_gets_an_empty_calendar(
    tmp_path: Path,
) -> None:
    body = tmp_path / "created.json"
    body.write_text(json.dumps(BODY, separators=(",", ":")))
    with SandboxProcess(tmp_path, ["--body", str(body)], "null-api", ("bench.null_api",)) as api:
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
        ids = []
        for _ in range(3):  # one connection: keep-alive
            conn.request("POST", "/api/v1/appointments", body=b'{"customer_id": 7}',
                         headers={"Content-Type": "application/json"})  # fmt: skip
            resp = conn.getresponse()
            assert resp.status == 201
            answer = json.loads(resp.read())
            assert answer["data"]["customer"] == {"id": 7}
            ids.append(answer["data"]["id"])
        conn.request("GET", "/api/v1/appointments/calendar?from=2027-01-01&to=2027-01-31")
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())) == (200, {"items": []})
        conn.close()
    assert ids == [1, 2, 3]
