"""What Salesforce preflight checks before any write: field access, data storage, API quotas.

Field access: the sObject Describe resource (``GET /services/data/vXX.X/sobjects/<Object>/
describe``, REST API Developer Guide) lists the fields the calling user can see; a field
hidden by field-level security is left out of ``fields``, and each listed field says
whether the user may set it on create (``createable``) and change it (``updateable``).
The object itself says ``queryable``, ``createable``, ``updateable`` and ``deletable``.
A run whose user lacks one of the fields the workload reads or writes would only show
``rejected`` calls, so preflight names them and stops first.

Data storage: most records count 2 KB of data storage (Salesforce Help, "Data and File
Storage Allocations"); a Developer Edition org has 5 MB. Preflight budgets the seeded
customers (an Account and an Opportunity each) and the Leads and Tasks the run creates.

API quotas (Salesforce Developer Limits and Allocations Quick Reference, "API Request
Limits and Allocations"): every REST call counts against the org's allocation of API
requests over a rolling 24 hours, which the Limits resource reports as
``DailyApiRequests`` (``Max``, ``Remaining``); and at most 25 requests lasting 20 seconds
or more may run at once in production orgs and sandboxes, 5 in Developer Edition and
trial orgs (shorter requests are not capped).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bench.adapters.saas.quota import Concurrency, Quota
from bench.errors import UserError

Access = Literal["read", "create", "update", "delete"]

# sObject Collections take at most 200 records (or ids) per request.
CHUNK = 200
# A query returns at most 2,000 records per batch before nextRecordsUrl.
QUERY_BATCH = 2000
# Objects cleanup queries and deletes, and id maps query (Account, Opportunity).
TAGGED_OBJECTS = 4
MAPPED_OBJECTS = 2

# Most records count 2 KB of data storage.
KB_PER_RECORD = 2.0
# A seeded customer is an Account and an Opportunity.
KB_PER_CUSTOMER = 2 * KB_PER_RECORD
# At most this share of the remaining data storage is used by a run.
STORAGE_SHARE = 0.5
# Operations of the mixed workload that create one record each (a Lead, a Task).
CREATING_OPERATIONS = ("create_lead", "log_activity")

Need = tuple[str, Access, tuple[str, ...]]

# Fields each operation of the mixed workload uses (Id is always readable).
OPERATION_FIELDS: dict[str, tuple[Need, ...]] = {
    "get_customer": (
        ("Account", "read", ("Name", "Site", "Industry", "NumberOfEmployees", "OwnerId")),),
    "customer_360": (
        ("Account", "read", ("Name", "Site", "Industry", "NumberOfEmployees", "OwnerId")),
        ("Contact", "read", ("Name", "Email", "AccountId")),
        ("Opportunity", "read", ("Name", "StageName", "Amount", "CloseDate", "IsClosed",
                                 "AccountId")),
        ("Task", "read", ("Subject", "ActivityDate", "CreatedDate", "WhatId")),
    ),
    "search_customers": (("Account", "read", ("Name", "Site")),),
    "list_leads": (
        ("Lead", "read", ("LastName", "Company", "Status", "IsConverted", "CreatedDate")),),
    "create_lead": (
        ("Lead", "create", ("LastName", "Company", "LeadSource", "Description", "Email")),),
    "log_activity": (
        ("Task", "create", ("Subject", "WhatId", "Status", "Priority", "ActivityDate")),),
    "update_opportunity_stage": (("Opportunity", "update", ("StageName",)),),
    "update_customer": (("Account", "update", ("Website", "NumberOfEmployees")),),
}
# Seeding, id mapping and cleanup, whatever the mix.
SETUP_FIELDS: tuple[Need, ...] = (
    ("Account", "create", ("Name", "Site", "NumberOfEmployees")),
    ("Opportunity", "create", ("Name", "AccountId", "StageName", "CloseDate")),
    ("Account", "read", ("Name",)),
    ("Opportunity", "read", ("Name",)),
    ("Lead", "read", ("LastName",)),
    ("Task", "read", ("Subject",)),
    ("Task", "delete", ()),
    ("Lead", "delete", ()),
    ("Opportunity", "delete", ()),
    ("Account", "delete", ()),
)
_OBJECT_FLAG: dict[Access, str] = {
    "read": "queryable", "create": "createable", "update": "updateable", "delete": "deletable",
}
_FIELD_FLAG: dict[Access, str | None] = {
    "read": None, "create": "createable", "update": "updateable", "delete": None,
}


def required(operations: Iterable[str]) -> dict[str, list[tuple[Access, tuple[str, ...]]]]:
    """sObject -> what the given operations and the run's setup need of it."""
    needs: dict[str, list[tuple[Access, tuple[str, ...]]]] = {}
    for op in operations:
        for sobject, access, fields in OPERATION_FIELDS.get(op, ()):
            needs.setdefault(sobject, []).append((access, fields))
    for sobject, access, fields in SETUP_FIELDS:
        needs.setdefault(sobject, []).append((access, fields))
    return needs


def missing_access(
    describe: Any, needs: list[tuple[Access, tuple[str, ...]]]
) -> list[tuple[Access, str | None]]:
    """(access, field or None for the object) the described sObject does not grant.

    ``describe`` is the sObject Describe body, or None when the object itself is not
    visible to the user.
    """
    if not isinstance(describe, dict):
        return sorted({(access, None) for access, _ in needs}, key=_order)
    fields = {str(f.get("name")): f for f in describe.get("fields") or []
              if isinstance(f, dict)}
    missing: set[tuple[Access, str | None]] = set()
    for access, names in needs:
        if describe.get(_OBJECT_FLAG[access]) is False:
            missing.add((access, None))
            continue
        flag = _FIELD_FLAG[access]
        for name in names:
            field = fields.get(name)
            if field is None or field.get("accessible") is False or (
                flag is not None and not field.get(flag)
            ):
                missing.add((access, name))
    return sorted(missing, key=_order)


def _order(item: tuple[Access, str | None]) -> tuple[str, str]:
    return item[0], item[1] or ""


def access_error(missing: Mapping[str, list[tuple[Access, str | None]]], user: str) -> UserError:
    """The error naming every missing field or object permission, and how to grant it."""
    fields: dict[str, list[str]] = {}
    objects: dict[str, list[str]] = {}
    for sobject, items in missing.items():
        for access, name in items:
            if name is None:
                objects.setdefault(access, []).append(sobject)
            else:
                fields.setdefault(access, []).append(f"{sobject}.{name}")
    parts = [f"{access} {', '.join(names)}" for access, names in sorted(fields.items())]
    parts += [f"{access} on the object {', '.join(names)}"
              for access, names in sorted(objects.items())]
    return UserError(
        f"the Salesforce user {user} lacks access the workload needs: {'; '.join(parts)}. "
        "Grant field-level security (Read Access for fields read, Edit Access for fields "
        "created or updated) and the object permissions (Read, Create, Edit, Delete) with a "
        "permission set assigned to that user (Setup > Permission Sets > Object Settings), "
        "then run again"
    )


def writes_per_second(rate: float, mix: Mapping[str, float]) -> float:
    """Records the mixed workload creates per second at ``rate`` calls per second."""
    total = sum(w for w in mix.values() if w > 0)
    if total <= 0:
        return 0.0
    return rate * sum(max(mix.get(op, 0.0), 0.0) for op in CREATING_OPERATIONS) / total


@dataclass(frozen=True)
class StoragePlan:
    """How many customers to seed so that the fixture and the run's records fit."""

    customers: int
    run_records: int
    remaining_mb: float | None
    scaled: str | None

    @property
    def needed_kb(self) -> float:
        return self.customers * KB_PER_CUSTOMER + self.run_records * KB_PER_RECORD

    def to_json(self) -> dict[str, Any]:
        return {"remaining_mb": self.remaining_mb, "seed_customers": self.customers,
                "run_records": self.run_records, "needed_kb": self.needed_kb,
                "share": STORAGE_SHARE, "kb_per_record": KB_PER_RECORD}


def plan_storage(
    requested: int, existing: int, run_records: int, remaining_mb: float | None, org: str
) -> StoragePlan:
    """Fit the seed (``requested`` customers, or ``existing`` ones reused) and the records
    the run creates into ``STORAGE_SHARE`` of the remaining data storage, or refuse."""
    if remaining_mb is None:
        return StoragePlan(existing or requested, run_records, None, None)
    usable_kb = max(remaining_mb, 0.0) * 1024 * STORAGE_SHARE
    run_kb = run_records * KB_PER_RECORD
    seed_kb = existing * KB_PER_CUSTOMER if existing else KB_PER_CUSTOMER
    if run_kb + seed_kb > usable_kb:
        seed = (f"the {existing} customers already seeded ({seed_kb:g} KB)" if existing
                else f"at least one seeded customer ({KB_PER_CUSTOMER:g} KB)")
        raise UserError(
            f"Salesforce org {org} has {remaining_mb:g} MB of data storage left, and a run "
            f"uses at most {STORAGE_SHARE:.0%} of it ({usable_kb:g} KB); this run would "
            f"create about {run_records} leads and tasks ({run_kb:g} KB at "
            f"{KB_PER_RECORD:g} KB a record) plus {seed}. Lower the rate or the duration, "
            "or free data storage (crmbench cleanup removes earlier runs' records)"
        )
    if existing:
        return StoragePlan(existing, run_records, remaining_mb, None)
    cap = math.floor((usable_kb - run_kb) / KB_PER_CUSTOMER)
    if cap >= requested:
        return StoragePlan(requested, run_records, remaining_mb, None)
    return StoragePlan(cap, run_records, remaining_mb, (
        f"scaled from {requested} to {cap} customers: {remaining_mb:g} MB of data storage "
        f"remain, at most {STORAGE_SHARE:.0%} of it is used, the run's {run_records} leads "
        f"and tasks take {run_kb:g} KB and each seeded customer {KB_PER_CUSTOMER:g} KB"
    ))


@dataclass(frozen=True)
class ApiBudget:
    """API calls a run takes from the daily allocation, by purpose."""

    scenario: int
    seed: int
    cleanup: int
    id_maps: int
    checks: int

    @property
    def setup(self) -> int:
        """Every call but the scenario's."""
        return self.seed + self.cleanup + self.id_maps + self.checks

    @property
    def needed(self) -> int:
        return self.scenario + self.setup

    def to_json(self) -> dict[str, int]:
        return {"needed": self.needed, "scenario": self.scenario, "seed": self.seed,
                "cleanup": self.cleanup, "id_maps": self.id_maps, "checks": self.checks}


def api_budget(
    *, scenario_calls: int, seed_customers: int, customers: int, run_records: int, checks: int
) -> ApiBudget:
    """The calls of a run: the scenario's, seeding (two Collections inserts per 200
    customers), id maps (generator processes each query Accounts and Opportunities),
    cleanup (a query per object and batch, a Collections delete per 200 records) and the
    preflight checks."""
    created = 2 * customers + run_records
    return ApiBudget(
        scenario=scenario_calls,
        seed=2 * math.ceil(seed_customers / CHUNK),
        cleanup=(TAGGED_OBJECTS * (1 + math.ceil(created / QUERY_BATCH))
                 + math.ceil(created / CHUNK)),
        id_maps=2 * MAPPED_OBJECTS * (1 + math.ceil(customers / QUERY_BATCH)),
        checks=checks,
    )


_LIMITS_SOURCE = ("Salesforce Developer Limits and Allocations Quick Reference, API Request "
                  "Limits and Allocations; REST API Developer Guide, Limits resource")
DAILY_QUOTA = "API requests per org over a rolling 24 hours (DailyApiRequests)"
# The smallest allocation of the org types a run may use (Developer Edition: 15,000 calls).
DEVELOPER_EDITION_DAILY = 15_000


def daily_quota(limits: Mapping[str, Any] | None, reserved: int = 0) -> Quota:
    """The org's daily API allocation from the Limits resource, ``reserved`` calls (setup,
    cleanup) taken off what is left; before it is read, Developer Edition's allocation."""
    daily = (limits or {}).get("DailyApiRequests") or {}
    top, left = daily.get("Max"), daily.get("Remaining")
    if isinstance(top, int) and top > 0:
        remaining = max(left - reserved, 0) if isinstance(left, int) else None
        return Quota(DAILY_QUOTA, top, 86_400, remaining=remaining, source=_LIMITS_SOURCE)
    # Each org's allocation depends on its edition and licences; until /limits is read the
    # smallest one is assumed.
    return Quota(DAILY_QUOTA + ", not read yet: Developer Edition's", DEVELOPER_EDITION_DAILY,
                 86_400, source=_LIMITS_SOURCE, assumed=True)


CONCURRENCY = "concurrent long-running API requests"
# Only requests that last this long count against the cap: a healthy run's calls do not.
LONG_RUNNING_S = 20.0


def concurrency_cap(org: Mapping[str, Any] | None) -> Concurrency:
    """25 long-running requests at once in production orgs and sandboxes, 5 in Developer
    Edition and trial orgs; before the org is read, the smaller."""
    if org is None:
        return Concurrency(CONCURRENCY + ", org type not read yet", 5, _LIMITS_SOURCE,
                           assumed=True, over_s=LONG_RUNNING_S)
    small = org.get("OrganizationType") == "Developer Edition" or bool(
        org.get("TrialExpirationDate"))
    return Concurrency(CONCURRENCY, 5 if small else 25, _LIMITS_SOURCE, over_s=LONG_RUNNING_S)
