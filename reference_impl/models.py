"""Request bodies of the reference CRM API, validated strictly by msgspec.

Unknown fields, wrong types and out-of-range values are refused before any write.
Update bodies mark every field optional; ``UNSET`` means "leave as is".
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

# Text must be valid for every backend: PostgreSQL refuses NUL characters in text.
_NO_NUL = r"^[^\x00]*$"
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=_NO_NUL)]
ShortText = Annotated[str, Meta(max_length=200, pattern=_NO_NUL)]
LongText = Annotated[str, Meta(min_length=1, max_length=2000, pattern=_NO_NUL)]
# Python's \s spelt out: JSON Schema's (ECMA-262) \s is another set, and the pattern is
# published in the OpenAPI document.
_SPACE = r"\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
Email = Annotated[
    str, Meta(max_length=254, pattern=rf"^[^@{_SPACE}\x00]+@[^@{_SPACE}\x00]+$")
]
Phone = Annotated[str, Meta(max_length=40, pattern=r"^[0-9+()\-. x]*$")]
Tag = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Id = Annotated[int, Meta(ge=1, le=2**53)]
Count = Annotated[int, Meta(ge=0, le=10**9)]
Money = Annotated[float, Meta(ge=0, le=1e13)]

Tier = Literal["strategic", "vip", "key", "normal"]
Stage = Literal[
    "prospecting", "qualification", "proposal", "negotiation", "closed_won", "closed_lost"
]
LeadStatus = Literal["open", "contacted", "qualified", "disqualified", "converted"]
LeadSource = Literal["web", "referral", "trade_show", "cold_call", "partner", "event", "other"]
ActivityType = Literal["call", "email", "meeting", "note", "visit"]


class _Body(Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class NestedContact(_Body, forbid_unknown_fields=True, kw_only=True):
    first_name: Name
    last_name: Name
    title: ShortText | None = None
    email: Email | None = None
    phone: Phone | None = None


class CustomerCreate(_Body, forbid_unknown_fields=True, kw_only=True):
    name: Name
    industry: Name
    region_id: Id
    tier: Tier = "normal"
    owner_rep_id: Id
    employees: Count = 0
    annual_revenue: Money = 0.0
    website: ShortText | None = None
    consent_marketing: bool = False
    consent_profiling: bool = False
    tags: Annotated[list[Tag], Meta(max_length=50)] = []
    contacts: Annotated[list[NestedContact], Meta(max_length=100)] = []


class CustomerUpdate(_Body, forbid_unknown_fields=True, kw_only=True):
    name: Name | UnsetType = UNSET
    industry: Name | UnsetType = UNSET
    region_id: Id | UnsetType = UNSET
    tier: Tier | UnsetType = UNSET
    owner_rep_id: Id | UnsetType = UNSET
    employees: Count | UnsetType = UNSET
    annual_revenue: Money | UnsetType = UNSET
    website: ShortText | UnsetType | None = UNSET
    consent_marketing: bool | UnsetType = UNSET
    consent_profiling: bool | UnsetType = UNSET
    tags: Annotated[list[Tag], Meta(max_length=50)] | UnsetType = UNSET


class ContactCreate(_Body, forbid_unknown_fields=True, kw_only=True):
    customer_id: Id
    first_name: Name
    last_name: Name
    title: ShortText | None = None
    email: Email | None = None
    phone: Phone | None = None


class ContactUpdate(_Body, forbid_unknown_fields=True, kw_only=True):
    first_name: Name | UnsetType = UNSET
    last_name: Name | UnsetType = UNSET
    title: ShortText | UnsetType | None = UNSET
    email: Email | UnsetType | None = UNSET
    phone: Phone | UnsetType | None = UNSET


ProductIds = Annotated[list[Id], Meta(max_length=20)]


class LeadCreate(_Body, forbid_unknown_fields=True, kw_only=True):
    company_name: Name
    contact_name: Name
    email: Email | None = None
    phone: Phone | None = None
    source: LeadSource = "web"
    status: LeadStatus = "open"
    region_id: Id
    owner_rep_id: Id | None = None
    customer_id: Id | None = None
    product_interest: ProductIds = []


class LeadUpdate(_Body, forbid_unknown_fields=True, kw_only=True):
    company_name: Name | UnsetType = UNSET
    contact_name: Name | UnsetType = UNSET
    email: Email | UnsetType | None = UNSET
    phone: Phone | UnsetType | None = UNSET
    source: LeadSource | UnsetType = UNSET
    status: LeadStatus | UnsetType = UNSET
    region_id: Id | UnsetType = UNSET
    owner_rep_id: Id | UnsetType | None = UNSET
    customer_id: Id | UnsetType | None = UNSET
    product_interest: ProductIds | UnsetType = UNSET


class OpportunityCreate(_Body, forbid_unknown_fields=True, kw_only=True):
    customer_id: Id
    owner_rep_id: Id
    name: Name
    stage: Stage = "prospecting"
    amount: Money = 0.0
    expected_close: dt.date


class OpportunityUpdate(_Body, forbid_unknown_fields=True, kw_only=True):
    owner_rep_id: Id | UnsetType = UNSET
    name: Name | UnsetType = UNSET
    stage: Stage | UnsetType = UNSET
    amount: Money | UnsetType = UNSET
    expected_close: dt.date | UnsetType = UNSET


class StageChange(_Body, forbid_unknown_fields=True, kw_only=True):
    stage: Stage


class ActivityCreate(_Body, forbid_unknown_fields=True, kw_only=True):
    customer_id: Id
    contact_id: Id | None = None
    rep_id: Id | None = None
    type: ActivityType
    subject: LongText
    occurred_at: dt.datetime | None = None


class ActivityUpdate(_Body, forbid_unknown_fields=True, kw_only=True):
    contact_id: Id | UnsetType | None = UNSET
    rep_id: Id | UnsetType | None = UNSET
    type: ActivityType | UnsetType = UNSET
    subject: LongText | UnsetType = UNSET
    occurred_at: dt.datetime | UnsetType = UNSET


CdpEventType = Literal[
    "page_view", "email_open", "download", "support_call", "pricing_view", "purchase",
    "webinar", "chat",
]
IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]
MAX_EVENT_PROPERTIES = 32
MAX_EVENT_PROPERTIES_BYTES = 4096
MAX_EVENTS_PER_BATCH = 1000


class EventIn(_Body, forbid_unknown_fields=True, kw_only=True):
    """One customer-data event; ``properties`` take at most 4 KiB as JSON."""

    customer_id: Id
    type: CdpEventType
    properties: Annotated[dict[str, Any], Meta(max_length=MAX_EVENT_PROPERTIES)] = {}
    occurred_at: Annotated[dt.datetime, Meta(tz=True)]
    idempotency_key: IdempotencyKey


class EventBatch(_Body, forbid_unknown_fields=True, kw_only=True):
    """Up to 1,000 events, stored all or nothing."""

    events: Annotated[list[EventIn], Meta(min_length=1, max_length=MAX_EVENTS_PER_BATCH)]


class LeadIntakeRunCreate(_Body, forbid_unknown_fields=True, kw_only=True):
    lead_id: Id
    quantity: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None


class AgentConfigUpdate(_Body, forbid_unknown_fields=True, kw_only=True):
    """Fields left out keep their current value."""

    min_confidence: Annotated[float, Meta(ge=0.0, le=1.0)] | UnsetType = UNSET
    max_quote: Money | UnsetType = UNSET
    escalate_tiers: Annotated[list[Tier], Meta(max_length=4)] | UnsetType = UNSET


class ClockAdvance(_Body, forbid_unknown_fields=True, kw_only=True):
    """Move the test clock forward."""

    seconds: Annotated[float, Meta(ge=0, le=10 * 365 * 86_400)]


def changed_fields(body: Struct) -> dict[str, Any]:
    """Fields an update body sets, with ``None`` kept (it clears a nullable field)."""
    return {
        f: v for f in body.__struct_fields__ if (v := getattr(body, f)) is not UNSET
    }


__all__ = [
    "UNSET",
    "ActivityCreate",
    "ActivityUpdate",
    "AgentConfigUpdate",
    "ClockAdvance",
    "ContactCreate",
    "ContactUpdate",
    "CustomerCreate",
    "CustomerUpdate",
    "EventBatch",
    "EventIn",
    "LeadCreate",
    "LeadIntakeRunCreate",
    "LeadUpdate",
    "NestedContact",
    "OpportunityCreate",
    "OpportunityUpdate",
    "StageChange",
    "changed_fields",
    "msgspec",
]
