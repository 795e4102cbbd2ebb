"""The baselines the worker is measured against, each run as its own process.

    python -m bench.baselines validate FILE
        a bare csv.DictReader + AppointmentCreate + model_dump_json loop
    python -m bench.baselines post FILE --url API --concurrency N
        a bare aiohttp POST loop: N tasks, no ledger, no retries, no limiter
    python -m bench.baselines durable FILE --url API --concurrency N --ledger DB
        the same loop with the worker's durability and nothing else: every row
        written to a SQLite file (WAL, synchronous=FULL) as it is read, an intent
        committed before its POST and the outcome after, by one writer thread with
        group commit. The floor of the design: what any import that keeps the
        worker's promise pays, without its mapping, checks, pacing or adoption
    python -m bench.baselines sequential FILE --url API
        one request at a time on one keep-alive connection, like Newman's
        data-file runner or a naive `requests` loop

Each prints one JSON line: rows, ok, seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import http.client
import json
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

TOKEN = "sandbox-token-all"
TZ = ZoneInfo("Europe/Istanbul")


def _int_or_none(text: str) -> int | None:
    return int(text) if text else None


def body_of(row: dict[str, str]) -> dict[str, Any]:
    """The POST body of a bench CSV row, built by hand (no validation)."""
    start = datetime.fromisoformat(row["start"]).replace(tzinfo=TZ)
    body: dict[str, Any] = {
        "customer_id": int(row["customer_id"]),
        "user_id": int(row["doctor_id"]),
        "scheduled_at": start.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "status": row["status"],
        "treatments": [int(t) for t in row["treatment_ids"].split("|")],
    }
    for key, column in (("room_id", "room_id"), ("assistant_id", "assistant_id")):
        if row[column]:
            body[key] = int(row[column])
    if row["notes"]:
        body["description"] = row["notes"]
    if row["cancellation_reason"]:
        body["cancellation_reason"] = row["cancellation_reason"]
    return body


def _rows(path: str) -> Iterator[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        yield from csv.DictReader(fh)


def validate(path: str) -> dict[str, Any]:
    from worker.contract import AppointmentCreate

    ok = rows = 0
    for row in _rows(path):
        rows += 1
        model = AppointmentCreate(
            customer_id=int(row["customer_id"]),
            user_id=int(row["doctor_id"]),
            scheduled_at=datetime.fromisoformat(row["start"]).replace(tzinfo=TZ),
            status=row["status"],
            treatments=[int(t) for t in row["treatment_ids"].split("|")],
            room_id=_int_or_none(row["room_id"]),
            assistant_id=_int_or_none(row["assistant_id"]),
            description=row["notes"] or None,
            cancellation_reason=row["cancellation_reason"] or None,
        )
        model.model_dump_json(exclude_none=True)
        ok += 1
    return {"rows": rows, "ok": ok}


async def post(path: str, url: str, concurrency: int) -> dict[str, Any]:
    import aiohttp

    queue: asyncio.Queue[dict[str, str] | None] = asyncio.Queue(maxsize=concurrency * 2)
    counts = {"rows": 0, "ok": 0}
    target = url.rstrip("/") + "/v1/appointments"

    async def worker(session: aiohttp.ClientSession) -> None:
        while (row := await queue.get()) is not None:
            headers = {
                "Authorization": f"Bearer {TOKEN}",
                "X-Tenant": row["clinic"],
                "Content-Type": "application/json",
                "Accept": "application/json",
            }
            async with session.post(target, data=json.dumps(body_of(row)), headers=headers) as r:
                await r.read()
                counts["ok"] += r.status == 201

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        for row in _rows(path):
            counts["rows"] += 1
            await queue.put(row)
        for _ in tasks:
            await queue.put(None)
        await asyncio.gather(*tasks)
    return counts


_Write = tuple[str, Any, "asyncio.Future[None] | None"]


class _GroupWriter:
    """One thread owning the SQLite connection: what has queued runs in one
    transaction, one commit (fsync), then the batch's futures resolve."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute(
            "CREATE TABLE rows (key TEXT PRIMARY KEY, status TEXT NOT NULL, payload TEXT,"
            " sent_at REAL, appointment_id INTEGER)"
        )
        self._conn.execute("CREATE INDEX rows_status ON rows (status)")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def commit(self, sql: str, params: Any) -> asyncio.Future[None]:
        """Queue a write; the future resolves once it is committed."""
        future = self._loop.create_future()
        self._queue.put((sql, params, future))
        return future

    def queue(self, sql: str, params: Any) -> None:
        """Queue a write nobody waits for."""
        self._queue.put((sql, params, None))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            batch, stop = [first], False
            while len(batch) < 500:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._conn.execute("BEGIN IMMEDIATE")
            for sql, params, _ in batch:
                if isinstance(params, list):
                    self._conn.executemany(sql, params)
                else:
                    self._conn.execute(sql, params)
            self._conn.execute("COMMIT")
            done = [f for _, _, f in batch if f is not None]
            if done:
                self._loop.call_soon_threadsafe(_resolve_all, done)
            if stop:
                return


def _resolve_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


async def durable(path: str, url: str, concurrency: int, ledger: str) -> dict[str, Any]:
    import aiohttp

    writer = _GroupWriter(ledger, asyncio.get_running_loop())
    queue_: asyncio.Queue[tuple[str, dict[str, str], str] | None] = asyncio.Queue(
        maxsize=concurrency * 2
    )
    counts = {"rows": 0, "ok": 0}
    target = url.rstrip("/") + "/v1/appointments"

    async def worker(session: aiohttp.ClientSession) -> None:
        while (item := await queue_.get()) is not None:
            key, row, body = item
            intent = "UPDATE rows SET status = 'in_flight', sent_at = ? WHERE key = ?"
            await writer.commit(intent, (time.time(), key))
            headers = {
                "Authorization": f"Bearer {TOKEN}",
                "X-Tenant": row["clinic"],
                "Content-Type": "application/json",
                "Accept": "application/json",
            }
            async with session.post(target, data=body, headers=headers) as r:
                raw = await r.read()
                created = r.status == 201
            counts["ok"] += created
            outcome = "UPDATE rows SET status = ?, appointment_id = ? WHERE key = ?"
            appointment = json.loads(raw)["data"]["id"] if created else None
            writer.queue(outcome, ("created" if created else "failed", appointment, key))

    async def take(batch: list[tuple[str, dict[str, str], str]]) -> None:
        seen = "INSERT INTO rows (key, status, payload) VALUES (?, 'pending', ?)"
        await writer.commit(seen, [(k, b) for k, _, b in batch])
        for item in batch:
            await queue_.put(item)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        batch: list[tuple[str, dict[str, str], str]] = []
        for row in _rows(path):
            counts["rows"] += 1
            batch.append(
                (f"{row['clinic']}/{row['appointment_id']}", row, json.dumps(body_of(row)))
            )
            if len(batch) == 500:
                await take(batch)
                batch = []
        await take(batch)
        for _ in tasks:
            await queue_.put(None)
        await asyncio.gather(*tasks)
    await asyncio.to_thread(writer.close)
    return counts


def sequential(path: str, url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    target = parts.path.rstrip("/") + "/v1/appointments"
    rows = ok = 0
    for row in _rows(path):
        rows += 1
        headers = {
            "Authorization": f"Bearer {TOKEN}",
            "X-Tenant": row["clinic"],
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        conn.request("POST", target, body=json.dumps(body_of(row)), headers=headers)
        resp = conn.getresponse()
        resp.read()
        ok += resp.status == 201
    conn.close()
    return {"rows": rows, "ok": ok}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bench baselines")
    parser.add_argument("kind", choices=["validate", "post", "durable", "sequential"])
    parser.add_argument("file")
    parser.add_argument("--url", default="")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--ledger", default="", help="durable: the SQLite file to create")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.kind == "validate":
        out = validate(args.file)
    elif args.kind == "post":
        out = asyncio.run(post(args.file, args.url, args.concurrency))
    elif args.kind == "durable":
        out = asyncio.run(durable(args.file, args.url, args.concurrency, args.ledger))
    else:
        out = sequential(args.file, args.url)
    out["seconds"] = time.perf_counter() - started
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
