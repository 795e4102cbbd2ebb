"""The Flextell HTTP client: one attempt per call, outcome classified for safe retries.

The engine retries; this module only says what happened, and the difference that
matters is between RETRY (the API certainly did not process the request) and
UNKNOWN (it may have: resending could create a duplicate, so reconcile first).
The classification of every status and transport error for each endpoint
stands in one place, so it can be read against the API's own rules.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError
from yarl import URL

from worker import __version__
from worker.api.auth import TokenProvider, TokenUnavailableError
from worker.api.rate_headers import NO_RATE_INFO, RateInfo, rate_info_from_headers
from worker.api.transport import check_port, refuse_credentials
from worker.contract import (
    AppointmentEnvelope,
    AppointmentPage,
    AppointmentResource,
    CalendarItem,
    CalendarResponse,
    CreatedEnvelope,
)
from worker.controls import escape_controls
from worker.errors import ConfigError
from worker.redaction import redact

__all__ = [
    "Answer",
    "CalendarResult",
    "FlextellClient",
    "JsonResult",
    "Outcome",
    "PageResult",
    "RateInfo",
    "Result",
    "classify_status",
]

_MESSAGE_MAX = 300
M = TypeVar("M", bound=BaseModel)


class Outcome(StrEnum):
    """What one request did, as far as the client can tell."""

    CREATED = "created"  # POST 2xx with a parseable envelope
    FOUND = "found"  # GET 2xx with a parseable body
    NOT_FOUND = "not_found"  # GET of one appointment: 404
    REJECTED = "rejected"  # permanent: 400, 404 (POST), 409, 422, other 4xx
    AUTH = "auth"  # 401 (after one refresh, if possible) or 403
    RETRY = "retry"  # certainly not processed: connect error/timeout, 408, 429, 503
    UNKNOWN = "unknown"  # may have been processed: reconcile before any resend
    MISROUTED = "misrouted"  # POST answered 404/405 by no API route: a wrong base URL


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """What every call returns: its outcome, the HTTP status and error, the rate headers."""

    outcome: Outcome
    status: int | None  # HTTP status, None if no response
    error_code: str | None = None  # "validation_error", "http_500", "ServerDisconnectedError", ...
    error_message: str | None = None  # API message or a one-line transport description
    rate: RateInfo = NO_RATE_INFO  # from the response headers; all None without a response


@dataclass(frozen=True, slots=True, kw_only=True)
class Result(Answer):
    """The outcome of one create or get call."""

    appointment: AppointmentResource | None = None  # for CREATED / FOUND
    created_id: int | None = None  # for CREATED: the new appointment's id and code
    created_code: str | None = None
    field_errors: dict[str, list[str]] = field(default_factory=dict)  # Laravel `errors`
    elapsed: float = 0.0  # seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class CalendarResult(Answer):
    """``GET /v1/appointments/calendar``: FOUND with items, or why not."""

    items: list[CalendarItem] = field(default_factory=list)
    last_page: int | None = None  # the paginator's, when the answer is paginated


@dataclass(frozen=True, slots=True, kw_only=True)
class PageResult(Answer):
    """One page of ``GET /v1/appointments``: FOUND with items, or why not."""

    items: list[AppointmentResource] = field(default_factory=list)
    current_page: int | None = None
    last_page: int | None = None
    total: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JsonResult(Answer):
    """Any other call (reference data): the JSON body of a 2xx, or why not."""

    data: Any = None
    field_errors: dict[str, list[str]] = field(default_factory=dict)


def _api_answer(body: bytes) -> bool:
    """Whether an error body is the API's own JSON object (Laravel's `{"message": ...}`)."""
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def classify_status(status: int, *, missing: Outcome = Outcome.REJECTED) -> Outcome:
    """The outcome of a non-2xx status; `missing` is what a 404 means for this call."""
    if status in (401, 403):
        return Outcome.AUTH
    if status in (408, 429, 503):
        # 408: the server gave up before reading the request; 429/503: refused before work.
        return Outcome.RETRY
    if status == 404:
        return missing
    if 400 <= status < 500:
        return Outcome.REJECTED
    # 500, 502, 504, other 5xx, and 1xx/3xx we never asked for: it may have been done.
    return Outcome.UNKNOWN


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    rate: RateInfo


@dataclass(frozen=True, slots=True)
class _Failure:
    """No usable HTTP response: a transport error or no token."""

    outcome: Outcome
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class _ErrorDetails:
    code: str
    message: str
    fields: dict[str, list[str]] = field(default_factory=dict)


def _one_line(text: str) -> str:
    """One line of at most _MESSAGE_MAX characters of a server's text (`_server_text`)."""
    text = _server_text(" ".join(text.split()))
    return text if len(text) <= _MESSAGE_MAX else text[: _MESSAGE_MAX - 3] + "..."


def _server_text(text: str) -> str:
    """A server's text as the worker keeps it: control characters escaped (its ESC
    sequences never reach a terminal, a log or the ledger raw) and every secret the
    worker knows masked (a server that quotes the request's Authorization header back in
    its error put the token into the ledger, the worklist and the reports)."""
    return redact(escape_controls(text))


def _field_errors(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        return {}
    out: dict[str, list[str]] = {}
    for key, messages in value.items():
        if isinstance(messages, list):
            out[_server_text(str(key))] = [_server_text(str(m)) for m in messages]
        else:
            out[_server_text(str(key))] = [_server_text(str(messages))]
    return out


def _error_details(status: int, raw: bytes) -> _ErrorDetails:
    """Code, message and field errors from any error body: JSON (either shape), HTML, text."""
    text = raw.strip()
    fallback_code = f"http_{status}"
    if not text:
        return _ErrorDetails(fallback_code, f"HTTP {status} with an empty body")
    if text[:1] == b"{":
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            error = data.get("error")
            message = data.get("message")
            fields = _field_errors(data.get("errors"))
            if isinstance(error, str) and error:
                code = _server_text(error)
            elif status == 422:
                code = "validation_error"
            else:
                code = fallback_code
            if not isinstance(message, str) or not message:
                message = error if isinstance(error, str) and error else f"HTTP {status}"
            return _ErrorDetails(code, _one_line(message), fields)
    head = text[:512].lower()
    if head.startswith(b"<") or b"<html" in head:
        if status in (502, 503, 504):
            return _ErrorDetails(fallback_code, f"HTTP {status} from a proxy (HTML body)")
        return _ErrorDetails(fallback_code, f"HTTP {status} with an HTML body")
    line = text[:_MESSAGE_MAX].decode("utf-8", errors="replace")
    return _ErrorDetails(fallback_code, _one_line(f"HTTP {status}: {line}"))


def _invalid_body(status: int, exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0] if errors else {"loc": (), "msg": "invalid"}
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return _one_line(
        f"HTTP {status} with an unreadable body ({len(errors)} error(s); {where}: {first['msg']})"
    )


def _misrouted(resp: _Response) -> bool:
    """A 404/405 on a route that takes no id, not about a model: the URL is wrong."""
    return resp.status in (404, 405) and b"No query results for model" not in resp.body


def _check_base_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    refuse_credentials(base, "base URL")  # the messages below show the URL
    check_port(base, "base URL")  # --base-url or the config's: either may reach here
    try:
        url = URL(base)
    except (TypeError, ValueError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(
            f"api.base_url {base_url!r}: expected an http(s) URL such as https://dev.flextell.ai/api"
        )
    return base


class FlextellClient:
    """Calls the Flextell API once per method call and classifies the outcome.

    Never retries except once after a 401 when the token provider renewed the token
    (a 401 is refused before any work, so resending cannot duplicate). Cancellation
    propagates; the caller records a cancelled POST as unknown. Raises AbortError
    only when the refresh token itself is rejected (nothing was processed then).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: TokenProvider,
        *,
        timeout: float = 30.0,
        user_agent: str = f"flextell-worker/{__version__}",
    ) -> None:
        self._session = session
        self._base = _check_base_url(base_url)
        self._token = token
        self._timeout_s = timeout
        # `connect` bounds the pool wait + connect phase below `total`, so a request
        # that never got a connection ends as ConnectionTimeoutError (RETRY) and the
        # bare total timeout only fires once the request may have been sent (UNKNOWN).
        self._timeout = aiohttp.ClientTimeout(
            total=timeout, connect=min(10.0, timeout / 2), sock_connect=min(10.0, timeout)
        )
        self._user_agent = user_agent
        self._appointments_url = URL(self._base + "/v1/appointments")
        self._calendar_url = URL(self._base + "/v1/appointments/calendar")
        self._headers: dict[int, tuple[str, dict[str, str]]] = {}

    def _headers_for(self, tenant: int, token: str) -> dict[str, str]:
        cached = self._headers.get(tenant)
        if cached is not None and cached[0] == token:
            return cached[1]
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "X-Tenant": str(tenant),
            "User-Agent": self._user_agent,
        }
        self._headers[tenant] = (token, headers)
        return headers

    def _transport_failure(self, exc: BaseException) -> _Failure:
        name = type(exc).__name__
        # Order matters: ClientConnectorError is a ClientOSError, and
        # ConnectionTimeoutError a ServerTimeoutError; both mean nothing was sent.
        if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError):
            outcome = Outcome.RETRY
        else:
            outcome = Outcome.UNKNOWN
        if type(exc) is TimeoutError:
            detail = (
                f"no complete response within {self._timeout_s:g}s "
                "(the request may have been processed)"
            )
        else:
            detail = str(exc) or name
        return _Failure(outcome, name, _one_line(redact(f"{name}: {detail}")))

    async def _send(
        self,
        method: str,
        url: URL,
        tenant: int,
        *,
        body: bytes | None = None,
        idempotency_key: str | None = None,
        params: dict[str, str] | None = None,
    ) -> _Response | _Failure:
        """One request (two after a 401 that the provider could cure)."""
        for attempt in (1, 2):
            try:
                token = await self._token.token()
            except TokenUnavailableError as exc:
                return _Failure(Outcome.RETRY, "token_unavailable", _one_line(redact(str(exc))))
            headers = self._headers_for(tenant, token)
            if idempotency_key is not None:
                headers = {**headers, "Idempotency-Key": idempotency_key}
            try:
                async with self._session.request(
                    method,
                    url,
                    data=body,
                    params=params,
                    headers=headers,
                    timeout=self._timeout,
                    allow_redirects=False,
                ) as resp:
                    status = resp.status
                    raw = await resp.read()
                    rate = rate_info_from_headers(resp.headers, now=time.time())
            except (aiohttp.ClientError, TimeoutError) as exc:
                return self._transport_failure(exc)
            if status == 401 and attempt == 1:
                try:
                    renewed = await self._token.refresh(token)
                except TokenUnavailableError as exc:
                    # The 401 means the request was refused unprocessed: safe to retry.
                    return _Failure(
                        Outcome.RETRY,
                        "token_unavailable",
                        _one_line(redact(str(exc))),
                    )
                if renewed:
                    continue
            return _Response(status, raw, rate)
        raise AssertionError("unreachable")  # pragma: no cover

    def _error_result(self, resp: _Response, outcome: Outcome, elapsed: float) -> Result:
        details = _error_details(resp.status, resp.body)
        return Result(
            outcome=outcome,
            status=resp.status,
            appointment=None,
            error_code=details.code,
            error_message=redact(details.message),
            field_errors=details.fields,
            rate=resp.rate,
            elapsed=elapsed,
        )

    def _appointment_result(
        self,
        sent: _Response | _Failure,
        ok: Outcome,
        missing: Outcome,
        started: float,
        *,
        full: bool = True,
    ) -> Result:
        elapsed = time.perf_counter() - started
        if isinstance(sent, _Failure):
            return Result(
                outcome=sent.outcome,
                status=None,
                error_code=sent.code,
                error_message=sent.message,
                elapsed=elapsed,
            )
        if not 200 <= sent.status < 300:
            return self._error_result(sent, classify_status(sent.status, missing=missing), elapsed)
        try:
            if full:
                envelope = AppointmentEnvelope.model_validate_json(sent.body)
                appointment: AppointmentResource | None = envelope.data
                ref = (envelope.data.id, envelope.data.code)
            else:
                created = CreatedEnvelope.model_validate_json(sent.body)
                appointment = None
                ref = (created.data.id, created.data.code)
        except ValidationError as exc:
            # A 2xx whose body we cannot read: it may well have been created.
            message = _invalid_body(sent.status, exc)
            return Result(
                outcome=Outcome.UNKNOWN,
                status=sent.status,
                error_code="invalid_body",
                error_message=message,
                rate=sent.rate,
                elapsed=elapsed,
            )
        return Result(
            outcome=ok,
            status=sent.status,
            appointment=appointment,
            created_id=ref[0],
            created_code=ref[1],
            rate=sent.rate,
            elapsed=elapsed,
        )

    async def create_appointment(
        self, tenant: int, body: bytes, *, idempotency_key: str, full: bool = True
    ) -> Result:
        """``POST /v1/appointments`` once; `body` is the canonical JSON of AppointmentCreate.

        With `full` False the 201's resource is read for its id and code only
        (`created_id`, `created_code`; `appointment` stays None): all an import keeps.

        The create route takes no id, so a 404 that is not about a referenced model
        (Laravel's "No query results for model") or a 405 means the URL is wrong:
        MISROUTED, which stops the tenant instead of failing every row.
        """
        started = time.perf_counter()
        sent = await self._send(
            "POST", self._appointments_url, tenant, body=body, idempotency_key=idempotency_key
        )
        if isinstance(sent, _Response) and _misrouted(sent):
            result = self._error_result(sent, Outcome.MISROUTED, time.perf_counter() - started)
            return result
        if isinstance(sent, _Response) and sent.status == 503 and not _api_answer(sent.body):
            # Not the API's own 503 (maintenance: refused before any work) but a gateway's,
            # such as Envoy's when the upstream's connection ended: the POST may have landed.
            return self._error_result(sent, Outcome.UNKNOWN, time.perf_counter() - started)
        return self._appointment_result(sent, Outcome.CREATED, Outcome.REJECTED, started, full=full)

    async def get_appointment(self, tenant: int, appointment_id: int) -> Result:
        """``GET /v1/appointments/{id}``: FOUND, NOT_FOUND (404), or why it could not tell."""
        started = time.perf_counter()
        url = self._appointments_url / str(appointment_id)
        sent = await self._send("GET", url, tenant)
        return self._appointment_result(sent, Outcome.FOUND, Outcome.NOT_FOUND, started)

    async def _get_model(
        self, url: URL, tenant: int, params: dict[str, str], model: type[M]
    ) -> tuple[M | None, Outcome, int | None, str | None, str | None, RateInfo]:
        sent = await self._send("GET", url, tenant, params=params)
        if isinstance(sent, _Failure):
            return None, sent.outcome, None, sent.code, sent.message, NO_RATE_INFO
        if not 200 <= sent.status < 300:
            details = _error_details(sent.status, sent.body)
            message = redact(details.message)
            outcome = classify_status(sent.status)
            if _misrouted(sent):  # the calendar and the list take no id: a wrong base URL
                outcome = Outcome.MISROUTED
            return None, outcome, sent.status, details.code, message, sent.rate
        try:
            parsed = model.model_validate_json(sent.body)
        except ValidationError as exc:
            message = _invalid_body(sent.status, exc)
            return None, Outcome.UNKNOWN, sent.status, "invalid_body", message, sent.rate
        return parsed, Outcome.FOUND, sent.status, None, None, sent.rate

    async def calendar_page(
        self, tenant: int, start: date, end: date, *, page: int = 1, per_page: int | None = None
    ) -> CalendarResult:
        """One request of ``GET /v1/appointments/calendar?from=&to=`` (both dates inclusive).

        Read in each shape the API family uses: bare ``{"items": [...]}``, inside
        the ``{"success", "data": {...}}`` envelope, or one page of a Laravel
        paginator (`last_page` says how many there are).
        """
        params = {"from": start.isoformat(), "to": end.isoformat()}
        if page > 1:
            params["page"] = str(page)
        if per_page is not None:
            params["per_page"] = str(per_page)
        parsed, outcome, status, code, message, rate = await self._get_model(
            self._calendar_url, tenant, params, CalendarResponse
        )
        return CalendarResult(
            outcome=outcome,
            status=status,
            error_code=code,
            error_message=message,
            rate=rate,
            items=parsed.all_items() if parsed is not None else [],
            last_page=parsed.last_page() if parsed is not None else None,
        )

    async def calendar(
        self, tenant: int, start: date, end: date, *, max_pages: int = 50
    ) -> CalendarResult:
        """The whole calendar from `start` to `end`: every page of `calendar_page`."""
        items: list[CalendarItem] = []
        page = 1
        while True:
            got = await self.calendar_page(tenant, start, end, page=page)
            items.extend(got.items)
            last = got.last_page
            if got.outcome is not Outcome.FOUND or last is None or page >= min(last, max_pages):
                return CalendarResult(
                    outcome=got.outcome,
                    status=got.status,
                    error_code=got.error_code,
                    error_message=got.error_message,
                    rate=got.rate,
                    items=items if got.outcome is Outcome.FOUND else [],
                )
            page += 1

    async def call_json(
        self,
        method: str,
        path: str,
        tenant: int,
        *,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> JsonResult:
        """One GET or POST of ``path`` (below the base URL): FOUND or CREATED with the parsed
        JSON body, or the classified failure. A 2xx whose body is not JSON is UNKNOWN."""
        sent = await self._send(method, URL(self._base + path), tenant, body=body, params=params)
        if isinstance(sent, _Failure):
            return JsonResult(
                outcome=sent.outcome, status=None, error_code=sent.code, error_message=sent.message
            )
        if not 200 <= sent.status < 300:
            details = _error_details(sent.status, sent.body)
            outcome = classify_status(sent.status)
            if method == "GET" and _misrouted(sent):
                outcome = Outcome.MISROUTED
            return JsonResult(
                outcome=outcome,
                status=sent.status,
                error_code=details.code,
                error_message=redact(details.message),
                field_errors=details.fields,
                rate=sent.rate,
            )
        try:
            data = json.loads(sent.body)
        except ValueError:
            return JsonResult(
                outcome=Outcome.UNKNOWN,
                status=sent.status,
                error_code="invalid_body",
                error_message=f"HTTP {sent.status} with a body that is not JSON",
                rate=sent.rate,
            )
        ok = Outcome.CREATED if method == "POST" else Outcome.FOUND
        return JsonResult(outcome=ok, status=sent.status, data=data, rate=sent.rate)

    async def list_appointments(
        self, tenant: int, *, page: int = 1, per_page: int = 100
    ) -> PageResult:
        """One page of ``GET /v1/appointments`` (Laravel paginator)."""
        params = {"page": str(page), "per_page": str(per_page)}
        parsed, outcome, status, code, message, rate = await self._get_model(
            self._appointments_url, tenant, params, AppointmentPage
        )
        if parsed is None:
            return PageResult(
                outcome=outcome, status=status, error_code=code, error_message=message, rate=rate
            )
        meta = parsed.meta
        return PageResult(
            outcome=outcome,
            status=status,
            error_code=code,
            error_message=message,
            rate=rate,
            items=parsed.data,
            current_page=meta.current_page,
            last_page=meta.last_page,
            total=meta.total,
        )
