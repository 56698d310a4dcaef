"""Fxiaoke open API limits and answers: documented quotas, error codes, statuses.

Limits, as published on developer.fxiaoke.com/openapi_v2 "频次限制说明" (start/guide/rate)
and "获取 corpAccessToken" (start/auth/app-info):

    every interface         100 calls per 20 s, each interface counted on its own
                            (单接口调用限制: 100次/20秒); errorCode 30004 or 14001 beyond it
    all interfaces, a day   the purchased Open API packs, 100,000 calls each, stacking,
                            reset at midnight (errorCode 30002; 30003: none purchased)
    the token endpoint      at most 10 calls a minute, never two at once

Not documented, and handled so that either answer is safe:

- who shares the 20 s count (the app, or the whole company with its other integrations):
  the plan uses 80 % of it, leaving the rest to the company's own integrations;
- the daily allocation: the API does not report what is left; one pack (100,000) is
  assumed unless ``daily_calls`` names the tenant's allocation;
- which of 30004 and 14001 is which limit: both are ``rate_limited``;
- the token endpoint's answer beyond its limit: setup retries the throttling and busy
  codes with backoff, and a refusal names the limit beside the credentials.
"""

from __future__ import annotations

from typing import Any

import httpx

from bench.adapters.base import Status, status_for_http
from bench.adapters.saas.common import int_field, json_or_empty
from bench.adapters.saas.quota import Quota

TOKEN_PATH = "/cgi/corpAccessToken/get/V2"
QUERY = "/cgi/crm/v2/data/query"
GET = "/cgi/crm/v2/data/get"
CREATE = "/cgi/crm/v2/data/create"
INVALID = "/cgi/crm/v2/data/invalid"
DELETE = "/cgi/crm/v2/data/delete"
DESCRIBE = "/cgi/crm/v2/object/describe"

TOKEN_EXPIRED = 20016
THROTTLED = frozenset({30004, 14001})
DAILY_QUOTA = frozenset({30002})
NO_QUOTA = 30003
BUSY = frozenset({-1, -2, 50009})

WINDOW_S = 20.0
CALLS_PER_WINDOW = 100
DAILY_CALLS = 100_000
TOKEN_CALLS_PER_MINUTE = 10

RATE_SOURCE = "developer.fxiaoke.com/openapi_v2/start/guide/rate.html (频次限制说明)"
TOKEN_SOURCE = "developer.fxiaoke.com/openapi_v2/start/auth/app-info.html"

# Calls each operation of the mixed workload sends to each interface, at most: a search
# the adapter cannot express (region, tier, tag) and an id with no record send nothing,
# but are charged in full so the plan holds whatever share of them the mix draws.
# Operations not listed send no call (unsupported).
COSTS: dict[str, dict[str, float]] = {
    GET: {"get_customer": 1.0},
    QUERY: {"search_customers": 1.0, "list_leads": 1.0},
    CREATE: {"create_lead": 1.0},
}


def error_code(body: Any) -> int | None:
    return int_field(body, "errorCode")


def fx_status(resp: httpx.Response) -> Status:
    """Status of an open-API response: HTTP first, then the body's errorCode."""
    if resp.status_code != 200:
        return status_for_http(resp.status_code)
    code = error_code(json_or_empty(resp))
    if code == 0:
        return Status.ok
    if code in THROTTLED or code in DAILY_QUOTA:
        return Status.rate_limited
    if code is None or code in BUSY:
        return Status.error
    return Status.rejected


def throttled(resp: httpx.Response) -> bool:
    """Whether a setup call should back off and retry (frequency and busy codes)."""
    code = error_code(json_or_empty(resp))
    return code in THROTTLED or code in BUSY


def quotas(calls_per_window: int, daily_calls: int | None) -> list[Quota]:
    """The documented quotas, with the costs of the mixed workload's operations."""
    per_api = [
        Quota(f"calls per interface per 20 s: {path.split('/v2/')[-1]}",
              calls_per_window, WINDOW_S, costs=costs, source=RATE_SOURCE)
        for path, costs in COSTS.items()
    ]
    every_call = {op: cost for costs in COSTS.values() for op, cost in costs.items()}
    daily = Quota(
        "calls per company per day (purchased Open API packs of 100,000 calls; what is "
        "left is not reported)", daily_calls or DAILY_CALLS, 86_400.0, costs=every_call,
        source=RATE_SOURCE, assumed=daily_calls is None)
    # No timed call fetches a token: listed so the plan shows it, it charges nothing.
    token = Quota("token calls per app per minute (corpAccessToken, never two at once)",
                  TOKEN_CALLS_PER_MINUTE, 60.0, costs={}, source=TOKEN_SOURCE)
    return [*per_api, daily, token]
