"""Customer-data events: idempotent batch ingest into per-customer profiles with explained tags.

One request is one transaction of a fixed handful of statements, whatever its size: lock and
check the customers, look up known idempotency keys, insert the new events, read and upsert
the profiles, then write one ``profile.updated`` stream message per new event.

Tags are computed only from events received while the customer's ``consent_profiling`` is
true: without it, counters are kept but the tag inputs are dropped and no tag is computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from reference_impl import models as m
from reference_impl.db import Database, Row
from reference_impl.errors import UserError
from reference_impl.store import StoreError, iso_utc, now_iso
from reference_impl.stream import Outbox, StreamHub, publish

log = logging.getLogger("reference_impl.cdp")

SUPPRESSED = "consent_profiling is false"
NATS_SUBJECT = "crmbench.events"
NATS_STREAM = "CRMBENCH_EVENTS"
NATS_DURABLE = "reference-crm"
SOURCE_LIMIT = 20
_DAY = 86_400.0
_ENGAGING = frozenset(
    {"page_view", "email_open", "download", "pricing_view", "purchase", "webinar", "chat"}
)
_DISCOUNT_KEYS = ("coupon", "discount_code")

PRICE_WEIGHTS = {"pricing_views": 0.5, "discount_signals": 0.3, "pricing_share": 0.2}
ENGAGEMENT_WEIGHTS = {"recency": 0.6, "frequency": 0.4}
CHURN_WEIGHTS = {"support_calls": 0.6, "silence": 0.4}
PRICE_FORMULA = (
    "0.5 * min(1, pricing_views / 5) + 0.3 * min(1, discount_signals / 3)"
    " + 0.2 * pricing_views / total_events; a discount signal is an event with"
    " properties.discount == true or a coupon / discount_code property"
)
ENGAGEMENT_FORMULA = (
    "0.6 * exp(-days_since_last_engagement / 14) + 0.4 * min(1, engaged_events_30d / 10);"
    " recency is 0 before any engaging event (every type but support_call)"
)
CHURN_FORMULA = (
    "0.6 * min(1, support_calls_90d / 3) + 0.4 * min(1, days_since_last_engagement / 60);"
    " silence counts as 60 days before any engaging event"
)

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


def is_discount(properties: dict[str, Any]) -> bool:
    return properties.get("discount") is True or any(
        properties.get(k) not in (None, "", False) for k in _DISCOUNT_KEYS
    )


def is_batch(body: bytes) -> bool:
    """Whether an events body is ``{"events": [...]}`` rather than one event."""
    try:
        keys = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
    except (msgspec.ValidationError, msgspec.DecodeError):
        return False
    return "events" in keys


def _keep_last(values: list[Any], value: Any, limit: int = SOURCE_LIMIT) -> list[Any]:
    values.append(value)
    return values[-limit:]


def _unit(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 2)


@dataclass(slots=True)
class Profile:
    counters: dict[str, dict[str, Any]]
    tags: dict[str, dict[str, Any]]
    state: dict[str, Any]

    @classmethod
    def from_row(cls, row: Row | None) -> Profile:
        if row is None:
            return cls({}, {}, {})
        return cls(
            _dec.decode(row["counters"]), _dec.decode(row["tags"]), _dec.decode(row["state"])
        )

    def apply(
        self, event_id: int, type_: str, occurred: str, occurred_ts: float,
        properties: dict[str, Any], consent: bool, now_ts: float,
    ) -> dict[str, float]:
        """Count the event and, with consent, recompute the tags; return their values."""
        counter = self.counters.setdefault(type_, {"count": 0, "last_at": None})
        counter["count"] += 1
        if counter["last_at"] is None or occurred > counter["last_at"]:
            counter["last_at"] = occurred
        if not consent:
            self.tags, self.state = {}, {}
            return {}
        st = self.state
        if not st:
            st.update(n=0, pricing_views=0, discounts=0, engaged=[], support=[],
                      last_engaged=None, src={"price": [], "engaged": [], "support": []})
        st["n"] += 1
        src = st["src"]
        if type_ == "pricing_view":
            st["pricing_views"] += 1
        discount = is_discount(properties)
        if discount:
            st["discounts"] += 1
        if type_ == "pricing_view" or discount:
            src["price"] = _keep_last(src["price"], event_id)
        if type_ == "support_call":
            st["support"] = sorted([*st["support"], occurred_ts])[-SOURCE_LIMIT:]
            src["support"] = _keep_last(src["support"], event_id)
        if type_ in _ENGAGING:
            st["engaged"] = sorted([*st["engaged"], occurred_ts])[-SOURCE_LIMIT:]
            src["engaged"] = _keep_last(src["engaged"], event_id)
            last = st["last_engaged"]
            if last is None or occurred_ts >= last[0]:
                st["last_engaged"] = [occurred_ts, event_id]
        self.tags = compute_tags(st, now_ts)
        return {name: tag["value"] for name, tag in self.tags.items()}


def compute_tags(st: dict[str, Any], now_ts: float) -> dict[str, dict[str, Any]]:
    """The three tags with their formula, weights, inputs and source events."""
    total, views, discounts = st["n"], st["pricing_views"], st["discounts"]
    share = views / total if total else 0.0
    w = PRICE_WEIGHTS
    price = (w["pricing_views"] * min(1.0, views / 5) + w["discount_signals"]
             * min(1.0, discounts / 3) + w["pricing_share"] * share)
    last = st["last_engaged"]
    days = max(0.0, (now_ts - last[0]) / _DAY) if last is not None else None
    recent = sum(1 for t in st["engaged"] if t >= now_ts - 30 * _DAY)
    w = ENGAGEMENT_WEIGHTS
    recency = math.exp(-days / 14) if days is not None else 0.0
    engagement = w["recency"] * recency + w["frequency"] * min(1.0, recent / 10)
    calls = sum(1 for t in st["support"] if t >= now_ts - 90 * _DAY)
    silence = min(days, 60.0) if days is not None else 60.0
    w = CHURN_WEIGHTS
    churn = w["support_calls"] * min(1.0, calls / 3) + w["silence"] * silence / 60
    src = st["src"]
    churn_src = sorted({*src["support"], *([last[1]] if last is not None else [])})
    shown_days = round(days, 2) if days is not None else None
    return {
        "price_sensitivity": {
            "value": _unit(price), "formula": PRICE_FORMULA, "weights": PRICE_WEIGHTS,
            "inputs": {"pricing_views": views, "discount_signals": discounts,
                       "total_events": total},
            "source_events": list(src["price"]),
        },
        "engagement": {
            "value": _unit(engagement), "formula": ENGAGEMENT_FORMULA,
            "weights": ENGAGEMENT_WEIGHTS,
            "inputs": {"days_since_last_engagement": shown_days, "engaged_events_30d": recent},
            "source_events": list(src["engaged"]),
        },
        "churn_risk": {
            "value": _unit(churn), "formula": CHURN_FORMULA, "weights": CHURN_WEIGHTS,
            "inputs": {"support_calls_90d": calls, "days_since_last_engagement": shown_days},
            "source_events": churn_src[-SOURCE_LIMIT:],
        },
    }


@dataclass(slots=True)
class _Prepared:
    event: m.EventIn
    prefix: str
    occurred: str
    properties: str
    id: int = 0
    duplicate: bool = False


def _marks(count: int) -> str:
    return ", ".join("?" * count)


async def ingest(hub: StreamHub, events: Sequence[m.EventIn], batch: bool) -> dict[str, Any]:
    """Store the events all or nothing, update the profiles and publish one message each."""
    prepared: list[_Prepared] = []
    for i, ev in enumerate(events):
        prefix = f"events[{i}]." if batch else ""
        try:
            props = _enc.encode(ev.properties).decode()
        except (TypeError, OverflowError, msgspec.EncodeError) as exc:
            raise StoreError(422, "validation_error", f"properties cannot be stored: {exc}",
                             f"{prefix}properties") from exc
        if len(props) > m.MAX_EVENT_PROPERTIES_BYTES:
            raise StoreError(
                422, "validation_error",
                f"properties take {len(props)} bytes as JSON; at most "
                f"{m.MAX_EVENT_PROPERTIES_BYTES} are allowed", f"{prefix}properties",
            )
        prepared.append(_Prepared(ev, prefix, iso_utc(ev.occurred_at), props))

    db = hub.db
    received = now_iso()
    now_ts = time.time()
    customer_ids = sorted({p.event.customer_id for p in prepared})
    # Row locks serialise concurrent profile updates of one customer (PostgreSQL); NO KEY
    # leaves inserts that reference the customer unblocked. SQLite serialises all writes.
    lock = " FOR NO KEY UPDATE" if db.dialect == "postgresql" else ""
    async with hub.transaction() as tx:
        rows = await tx.fetch_all(
            f"SELECT id, consent_profiling FROM customers WHERE id IN ({_marks(len(customer_ids))})"
            f" ORDER BY id{lock}",
            customer_ids,
        )
        consent = {int(r["id"]): bool(r["consent_profiling"]) for r in rows}
        for p in prepared:
            if p.event.customer_id not in consent:
                raise StoreError(
                    422, "unknown_reference",
                    f"customer_id {p.event.customer_id} does not exist in customers",
                    f"{p.prefix}customer_id",
                )
        known = await _known_keys(tx, [p.event.idempotency_key for p in prepared])
        first: dict[str, _Prepared] = {}
        fresh: list[_Prepared] = []
        for p in prepared:
            key = p.event.idempotency_key
            if key in known or key in first:
                p.duplicate = True
            else:
                first[key] = p
                fresh.append(p)
        if fresh:
            await _insert(tx, fresh, received, known)
            for p in fresh:
                if p.event.idempotency_key in known:
                    p.duplicate = True
            fresh = [p for p in fresh if not p.duplicate]
        for p in prepared:
            key = p.event.idempotency_key
            p.id = known[key] if p.duplicate and key in known else first[key].id
        if fresh:
            await _update_profiles(tx, fresh, consent, now_ts, received)
    duplicates = sum(p.duplicate for p in prepared)
    return {
        "accepted": len(prepared) - duplicates,
        "duplicates": duplicates,
        "events": [
            {"idempotency_key": p.event.idempotency_key, "id": p.id, "duplicate": p.duplicate}
            for p in prepared
        ],
    }


async def _known_keys(tx: Outbox, keys: list[str]) -> dict[str, int]:
    unique = list(dict.fromkeys(keys))
    rows = await tx.fetch_all(
        f"SELECT id, idempotency_key FROM cdp_events WHERE idempotency_key IN "
        f"({_marks(len(unique))})",
        unique,
    )
    return {r["idempotency_key"]: int(r["id"]) for r in rows}


async def _insert(
    tx: Outbox, fresh: list[_Prepared], received: str, known: dict[str, int]
) -> None:
    params: list[Any] = []
    for p in fresh:
        ev = p.event
        params += (ev.customer_id, ev.type, p.occurred, received, ev.idempotency_key,
                   p.properties)
    rows = await tx.fetch_all(
        "INSERT INTO cdp_events (customer_id, type, occurred_at, received_at, idempotency_key,"
        " properties) VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(fresh))
        + " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key",
        params,
    )
    ids = {r["idempotency_key"]: int(r["id"]) for r in rows}
    for p in fresh:
        new_id = ids.get(p.event.idempotency_key)
        if new_id is not None:
            p.id = new_id
    lost = [p.event.idempotency_key for p in fresh if p.event.idempotency_key not in ids]
    if lost:
        # Stored by a concurrent request since we looked (PostgreSQL): report it as known.
        known.update(await _known_keys(tx, lost))


async def _update_profiles(
    tx: Outbox, fresh: list[_Prepared], consent: dict[int, bool], now_ts: float, at: str
) -> None:
    cids = sorted({p.event.customer_id for p in fresh})
    rows = await tx.fetch_all(
        f"SELECT customer_id, counters, tags, state FROM cdp_profiles WHERE customer_id IN "
        f"({_marks(len(cids))})",
        cids,
    )
    found = {int(r["customer_id"]): r for r in rows}
    profiles = {cid: Profile.from_row(found.get(cid)) for cid in cids}
    for p in fresh:
        ev = p.event
        tags = profiles[ev.customer_id].apply(
            p.id, ev.type, p.occurred, ev.occurred_at.timestamp(), ev.properties,
            consent[ev.customer_id], now_ts,
        )
        publish(tx, "profile.updated", ev.customer_id, {
            "customer_id": ev.customer_id, "event_id": p.id,
            "idempotency_key": ev.idempotency_key, "type": ev.type, "tags": tags,
        })
    params: list[Any] = []
    for cid in cids:
        prof = profiles[cid]
        params += (cid, _enc.encode(prof.counters).decode(), _enc.encode(prof.tags).decode(),
                   _enc.encode(prof.state).decode(), at)
    await tx.execute(
        "INSERT INTO cdp_profiles (customer_id, counters, tags, state, updated_at) VALUES "
        + ", ".join(["(?, ?, ?, ?, ?)"] * len(cids))
        + " ON CONFLICT (customer_id) DO UPDATE SET counters = excluded.counters,"
        " tags = excluded.tags, state = excluded.state, updated_at = excluded.updated_at",
        params,
    )


async def profile(db: Database, customer_id: int) -> dict[str, Any]:
    """The customer's profile; empty before any event, tags hidden without consent."""
    row = await db.fetch_one(
        "SELECT c.consent_profiling, p.counters, p.tags, p.updated_at FROM customers c "
        "LEFT JOIN cdp_profiles p ON p.customer_id = c.id WHERE c.id = ?",
        (customer_id,),
    )
    if row is None:
        raise StoreError(404, "not_found", f"customer {customer_id} does not exist")
    allowed = bool(row["consent_profiling"])
    return {
        "customer_id": customer_id,
        "counters": _dec.decode(row["counters"]) if row["counters"] else {},
        "tags": _dec.decode(row["tags"]) if allowed and row["tags"] else {},
        "tags_suppressed": None if allowed else SUPPRESSED,
        "updated_at": row["updated_at"],
    }


def engagement(tags_json: str | None) -> float | None:
    """The engagement tag's value from a stored profile's tags, if there is one."""
    if not tags_json:
        return None
    tag = _dec.decode(tags_json).get("engagement")
    return float(tag["value"]) if tag else None


class NatsIngest:
    """Feeds events published to a JetStream subject into :func:`ingest`.

    A message holds what ``POST /events`` takes; it is acknowledged once its transaction has
    committed, so a crash redelivers it and the idempotency keys make that harmless. A
    message that can never be stored (invalid, unknown customer) is terminated and logged.
    """

    def __init__(
        self, hub: StreamHub, url: str, *, subject: str = NATS_SUBJECT,
        stream: str = NATS_STREAM, durable: str = NATS_DURABLE,
    ) -> None:
        self.hub, self.url = hub, url
        self.subject, self.stream, self.durable = subject, stream, durable
        self._nc: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            # Imported by name: nats-py is optional, and mypy must pass without it.
            nats: Any = importlib.import_module("nats")
            not_found: Any = importlib.import_module("nats.js.errors").NotFoundError
        except ImportError as exc:
            raise UserError("NATS ingest needs the nats-py package: pip install nats-py") from exc
        try:
            self._nc = await nats.connect(self.url, name="crmbench-reference",
                                          connect_timeout=5, allow_reconnect=True)
        except Exception as exc:
            raise UserError(f"cannot connect to NATS at {self.url}: {exc}") from exc
        js = self._nc.jetstream()
        try:
            await js.find_stream_name_by_subject(self.subject)
        except not_found:
            await js.add_stream(name=self.stream, subjects=[self.subject])
        sub = await js.pull_subscribe(self.subject, durable=self.durable)
        self._task = asyncio.create_task(self._consume(sub), name="nats-ingest")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._nc is not None:
            await self._nc.close()
            self._nc = None

    async def _consume(self, sub: Any) -> None:
        nats_timeout: Any = importlib.import_module("nats.errors").TimeoutError
        while True:
            try:
                msgs = await sub.fetch(batch=100, timeout=5)
            except nats_timeout:
                continue
            except Exception:
                log.exception("fetching from NATS failed; retrying")
                await asyncio.sleep(1)
                continue
            for msg in msgs:
                await self._handle(msg)

    async def _handle(self, msg: Any) -> None:
        body: bytes = msg.data
        try:
            batch = is_batch(body)
            events = (msgspec.json.decode(body, type=m.EventBatch).events if batch
                      else [msgspec.json.decode(body, type=m.EventIn)])
            await ingest(self.hub, events, batch)
        except (msgspec.ValidationError, msgspec.DecodeError, StoreError) as exc:
            log.warning("NATS event message refused and dropped: %s", exc)
            await msg.term()
        except Exception:
            log.exception("storing a NATS event message failed; it will be redelivered")
            await msg.nak(delay=1)
        else:
            await msg.ack()
