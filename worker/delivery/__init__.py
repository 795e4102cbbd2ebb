"""Delivery: turning a tenant's pending ledger rows into exactly one appointment each.

The modules, in the order a row meets them:
- `pacing`: the tenant's leaky bucket and pause gate;
- `lane`: one tenant's pacing, concurrency and stop state (`TenantLane`);
- `identity`: rows sharing customer, doctor, instant and treatments go one at a time;
- `retry`: the tenacity policy for outcomes that prove nothing was processed;
- `slot_search`: finding the appointments at a row's slot (calendar, or the paginated list);
- `decide`: the pure rules that say claim, absent, wait or unknown;
- `row`: one row's state machine (adopt, send, look up, settle, record);
- `lanes`: building a tenant's client and lane over one HTTP session.
Imports point one way: this package uses the client, the ledger and the contract,
and nothing here imports the commands that use it.
"""

from worker.delivery.lane import LaneStats, LaneStopped, TenantLane
from worker.delivery.lanes import AuthGuard, LaneBuilder, http_session
from worker.delivery.retry import RetryPolicy
from worker.delivery.row import Job, RowDelivery, Settling

__all__ = [
    "AuthGuard",
    "Job",
    "LaneBuilder",
    "LaneStats",
    "LaneStopped",
    "RetryPolicy",
    "RowDelivery",
    "Settling",
    "TenantLane",
    "http_session",
]
