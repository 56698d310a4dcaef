"""Adapter of ``tryton+http://HOST:PORT/DATABASE``: Tryton 8 over its JSON-RPC API.

Customers are ``party.party`` records, reps are ``company.employee`` records (each with its
own party), regions are ``party.category`` records and opportunities and leads are
``sale.opportunity`` records (leads in Tryton's ``lead`` state). Fixture rows carry their
id in the opportunity ``reference`` (``opp-ID``, ``lead-ID``), which tells leads from
opportunities in the keyspace. The login and password come from CRMBENCH_TRYTON_USER and
CRMBENCH_TRYTON_PASSWORD; ``tryton://embedded`` (bench/adapters/tryton_embedded.py)
starts a local trytond and passes them.

Stages move through Tryton's workflow buttons, so an opportunity is read first and moved
along the transitions its state allows; a converted (won) opportunity is never reopened
by Tryton, so moves out of it are answered ``rejected``.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from bench.adapters.base import (
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

USER_ENV = "CRMBENCH_TRYTON_USER"
PASSWORD_ENV = "CRMBENCH_TRYTON_PASSWORD"
OPPORTUNITY = "sale.opportunity"
# The neutral vocabulary on Tryton's opportunity states: it has no separate proposal or
# negotiation state, and "won" is set once the sale made by ``convert`` is processed.
STAGES: dict[str, str] = {
    "open": "lead", "qualified": "opportunity", "proposal": "opportunity",
    "negotiation": "opportunity", "won": "converted", "lost": "lost",
}
FIXTURE_STAGES: dict[str, str] = {
    "prospecting": "lead", "qualification": "opportunity", "proposal": "opportunity",
    "negotiation": "opportunity", "closed_won": "converted", "closed_lost": "lost",
}
# Buttons that lead from a state to a target state along Tryton's allowed transitions.
PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("lead", "opportunity"): ("opportunity",),
    ("lead", "lost"): ("lost",),
    ("lead", "converted"): ("opportunity", "convert"),
    ("opportunity", "lead"): ("lead",),
    ("opportunity", "lost"): ("lost",),
    ("opportunity", "converted"): ("convert",),
    ("lost", "lead"): ("lead",),
    ("lost", "opportunity"): ("lead", "opportunity"),
    ("lost", "converted"): ("lead", "opportunity", "convert"),
    ("cancelled", "lead"): ("lead",),
    ("cancelled", "opportunity"): ("lead", "opportunity"),
    ("cancelled", "lost"): ("lead", "lost"),
    ("cancelled", "converted"): ("lead", "opportunity", "convert"),
}
LOAD_NOTE_PREFIX = "crmbench.load "
NO_AGENTS = "Tryton has no AI agents"
NO_CDP = "Tryton has no customer-data platform (behavioural events, profiles)"
NO_SLA = "Tryton's core modules have no service-level agreements"
NO_WORKFLOW = "Tryton has no user-defined workflow engine (workflows are code in modules)"
NO_PACKS = "Tryton modules are activated with trytond-admin and a restart, not hot-plugged"


def _decimal(value: float) -> dict[str, str]:
    """A number in Tryton's JSON encoding of Decimal."""
    return {"__class__": "Decimal", "decimal": str(Decimal(str(value)))}


def status_for_tryton(body: Any, http_status: int, *, one: bool = False) -> Status:
    """Map a Tryton JSON-RPC answer to a Status.

    Tryton errors are lists: ``[exception name, args]`` for its own exceptions (user
    errors, access errors: refused input) and ``[message, traceback]`` for server faults.
    """
    if http_status != 200:
        return status_for_http(http_status)
    if not isinstance(body, Mapping):
        return Status.error
    error = body.get("error")
    if error is not None:
        name = error[0] if isinstance(error, list) and error else None
        if name in ("UserError", "UserWarning", "AccessError", "ConcurrencyException",
                    "RequiredValidationError", "DomainValidationError",
                    "SelectionValidationError", "SizeValidationError"):
            return Status.rejected
        if name == "RateLimitException":
            return Status.rate_limited
        return Status.server_error
    if "result" not in body:
        return Status.error
    if one and body["result"] in (None, [], {}):
        return Status.not_found
    return Status.ok


class TrytonAdapter(BaseAdapter):
    """Adapter of ``tryton+http://host:port/database``: parties and sale opportunities."""

    name: ClassVar[str] = "tryton+http"
    platform: ClassVar[str] = "tryton"
    load_tables: ClassVar[tuple[str, ...]] = (
        "regions", "reps", "customers", "opportunities", "leads")
    capabilities: ClassVar[dict[str, Capability]] = declared(
        {"crud.mixed": "party.party and sale.opportunity over JSON-RPC"},
        unsupported={
            "agent.latency": NO_AGENTS, "agent.steps": NO_AGENTS,
            "agent.takeover": NO_AGENTS, "agent.explain": NO_AGENTS,
            "cdp.event_delay": NO_CDP, "cdp.realtime": NO_CDP,
            "cdp.tags_explained": NO_CDP, "cdp.permissions": NO_CDP,
            "cdp.consent": NO_CDP, "cdp.export": NO_CDP, "cdp.erase": NO_CDP,
            "cdp.audit": NO_CDP,
            "sla.granularity": NO_SLA, "sla.field": NO_SLA, "sla.process": NO_SLA,
            "sla.action": NO_SLA, "sla.status": NO_SLA, "sla.escalation": NO_SLA,
            "workflow.max_nodes": NO_WORKFLOW, "workflow.dag": NO_WORKFLOW,
            "workflow.breaker": NO_WORKFLOW, "workflow.lineage": NO_WORKFLOW,
            "pack.enable_time": NO_PACKS, "pack.hotplug": NO_PACKS,
            "pack.manufacturing": NO_PACKS,
        },
    )

    def __init__(self, base_url: str, database: str, user: str, password: str,
                 *, run_id: str | None = None) -> None:
        self.base_url, self.database = base_url, database
        self._user, self._password = user, password
        self.run_id = run_id
        self.concurrency = 16
        self._client: httpx.Client | None = None
        self._context: dict[str, Any] = {}
        self._currency: int | None = None
        self._uid = 0
        self._ids = itertools.count(1)
        self._version: str | None = None

    def __repr__(self) -> str:
        return f"TrytonAdapter({self.base_url!r}, database={self.database!r})"

    @classmethod
    def from_url(
        cls, url: str, *, env: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> TrytonAdapter:
        parts = urlsplit(url)
        database = parts.path.strip("/")
        if parts.scheme != "tryton+http" or not parts.hostname or not parts.port \
                or not database or "/" in database:
            raise UserError(f"expected tryton+http://HOST:PORT/DATABASE, got {url!r}")
        source = os.environ if env is None else env
        user, password = source.get(USER_ENV, ""), source.get(PASSWORD_ENV, "")
        if not user or not password:
            raise UserError(f"a Tryton target needs its login in {USER_ENV} and its "
                            f"password in {PASSWORD_ENV}")
        return cls(f"http://{parts.hostname}:{parts.port}", database, user, password,
                   run_id=run_id)

    def credential_report(self) -> CredentialReport | None:
        return CredentialReport((
            CredentialField("user", USER_ENV, bool(self._user), "environment"),
            CredentialField("password", PASSWORD_ENV, bool(self._password), "environment"),
        ))

    def prepare_generator(self, settings: GeneratorSettings) -> None:
        self.concurrency = settings.concurrency

    # -------------------------------------------------------------- connection

    def open(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency,
                              max_keepalive_connections=self.concurrency)
        self._client = httpx.Client(base_url=f"{self.base_url}/{self.database}/rpc/",
                                    timeout=httpx.Timeout(60.0, connect=5.0), limits=limits)
        where = f"tryton+http://{self.base_url.partition('//')[2]}/{self.database}"
        status, session = self._call("common.db.login", self._user,
                                     {"password": self._password}, "en")
        if status is not Status.ok or not isinstance(session, list):
            self.close()
            raise TargetUnreachable(f"{where}: login as {self._user!r} was answered "
                                    f"{status.value}")
        token = base64.b64encode(f"{self._user}:{session[0]}:{session[1]}".encode()).decode()
        self._client.headers["Authorization"] = f"Session {token}"
        self._uid = int(session[0])
        self._refresh_context()
        try:
            version = httpx.post(f"{self.base_url}/rpc/", timeout=10.0, json={
                "id": 0, "method": "common.server.version", "params": []}).json()
            self._version = f"trytond {version['result']}"
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            self._version = None

    def _refresh_context(self) -> None:
        """The user's preferences as call context (its company), and the company currency."""
        status, prefs = self._call("model.res.user.get_preferences", True, {})
        if status is not Status.ok or not isinstance(prefs, dict):
            raise TargetUnreachable(f"reading the Tryton user's preferences: {status.value}")
        self._context = {k: prefs[k] for k in ("company", "employee", "language")
                         if prefs.get(k) is not None}
        if "company" in self._context:
            status, rows = self._model("company.company", "read", [self._context["company"]],
                                       ["currency"])
            if status is Status.ok and rows:
                self._currency = int(rows[0]["currency"])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def platform_version(self) -> str | None:
        return self._version

    def _call(self, method: str, *params: Any, one: bool = False) -> tuple[Status, Any]:
        """One JSON-RPC call; transport faults, timeouts and errors become statuses."""
        if self._client is None:
            raise RuntimeError("TrytonAdapter used before open()")
        body = {"id": next(self._ids), "method": method, "params": list(params)}
        try:
            resp = self._client.post("", json=body)
            answer = resp.json() if resp.status_code == 200 else None
        except httpx.TimeoutException:
            return Status.timeout, None
        except httpx.TransportError:
            return Status.transport_error, None
        except ValueError:
            return Status.error, None
        status = status_for_tryton(answer, resp.status_code, one=one)
        return status, answer.get("result") if status is Status.ok and answer else None

    def _model(self, model: str, method: str, *params: Any, one: bool = False
               ) -> tuple[Status, Any]:
        return self._call(f"model.{model}.{method}", *params, self._context, one=one)

    def _search(self, model: str, domain: list[Any], *, limit: int | None = None,
                order: list[list[str]] | None = None) -> list[int]:
        status, ids = self._model(model, "search", domain, 0, limit, order)
        if status is not Status.ok:
            raise TargetUnreachable(f"searching {model} was answered {status.value}")
        return [int(i) for i in ids]

    def keyspace(self) -> Keyspace:
        """Customers (parties in a region category), reps, regions, opportunities, leads."""
        by_id = [["id", "ASC"]]
        return Keyspace.from_keys(
            customers=self._search("party.party", [["categories", "!=", None]], order=by_id),
            opportunities=self._search(
                OPPORTUNITY, [["reference", "not like", "lead-%"],
                              ["reference", "!=", "crmbench-lead"]], order=by_id),
            reps=self._search("company.employee", [], order=by_id),
            regions=self._search("party.category", [], order=by_id),
            leads=self._search(OPPORTUNITY, [["reference", "like", "lead-%"]], order=by_id),
        )

    # -------------------------------------------------------------- workload verbs

    def get_customer(self, customer_id: Key) -> Status:
        return self._model("party.party", "search_read", [["id", "=", customer_id]], 0, 1,
                           None, ["name", "code", "website", "categories"], one=True)[0]

    def customer_360(self, customer_id: Key) -> Status:
        status = self._model("party.party", "search_read", [["id", "=", customer_id]], 0, 1,
                             None, ["name", "code", "website", "email", "phone",
                                    "contact_mechanisms", "addresses", "categories"],
                             one=True)[0]
        if status is not Status.ok:
            return status
        return self._model(OPPORTUNITY, "search_read",
                           [["party", "=", customer_id], ["state", "in", ["lead", "opportunity"]]],
                           0, 20, None, ["description", "state", "amount", "employee"])[0]

    def search_customers(self, query: SearchQuery) -> Status:
        # Tiers and tags have no field on a Tryton party: those filters are ignored.
        domain: list[Any] = [["name", "ilike", f"{query.name_prefix or ''}%"]]
        if query.region_id is not None:
            domain.append(["categories", "=", query.region_id])
        return self._model("party.party", "search_read", domain, 0, query.limit,
                           [["name", "ASC"]], ["name"])[0]

    def list_leads(self, owner_rep_id: Key, limit: int = 20) -> Status:
        return self._model(OPPORTUNITY, "search_read",
                           [["employee", "=", owner_rep_id], ["state", "=", "lead"]], 0, limit,
                           [["create_date", "DESC"]], ["description", "party", "start_date"])[0]

    def create_lead(self, lead: LeadInput) -> Status:
        row = self._lead_values(lead.company_name, lead.contact_name, lead.email,
                                lead.source, "crmbench-lead")
        if lead.customer_id is not None:
            row["party"] = lead.customer_id
        return self._model(OPPORTUNITY, "create", [row])[0]

    def update_opportunity_stage(self, opportunity_id: Key, stage: Stage) -> Status:
        status, rows = self._model(OPPORTUNITY, "search_read", [["id", "=", opportunity_id]],
                                   0, 1, None, ["state"], one=True)
        if status is not Status.ok:
            return status
        current, target = str(rows[0]["state"]), STAGES[stage]
        if current == target:
            return Status.ok
        path = PATHS.get((current, target))
        if path is None:
            return Status.rejected
        for button in path:
            status = self._model(OPPORTUNITY, button, [opportunity_id])[0]
            if status is not Status.ok:
                return status
        return Status.ok

    def update_customer(self, customer_id: Key, changes: CustomerChanges) -> Status:
        # A Tryton party keeps its website as a contact mechanism; employees and the
        # marketing consent have no counterpart and are ignored.
        if changes.website is None:
            return Status.unsupported
        status, found = self._model("party.contact_mechanism", "search",
                                    [["party", "=", customer_id], ["type", "=", "website"]],
                                    0, 1, None)
        if status is not Status.ok:
            return status
        if found:
            return self._model("party.contact_mechanism", "write", found,
                               {"value": changes.website})[0]
        return self._model("party.contact_mechanism", "create", [
            {"party": customer_id, "type": "website", "value": changes.website}])[0]

    # -------------------------------------------------------------- load hook

    def _lead_values(self, company: str, contact: str, email: str | None, source: str,
                     reference: str) -> dict[str, Any]:
        comment = "\n".join(filter(None, [contact, email, f"source: {source}"]))
        return {"description": company, "comment": comment, "reference": reference,
                "company": self._context.get("company"), "currency": self._currency}

    def _ensure_company(self) -> Status:
        """A fresh Tryton has no company; opportunities need one (and its currency)."""
        if "company" in self._context:
            return Status.ok
        status, currency = self._model("currency.currency", "create", [
            {"name": "Euro", "code": "EUR", "symbol": "€"}])
        if status is not Status.ok:
            return status
        status, party = self._model("party.party", "create", [{"name": "crmbench company"}])
        if status is not Status.ok:
            return status
        status, company = self._model("company.company", "create", [
            {"party": party[0], "currency": currency[0]}])
        if status is not Status.ok:
            return status
        status = self._model("res.user", "write", [self._uid],
                             {"companies": [["add", company]], "company": company[0]})[0]
        if status is Status.ok:
            self._refresh_context()
        return status

    def _create(self, model: str, rows: list[dict[str, Any]]) -> tuple[Status, list[Key | None]]:
        status, ids = self._model(model, "create", rows)
        return status, [int(i) for i in ids] if status is Status.ok else []

    def load_rows(
        self, table: str, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[Status, list[Key | None]]:
        if table == "regions":
            status = self._ensure_company()
            if status is not Status.ok:
                return status, []
            return self._create("party.category", [{"name": r["name"]} for r in rows])
        if table == "reps":
            return self._load_reps(rows)
        if table == "customers":
            return self._create("party.party", [_party(r) for r in rows])
        if table == "opportunities":
            return self._load_opportunities(rows)
        if table == "leads":
            return self._load_leads(rows)
        raise UserError(f"the Tryton adapter does not load the {table} table")

    def _load_reps(self, rows: Sequence[Mapping[str, Any]]) -> tuple[Status, list[Key | None]]:
        status, parties = self._create("party.party", [
            {"name": r["name"], "contact_mechanisms": [["create", [
                {"type": "email", "value": r["email"]}]]]} for r in rows])
        if status is not Status.ok:
            return status, []
        return self._create("company.employee", [
            {"party": p, "company": self._context.get("company")} for p in parties])

    def _load_opportunities(
        self, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[Status, list[Key | None]]:
        status, ids = self._create(OPPORTUNITY, [
            {"party": r["customer_id"], "employee": r["owner_rep_id"],
             "description": r["name"], "amount": _decimal(r["amount"]),
             "reference": f"opp-{r['id']}", "company": self._context.get("company"),
             "currency": self._currency} for r in rows])
        if status is not Status.ok:
            return status, []
        targets = [FIXTURE_STAGES[r["stage"]] for r in rows]
        return self._move_all(ids, targets), ids

    def _load_leads(self, rows: Sequence[Mapping[str, Any]]) -> tuple[Status, list[Key | None]]:
        values = []
        for r in rows:
            row = self._lead_values(r["company_name"], r["contact_name"], r["email"],
                                    r["source"], f"lead-{r['id']}")
            row.update(party=r["customer_id"], employee=r["owner_rep_id"])
            values.append(row)
        status, ids = self._create(OPPORTUNITY, values)
        if status is not Status.ok:
            return status, []
        targets = ["lost" if r["status"] == "disqualified" else "lead" for r in rows]
        return self._move_all(ids, targets), ids

    def _move_all(self, ids: Sequence[Key | None], targets: Sequence[str]) -> Status:
        """Move new leads to their target states, one button call per step for the batch."""
        for step in range(3):
            batch: dict[str, list[Key]] = {}
            for key, target in zip(ids, targets, strict=True):
                path = PATHS.get(("lead", target), ())
                if key is not None and step < len(path):
                    batch.setdefault(path[step], []).append(key)
            for button, keys in batch.items():
                status = self._model(OPPORTUNITY, button, keys)[0]
                if status is not Status.ok:
                    return status
        return Status.ok

    def loaded_profile(self) -> LoadRecord | None:
        company = self._context.get("company")
        if company is None:
            return None
        status, notes = self._model("ir.note", "search_read", [
            ["resource", "=", f"company.company,{company}"],
            ["message", "like", f"{LOAD_NOTE_PREFIX}%"]], 0, 1, [["id", "DESC"]], ["message"])
        if status is not Status.ok or not notes:
            return None
        return LoadRecord.from_json(json.loads(notes[0]["message"][len(LOAD_NOTE_PREFIX):]))

    def record_profile(self, record: LoadRecord) -> Status:
        company = self._context.get("company")
        if company is None:
            return Status.unsupported
        return self._model("ir.note", "create", [{
            "resource": f"company.company,{company}",
            "message": LOAD_NOTE_PREFIX + json.dumps(record.to_json())}])[0]


def _party(row: Mapping[str, Any]) -> dict[str, Any]:
    """A fixture customer as a party: its region as a category, its website as a mechanism."""
    party: dict[str, Any] = {"name": row["name"], "categories": [["add", [row["region_id"]]]]}
    if row.get("website"):
        party["contact_mechanisms"] = [["create", [
            {"type": "website", "value": row["website"]}]]]
    return party
