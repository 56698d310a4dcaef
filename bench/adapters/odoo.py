"""Adapter of ``odoo+http://HOST:PORT/DATABASE``: Odoo 17 over its external JSON-RPC API.

Every call is ``object.execute_kw`` on ``/jsonrpc`` with the user id from ``common.login``
and the API key (or password) from CRMBENCH_ODOO_API_KEY. Customers are company
``res.partner`` records (contacts are their child partners), reps are internal
``res.users``, regions are partner categories (``res.partner.category``), opportunities and
leads are ``crm.lead`` records of either type, and activities are notes in the customer's
chatter (``mail.message``). Fixture rows carry their id in a field the load can search
(partner ``ref``, user ``login``, lead ``referred``, message ``message_id``), so a batch
sent twice creates nothing twice. The load record is kept in ``ir.config_parameter``.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx

from bench.adapters.base import (
    ActivityInput,
    BaseAdapter,
    Capability,
    CredentialField,
    CredentialReport,
    CustomerChanges,
    GeneratorSettings,
    Key,
    Keyspace,
    LeadInput,
    LoadRecord,
    SearchQuery,
    Stage,
    Status,
    declared,
    status_for_http,
)
from bench.errors import TargetUnreachable, UserError

LOGIN_ENV = "CRMBENCH_ODOO_LOGIN"
KEY_ENV = "CRMBENCH_ODOO_API_KEY"
PARTNER, LEAD, MESSAGE = "res.partner", "crm.lead", "mail.message"
LOAD_PARAM = "crmbench.load_record"
# The neutral vocabulary on the pipeline the ``crm`` module installs (by external id);
# Odoo has no negotiation stage, and "lost" is not a stage but an archived lead.
STAGE_XMLIDS: dict[str, str] = {
    "open": "stage_lead1", "qualified": "stage_lead2", "proposal": "stage_lead3",
    "negotiation": "stage_lead3", "won": "stage_lead4",
}
FIXTURE_STAGES: dict[str, Stage] = {
    "prospecting": "open", "qualification": "qualified", "proposal": "proposal",
    "negotiation": "negotiation", "closed_won": "won", "closed_lost": "lost",
}
# Odoo exceptions (``error.data.name``) that are answers about the request, not faults.
REJECTED = frozenset({
    "odoo.exceptions.AccessDenied", "odoo.exceptions.AccessError",
    "odoo.exceptions.UserError", "odoo.exceptions.ValidationError",
    "odoo.exceptions.RedirectWarning", "builtins.ValueError", "builtins.TypeError",
    "builtins.KeyError",
})
NO_AGENTS = "Odoo 17 Community has no AI agents"
NO_CDP = "Odoo has no customer-data platform (behavioural event intake, computed profiles)"
NO_SLA = ("Odoo 17 Community CRM has no service-level agreements (Helpdesk SLA policies "
          "are Enterprise and apply to tickets)")
NO_PROBE = "crmbench has no probe for it on Odoo yet"


def status_for_odoo(body: Any, http_status: int, *, one: bool = False) -> Status:
    """Map an Odoo JSON-RPC answer to a Status.

    Odoo answers every exception as ``error.code`` 200 with the exception's dotted name in
    ``error.data.name`` (a missing record is ``not_found``, access and validation errors are
    ``rejected``, an unknown method ``unsupported``, database faults ``server_error``), and
    leaves ``result`` out when a method returned None.
    """
    if http_status != 200:
        return status_for_http(http_status)
    if not isinstance(body, Mapping):
        return Status.error
    error = body.get("error")
    if error is not None:
        data = error.get("data") if isinstance(error, Mapping) else None
        name = str(data.get("name", "")) if isinstance(data, Mapping) else ""
        message = str(data.get("message", "")) if isinstance(data, Mapping) else ""
        if name == "odoo.exceptions.MissingError":
            return Status.not_found
        if name == "builtins.AttributeError" and "has no attribute" in message:
            return Status.unsupported
        if name in REJECTED or (isinstance(error, Mapping) and error.get("code") == 100):
            return Status.rejected
        return Status.server_error
    if "result" not in body:
        # Odoo leaves ``result`` out of the answer when a method returned None.
        if body.get("jsonrpc") != "2.0":
            return Status.error
        return Status.not_found if one else Status.ok
    if one and body["result"] in (None, False, [], {}):
        return Status.not_found
    return Status.ok


class OdooAdapter(BaseAdapter):
    """Adapter of ``odoo+http://host:port/database``: partners, leads and their chatter."""

    name: ClassVar[str] = "odoo+http"
    platform: ClassVar[str] = "odoo"
    load_tables: ClassVar[tuple[str, ...]] = (
        "regions", "reps", "customers", "contacts", "opportunities", "leads", "activities")
    capabilities: ClassVar[dict[str, Capability]] = declared(
        {"crud.mixed": "res.partner, crm.lead and chatter notes over JSON-RPC execute_kw"},
        unsupported={
            "agent.latency": NO_AGENTS, "agent.steps": NO_AGENTS,
            "agent.takeover": NO_AGENTS, "agent.explain": NO_AGENTS,
            "cdp.event_delay": NO_CDP + "; its bus pushes notifications to web sessions only",
            "cdp.realtime": NO_CDP, "cdp.tags_explained": NO_CDP,
            "cdp.export": "export_data exports one model at a time; there is no per-customer "
                          "bundle with an integrity hash",
            "cdp.audit": "Odoo Community does not log reads of fields or exports",
            "sla.granularity": NO_SLA, "sla.field": NO_SLA, "sla.process": NO_SLA,
            "sla.action": NO_SLA, "sla.status": NO_SLA, "sla.escalation": NO_SLA,
            "workflow.dag": "automation rules are a trigger and a list of server actions, "
                            "not a validated graph of nodes and edges",
            "workflow.breaker": "a failing automated action fails its transaction; rules are "
                                "not paused after repeated failures",
            "workflow.lineage": "Odoo does not list what an automation rule depends on",
            "pack.manufacturing": "no industry pack holds approvals on PPAP documents",
        },
        not_measurable={
            "workflow.max_nodes": "base_automation runs chains of server actions on record "
                                  "triggers; " + NO_PROBE,
            "cdp.permissions": "access rights, record rules and field groups; " + NO_PROBE,
            "cdp.consent": "mail.blacklist stops mass mailings to an address; " + NO_PROBE,
            "cdp.erase": "privacy_lookup archives or deletes a person's records and logs "
                         "it; " + NO_PROBE,
            "pack.enable_time": "modules install at run time (button_immediate_install); "
                                + NO_PROBE,
            "pack.hotplug": "modules install at run time, reloading the registry; "
                            + NO_PROBE,
        },
    )

    def __init__(self, base_url: str, database: str, login: str, api_key: str, *,
                 run_id: str | None = None, load_parallel: int = 4,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url, self.database = base_url, database
        self._login, self._key = login, api_key
        self.run_id = run_id
        self.load_parallel = load_parallel
        self.concurrency = 16
        self._transport = transport
        self._client: httpx.Client | None = None
        self._uid = 0
        self._ids = itertools.count(1)
        self._version: str | None = None
        self._stages: dict[str, int] = {}
        self._note_subtype: int | None = None

    def __repr__(self) -> str:
        return f"OdooAdapter({self.base_url!r}, database={self.database!r})"

    @classmethod
    def from_url(
        cls, url: str, *, env: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> OdooAdapter:
        parts = urlsplit(url)
        database = parts.path.strip("/")
        if parts.scheme != "odoo+http" or not parts.hostname or not parts.port \
                or not database or "/" in database:
            raise UserError(f"expected odoo+http://HOST:PORT/DATABASE, got {url!r}")
        query = parse_qs(parts.query)
        if set(query) - {"load_parallel"}:
            raise UserError(f"unknown options in {url!r}: only load_parallel=N is known")
        try:
            parallel = int(query.get("load_parallel", ["4"])[0])
        except ValueError:
            raise UserError("load_parallel must be a number of concurrent batches") from None
        source = os.environ if env is None else env
        login, key = source.get(LOGIN_ENV, ""), source.get(KEY_ENV, "")
        if not login or not key:
            raise UserError(f"an Odoo target needs its login in {LOGIN_ENV} and an API key "
                            f"(or password) in {KEY_ENV}")
        return cls(f"http://{parts.hostname}:{parts.port}", database, login, key,
                   run_id=run_id, load_parallel=max(1, parallel))

    def credential_report(self) -> CredentialReport | None:
        return CredentialReport((
            CredentialField("login", LOGIN_ENV, bool(self._login), "environment"),
            CredentialField("api_key", KEY_ENV, bool(self._key), "environment"),
        ))

    def prepare_generator(self, settings: GeneratorSettings) -> None:
        self.concurrency = settings.concurrency

    # -------------------------------------------------------------- connection

    def open(self) -> None:
        connections = max(self.concurrency, self.load_parallel)
        limits = httpx.Limits(max_connections=connections,
                              max_keepalive_connections=connections)
        self._client = httpx.Client(base_url=self.base_url, transport=self._transport,
                                    timeout=httpx.Timeout(60.0, connect=5.0), limits=limits)
        where = f"odoo+http://{self.base_url.partition('//')[2]}/{self.database}"
        status, version = self._rpc("common", "version")
        if status is not Status.ok or not isinstance(version, dict):
            self.close()
            raise TargetUnreachable(f"{where} does not answer Odoo's JSON-RPC: {status.value}")
        self._version = f"Odoo {version.get('server_version', '?')}"
        status, uid = self._rpc("common", "login", self.database, self._login, self._key)
        if status is not Status.ok or not isinstance(uid, int) or isinstance(uid, bool):
            self.close()
            raise TargetUnreachable(f"{where}: login as {self._login!r} was refused "
                                    f"({status.value})")
        self._uid = uid
        self._lookup_xmlids()

    def _lookup_xmlids(self) -> None:
        """The pipeline stages and the note subtype, by their external ids."""
        status, rows = self._kw("ir.model.data", "search_read", [[
            "|", "&", ["module", "=", "crm"], ["name", "in", sorted(set(STAGE_XMLIDS.values()))],
            "&", ["module", "=", "mail"], ["name", "=", "mt_note"]]],
            fields=["module", "name", "res_id"])
        if status is not Status.ok:
            raise TargetUnreachable(f"reading Odoo's stages was answered {status.value}; "
                                    "is the crm module installed?")
        by_name = {r["name"]: int(r["res_id"]) for r in rows}
        missing = set(STAGE_XMLIDS.values()) - set(by_name)
        if missing:
            raise TargetUnreachable(f"Odoo lacks the crm stages {sorted(missing)}")
        self._stages = {stage: by_name[xmlid] for stage, xmlid in STAGE_XMLIDS.items()}
        self._note_subtype = by_name.get("mt_note")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def platform_version(self) -> str | None:
        return self._version

    def _rpc(self, service: str, method: str, *args: Any, one: bool = False
             ) -> tuple[Status, Any]:
        """One JSON-RPC call; transport faults, timeouts and errors become statuses."""
        if self._client is None:
            raise RuntimeError("OdooAdapter used before open()")
        body = {"jsonrpc": "2.0", "method": "call", "id": next(self._ids),
                "params": {"service": service, "method": method, "args": list(args)}}
        try:
            resp = self._client.post("/jsonrpc", json=body)
            answer = resp.json() if resp.status_code == 200 else None
        except httpx.TimeoutException:
            return Status.timeout, None
        except httpx.TransportError:
            return Status.transport_error, None
        except ValueError:
            return Status.error, None
        status = status_for_odoo(answer, resp.status_code, one=one)
        return status, answer.get("result") if status is Status.ok and answer else None

    def _kw(self, model: str, method: str, args: list[Any], *, one: bool = False,
            **kwargs: Any) -> tuple[Status, Any]:
        """``execute_kw`` of one model method as the logged-in user."""
        return self._rpc("object", "execute_kw", self.database, self._uid, self._key,
                         model, method, args, kwargs, one=one)

    def _search(self, model: str, domain: list[Any], **kwargs: Any) -> list[int]:
        status, ids = self._kw(model, "search", [domain], order="id", **kwargs)
        if status is not Status.ok:
            raise TargetUnreachable(f"searching {model} was answered {status.value}")
        return [int(i) for i in ids]

    def keyspace(self) -> Keyspace:
        """Companies (but the user's own), internal users, categories, opportunities, leads."""
        status, companies = self._kw("res.company", "search_read", [[]], fields=["partner_id"])
        if status is not Status.ok:
            raise TargetUnreachable(f"reading Odoo's companies was answered {status.value}")
        own = [c["partner_id"][0] for c in companies if c.get("partner_id")]
        reps = self._search("res.users", [["share", "=", False], ["id", "!=", self._uid]])
        every = {"active_test": False}
        return Keyspace.from_keys(
            customers=self._search(PARTNER, [["is_company", "=", True], ["id", "not in", own]]),
            opportunities=self._search(LEAD, [["type", "=", "opportunity"]], context=every),
            reps=reps or [self._uid],
            regions=self._search("res.partner.category", []),
            leads=self._search(LEAD, [["type", "=", "lead"]], context=every),
        )

    # -------------------------------------------------------------- workload verbs

    def get_customer(self, customer_id: Key) -> Status:
        return self._kw(PARTNER, "read", [[customer_id]], one=True,
                        fields=["name", "ref", "website", "category_id", "user_id"])[0]

    def customer_360(self, customer_id: Key) -> Status:
        # One nested read (Odoo 17's web_read): contacts, opportunities and recent notes.
        spec = {
            "name": {}, "ref": {}, "website": {}, "email": {}, "phone": {},
            "category_id": {"fields": {"name": {}}},
            "child_ids": {"fields": {"name": {}, "email": {}, "phone": {}, "function": {}}},
            "opportunity_ids": {"fields": {"name": {}, "stage_id": {}, "expected_revenue": {},
                                           "user_id": {}}},
            "message_ids": {"fields": {"body": {}, "date": {}}, "limit": 10},
        }
        return self._kw(PARTNER, "web_read", [[customer_id]], one=True, specification=spec)[0]

    def search_customers(self, query: SearchQuery) -> Status:
        # Tiers and tags have no field on an Odoo partner: those filters are ignored.
        domain: list[Any] = [["is_company", "=", True],
                             ["name", "=ilike", f"{query.name_prefix or ''}%"]]
        if query.region_id is not None:
            domain.append(["category_id", "in", [query.region_id]])
        return self._kw(PARTNER, "search_read", [domain], fields=["name"],
                        limit=query.limit, order="name")[0]

    def list_leads(self, owner_rep_id: Key, limit: int = 20) -> Status:
        return self._kw(LEAD, "search_read",
                        [[["type", "=", "lead"], ["user_id", "=", owner_rep_id]]],
                        fields=["name", "partner_name", "contact_name", "email_from"],
                        limit=limit, order="create_date desc")[0]

    def create_lead(self, lead: LeadInput) -> Status:
        row = _lead_values(lead.company_name, lead.contact_name, lead.email, lead.source,
                           f"crmbench:run:{self.run_id or 'none'}")
        if lead.customer_id is not None:
            row["partner_id"] = lead.customer_id
        return self._kw(LEAD, "create", [[row]])[0]

    def log_activity(self, activity: ActivityInput) -> Status:
        return self._kw(PARTNER, "message_post", [[activity.customer_id]],
                        body=f"{activity.type}: {activity.subject}",
                        message_type="comment", subtype_xmlid="mail.mt_note")[0]

    def update_opportunity_stage(self, opportunity_id: Key, stage: Stage) -> Status:
        every = {"active_test": False}
        if stage == "lost":
            return self._kw(LEAD, "action_set_lost", [[opportunity_id]], context=every)[0]
        # A lost opportunity is archived; moving it to a stage restores it.
        return self._kw(LEAD, "write", [[opportunity_id],
                                        {"stage_id": self._stages[stage], "active": True}],
                        context=every)[0]

    def update_customer(self, customer_id: Key, changes: CustomerChanges) -> Status:
        # An Odoo partner has no employee count or marketing consent: those are ignored.
        if changes.website is None:
            return Status.unsupported
        return self._kw(PARTNER, "write", [[customer_id], {"website": changes.website}])[0]

    # -------------------------------------------------------------- load hook

    def load_rows(
        self, table: str, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[Status, list[Key | None]]:
        loaders: dict[str, tuple[str, str, Callable[[Mapping[str, Any]], dict[str, Any]]]] = {
            "regions": ("res.partner.category", "name", lambda r: {"name": r["name"]}),
            "reps": ("res.users", "login", _user),
            "customers": (PARTNER, "ref", _company),
            "contacts": (PARTNER, "ref", _contact),
            "opportunities": (LEAD, "referred", self._opportunity),
            "leads": (LEAD, "referred", _lead),
            "activities": (MESSAGE, "message_id", self._note),
        }
        if table not in loaders:
            raise UserError(f"the Odoo adapter does not load the {table} table")
        model, marker, values = loaders[table]
        # Each new internal user joins the "general" channel: users created in parallel
        # collide on its member table, so reps are created one batch at a time.
        parallel = 1 if table == "reps" else self.load_parallel
        return self._create_missing(model, marker, [values(r) for r in rows], parallel)

    def _create_missing(self, model: str, marker: str, rows: list[dict[str, Any]],
                        parallel: int) -> tuple[Status, list[Key | None]]:
        """Create the rows whose marker is not on Odoo yet, in parallel chunks; all keys."""
        context = {"active_test": False, "tracking_disable": True, "mail_create_nolog": True,
                   "mail_notrack": True, "no_reset_password": True}
        marks = [r[marker] for r in rows]
        status, found = self._kw(model, "search_read", [[[marker, "in", marks]]],
                                 fields=[marker], context=context)
        if status is not Status.ok:
            return status, []
        keys: dict[str, int] = {f[marker]: int(f["id"]) for f in found}
        todo = [r for r in rows if r[marker] not in keys]
        size = max(1, -(-len(todo) // parallel))
        chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            answers = list(pool.map(
                lambda chunk: self._kw(model, "create", [chunk], context=context), chunks))
        for chunk, (status, ids) in zip(chunks, answers, strict=True):
            if status is not Status.ok:
                return status, []
            keys.update({r[marker]: int(i) for r, i in zip(chunk, ids, strict=True)})
        return Status.ok, [keys[m] for m in marks]

    def _opportunity(self, row: Mapping[str, Any]) -> dict[str, Any]:
        stage = FIXTURE_STAGES[str(row["stage"])]
        values = {"type": "opportunity", "name": row["name"], "partner_id": row["customer_id"],
                  "user_id": row["owner_rep_id"], "expected_revenue": row["amount"],
                  "date_deadline": row["expected_close"],
                  "referred": f"crmbench:opportunity:{row['id']}",
                  "stage_id": self._stages["open" if stage == "lost" else stage]}
        if stage == "lost":
            values.update(active=False, probability=0)
        return values

    def _note(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {"model": PARTNER, "res_id": row["customer_id"], "message_type": "comment",
                "subtype_id": self._note_subtype, "body": f"{row['type']}: {row['subject']}",
                "date": _odoo_time(str(row["occurred_at"])),
                "message_id": f"<crmbench-activity-{row['id']}@crmbench>"}

    def loaded_profile(self) -> LoadRecord | None:
        status, value = self._kw("ir.config_parameter", "get_param", [LOAD_PARAM])
        if status is not Status.ok or not value:
            return None
        return LoadRecord.from_json(json.loads(value))

    def record_profile(self, record: LoadRecord) -> Status:
        return self._kw("ir.config_parameter", "set_param",
                        [LOAD_PARAM, json.dumps(record.to_json())])[0]


def _odoo_time(stamp: str) -> str:
    """An ISO-8601 UTC stamp as Odoo's datetime text (UTC, no zone, no ``T``)."""
    return stamp.replace("T", " ").removesuffix("Z")[:19]


def _lead_values(company: str, contact: str, email: str | None, source: str,
                 marker: str) -> dict[str, Any]:
    return {"type": "lead", "name": company, "partner_name": company, "contact_name": contact,
            "email_from": email or False, "description": f"source: {source}",
            "referred": marker}


def _user(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": row["name"], "login": row["email"], "email": row["email"],
            "phone": row["phone"]}


def _company(row: Mapping[str, Any]) -> dict[str, Any]:
    """A fixture customer as a company partner: its region a category, its rep the owner."""
    return {"name": row["name"], "is_company": True, "ref": f"crmbench:customer:{row['id']}",
            "category_id": [[6, 0, [row["region_id"]]]], "user_id": row["owner_rep_id"],
            "website": row.get("website") or False}


def _contact(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": f"{row['first_name']} {row['last_name']}", "type": "contact",
            "parent_id": row["customer_id"], "function": row.get("title") or False,
            "email": row.get("email") or False, "phone": row.get("phone") or False,
            "ref": f"crmbench:contact:{row['id']}"}


def _lead(row: Mapping[str, Any]) -> dict[str, Any]:
    values = _lead_values(str(row["company_name"]), str(row["contact_name"]), row["email"],
                          str(row["source"]), f"crmbench:lead:{row['id']}")
    values.update(partner_id=row["customer_id"] or False,
                  user_id=row["owner_rep_id"] or False, phone=row.get("phone") or False)
    if row["status"] == "disqualified":
        values.update(active=False, probability=0)
    return values
