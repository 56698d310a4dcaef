"""Agents: declared sequences of steps over CRM tools, run in the background and fully logged.

Each step states its intent and returns its output with a confidence and the rule that
produced it; the runtime records the inputs, output and timing of every step in the run's
decision log, so each decision can be traced to data and rule. The scoring step is pluggable
(:class:`Scorer`; the default is rule-based, with no network and no external model; another
can be named by dotted path). A run ends with one stream message, written in the same
transaction as its final state: ``agent.completed``, ``agent.escalated`` (to the human queue)
or ``agent.failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import msgspec

from reference_impl import cdp
from reference_impl import models as m
from reference_impl.cluster import announce, settle
from reference_impl.db import Database, Row
from reference_impl.errors import UserError
from reference_impl.schema import TIERS
from reference_impl.store import Page, StoreError, now_iso
from reference_impl.stream import StreamHub, publish

if TYPE_CHECKING:
    from reference_impl.cluster import Cluster

log = logging.getLogger("reference_impl.agents")

STOP_TIMEOUT_S = 5.0
CONSENT_SKIP = "consent_profiling is false: profiling data is not used"
_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class StepResult:
    output: dict[str, Any]
    confidence: float
    rule: str
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Score:
    value: float
    confidence: float
    rule: str
    details: dict[str, Any] = field(default_factory=dict)


class Scorer(Protocol):
    """The model step of lead qualification: features in, score and confidence out."""

    name: str

    async def score(self, features: Mapping[str, Any]) -> Score: ...


@dataclass(frozen=True, slots=True)
class LeadIntakeConfig:
    min_confidence: float = 0.82
    max_quote: float = 50_000.0
    escalate_tiers: tuple[str, ...] = ("strategic",)


@dataclass(slots=True)
class RunContext:
    db: Database
    run_id: int
    lead: Row
    quantity: int | None
    config: LeadIntakeConfig
    scorer: Scorer
    customer: Row | None = None
    results: dict[str, StepResult] = field(default_factory=dict)


class Step(Protocol):
    name: str
    intent: str

    async def run(self, ctx: RunContext) -> StepResult: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str
    customer_id: int | None = None
    owner_rep_id: int | None = None
    quantity: int | None = None
    quote: dict[str, Any] | None = None
    reasons: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    steps: tuple[Step, ...]
    conclude: Callable[[RunContext], Outcome]


SOURCE_WEIGHTS = {"referral": 0.9, "partner": 0.8, "trade_show": 0.7, "event": 0.7, "web": 0.6,
                  "other": 0.5, "cold_call": 0.4}
TIER_FIT = {"strategic": 1.0, "vip": 0.9, "key": 0.75, "normal": 0.6}
EVIDENCE_WEIGHTS = {"email": 0.25, "phone": 0.15, "linked_customer": 0.25,
                    "firmographics": 0.10, "known_source": 0.10, "behaviour": 0.15}
SCORE_WEIGHTS = {"source": 0.3, "tier_fit": 0.3, "size": 0.2, "engagement": 0.2}


class RuleScorer:
    """Deterministic scoring over firmographic and behavioural features."""

    name = "rules-v1"

    async def score(self, features: Mapping[str, Any]) -> Score:
        linked = features.get("customer_id") is not None
        employees = int(features.get("employees") or 0)
        engagement = features.get("engagement")
        evidence = {
            "email": bool(features.get("has_email")),
            "phone": bool(features.get("has_phone")),
            "linked_customer": linked,
            "firmographics": linked and employees > 0 and bool(features.get("annual_revenue")),
            "known_source": features.get("source") not in (None, "other"),
            "behaviour": engagement is not None,
        }
        coverage = sum(EVIDENCE_WEIGHTS[k] for k, present in evidence.items() if present)
        components = {
            "source": SOURCE_WEIGHTS.get(str(features.get("source")), 0.5),
            "tier_fit": TIER_FIT.get(str(features.get("tier")), 0.4) if linked else 0.4,
            "size": round(min(1.0, math.log10(1 + employees) / 4), 4),
            "engagement": float(engagement) if engagement is not None else 0.0,
        }
        value = sum(SCORE_WEIGHTS[k] * v for k, v in components.items())
        return Score(
            value=round(value, 2),
            confidence=round(0.5 + 0.5 * coverage, 2),
            rule=(
                "confidence = 0.5 + 0.5 * evidence coverage (weights: email 0.25, phone 0.15, "
                "linked customer 0.25, firmographics 0.10, known source 0.10, behaviour "
                "profile 0.15); score = 0.3 * source + 0.3 * tier fit + 0.2 * min(1, "
                "log10(1 + employees) / 4) + 0.2 * engagement; qualified when score >= 0.5"
            ),
            details={"evidence": evidence, "coverage": round(coverage, 2),
                     "components": components, "weights": SCORE_WEIGHTS},
        )


def load_scorer(path: str) -> Scorer:
    """A scorer named ``package.module:Name`` or ``package.module.Name`` (class or object)."""
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UserError(f"cannot load the agent scorer {path!r}: {exc}") from exc
    scorer = target() if isinstance(target, type) else target
    if not callable(getattr(scorer, "score", None)):
        raise UserError(f"agent scorer {path!r} has no score(features) method")
    if not isinstance(getattr(scorer, "name", None), str):
        scorer.name = path
    return scorer  # type: ignore[no-any-return]


TIER_DISCOUNTS = {"strategic": 0.15, "vip": 0.10, "key": 0.05, "normal": 0.0}
DEFAULT_QUANTITY_RULE = "quantity = max(1, ceil(employees / 100)), 1 without a linked customer"


def _products(lead: Row) -> list[int]:
    raw = lead["product_interest"]
    values = json.loads(raw) if isinstance(raw, str) else raw
    return [int(v) for v in values or []]


def _marks(count: int) -> str:
    return ", ".join("?" * count)


class Qualify:
    name = "qualify"
    intent = ("Score the lead and how sure that score is, from its completeness, source, the "
              "linked customer's tier and size and the customer's engagement profile")

    async def run(self, ctx: RunContext) -> StepResult:
        lead = ctx.lead
        row = None
        if lead["customer_id"] is not None:
            row = await ctx.db.fetch_one(
                "SELECT c.id, c.tier, c.employees, c.annual_revenue, c.owner_rep_id, "
                "c.region_id, c.consent_profiling, p.tags FROM customers c "
                "LEFT JOIN cdp_profiles p ON p.customer_id = c.id WHERE c.id = ?",
                (lead["customer_id"],),
            )
        engagement = None
        skipped: list[dict[str, str]] = []
        if row is not None:
            tags = row.pop("tags")
            if row["consent_profiling"]:
                engagement = cdp.engagement(tags)
            else:
                # Read when the step runs, so a run queued before a withdrawal honours it.
                skipped.append({"input": "engagement", "reason": CONSENT_SKIP})
                log.info("agent run %d: engagement profile of customer %s not used: %s",
                         ctx.run_id, row["id"], CONSENT_SKIP)
            ctx.customer = row
        features = {
            "lead_id": lead["id"], "has_email": bool(lead["email"]),
            "has_phone": bool(lead["phone"]), "source": lead["source"],
            "customer_id": row["id"] if row else None, "tier": row["tier"] if row else None,
            "employees": row["employees"] if row else None,
            "annual_revenue": row["annual_revenue"] if row else None,
            "engagement": engagement,
        }
        score = await ctx.scorer.score(features)
        return StepResult(
            output={"score": score.value, "qualified": score.value >= 0.5,
                    "scorer": ctx.scorer.name, **score.details, "skipped": skipped},
            confidence=score.confidence, rule=score.rule, inputs=features,
        )


class PurchaseHistory:
    name = "purchase_history"
    intent = "Look up the linked customer's orders: count, lifetime value and the last order"

    async def run(self, ctx: RunContext) -> StepResult:
        customer = ctx.customer
        if customer is None:
            return StepResult(
                output={"orders": 0, "lifetime_value": 0.0, "last_order": None},
                confidence=1.0, rule="the lead is not linked to a customer: no purchase history",
                inputs={"customer_id": None},
            )
        cid = customer["id"]
        stats = await ctx.db.fetch_one(
            "SELECT COUNT(*) AS orders, COALESCE(SUM(total_amount), 0) AS lifetime_value "
            "FROM orders WHERE customer_id = ?",
            (cid,),
        )
        last = await ctx.db.fetch_one(
            "SELECT id, ordered_at, status, total_amount FROM orders WHERE customer_id = ? "
            "ORDER BY ordered_at DESC, id DESC LIMIT 1",
            (cid,),
        )
        assert stats is not None
        return StepResult(
            output={"orders": int(stats["orders"]),
                    "lifetime_value": round(float(stats["lifetime_value"]), 2),
                    "last_order": last},
            confidence=1.0, rule="orders of the customer: count, sum of totals, latest by date",
            inputs={"customer_id": cid},
        )


class Inventory:
    name = "inventory"
    intent = "Check the stock of the products the lead is interested in, in the lead's region"

    async def run(self, ctx: RunContext) -> StepResult:
        products = _products(ctx.lead)
        region = ctx.lead["region_id"]
        rows: list[Row] = []
        if products:
            rows = await ctx.db.fetch_all(
                f"SELECT product_id, quantity FROM inventory WHERE region_id = ? AND "
                f"product_id IN ({_marks(len(products))})",
                [region, *products],
            )
        found = {int(r["product_id"]): int(r["quantity"]) for r in rows}
        stock = [{"product_id": p, "available": found.get(p, 0)} for p in products]
        return StepResult(
            output={"region_id": region, "stock": stock,
                    "out_of_stock": [p for p in products if found.get(p, 0) == 0]},
            confidence=1.0 if products else 0.5,
            rule="inventory quantity per product of interest in the lead's region; "
                 "no inventory row counts as 0",
            inputs={"region_id": region, "product_interest": products},
        )


class Quote:
    name = "quote"
    intent = "Price the request: unit prices times quantity, less the customer's tier discount"

    async def run(self, ctx: RunContext) -> StepResult:
        products = _products(ctx.lead)
        customer = ctx.customer
        if ctx.quantity is not None:
            quantity, qty_rule = ctx.quantity, "quantity as requested"
        else:
            employees = int(customer["employees"]) if customer else 0
            quantity = max(1, math.ceil(employees / 100)) if customer else 1
            qty_rule = DEFAULT_QUANTITY_RULE
        rows: list[Row] = []
        if products:
            rows = await ctx.db.fetch_all(
                f"SELECT id, sku, name, unit_price FROM products WHERE id IN "
                f"({_marks(len(products))}) ORDER BY id",
                products,
            )
        stock = {s["product_id"]: s["available"]
                 for s in ctx.results["inventory"].output["stock"]}
        lines = [
            {"product_id": int(r["id"]), "sku": r["sku"], "name": r["name"],
             "unit_price": float(r["unit_price"]), "quantity": quantity,
             "amount": round(float(r["unit_price"]) * quantity, 2),
             "in_stock": stock.get(int(r["id"]), 0) >= quantity}
            for r in rows
        ]
        tier = customer["tier"] if customer else None
        rate = TIER_DISCOUNTS.get(tier, 0.0) if tier else 0.0
        subtotal = round(sum(line["amount"] for line in lines), 2)
        discount = round(subtotal * rate, 2)
        quote = {"lines": lines, "quantity": quantity, "subtotal": subtotal,
                 "discount_rate": rate, "discount": discount,
                 "total": round(subtotal - discount, 2)}
        unknown = sorted(set(products) - {line["product_id"] for line in lines})
        if unknown:
            quote["unknown_products"] = unknown
        return StepResult(
            output=quote,
            confidence=1.0 if lines and not unknown else 0.5,
            rule=f"{qty_rule}; amount = unit_price * quantity; total = subtotal * (1 - tier "
                 "discount) with discounts strategic 15%, vip 10%, key 5%, normal 0%",
            inputs={"product_interest": products, "requested_quantity": ctx.quantity,
                    "tier": tier, "employees": customer["employees"] if customer else None},
        )


def _amount(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


class Notify:
    name = "notify"
    intent = ("Hand the lead to its owning rep, or to the human queue when confidence, quote "
              "size or customer tier call for a person")

    async def run(self, ctx: RunContext) -> StepResult:
        cfg = ctx.config
        confidence = ctx.results["qualify"].confidence
        total = float(ctx.results["quote"].output["total"])
        tier = ctx.customer["tier"] if ctx.customer else None
        reasons: list[str] = []
        if confidence < cfg.min_confidence:
            reasons.append(f"confidence {confidence:.2f} < {cfg.min_confidence:g}")
        if total > cfg.max_quote:
            reasons.append(f"quote {total:,.2f} > {_amount(cfg.max_quote)}")
        if tier is not None and tier in cfg.escalate_tiers:
            reasons.append(f"customer tier {tier}")
        owner, owner_rule = ctx.lead["owner_rep_id"], "the lead's owner"
        if owner is None and ctx.customer is not None:
            owner, owner_rule = ctx.customer["owner_rep_id"], "the customer's owner"
        if owner is None:
            owner = await ctx.db.fetch_val(
                "SELECT id FROM reps WHERE region_id = ? ORDER BY id LIMIT 1",
                (ctx.lead["region_id"],),
            )
            owner_rule = "the first rep of the lead's region"
        decision = "escalate" if reasons else "notify"
        return StepResult(
            output={"decision": decision, "reasons": reasons, "rep_id": owner,
                    "rep_rule": owner_rule,
                    "route": "human queue" if reasons else f"rep {owner}"},
            confidence=1.0,
            rule=(f"escalate when confidence < {cfg.min_confidence:g}, or quote total > "
                  f"{_amount(cfg.max_quote)}, or customer tier in "
                  f"[{', '.join(cfg.escalate_tiers)}]; else notify the owning rep"),
            inputs={"confidence": confidence, "quote_total": total, "tier": tier,
                    "min_confidence": cfg.min_confidence, "max_quote": cfg.max_quote,
                    "escalate_tiers": list(cfg.escalate_tiers),
                    "lead_owner_rep_id": ctx.lead["owner_rep_id"]},
        )


def _conclude_lead_intake(ctx: RunContext) -> Outcome:
    notify = ctx.results["notify"].output
    quote = ctx.results["quote"].output
    return Outcome(
        status="escalated" if notify["decision"] == "escalate" else "completed",
        customer_id=ctx.customer["id"] if ctx.customer else None,
        owner_rep_id=notify["rep_id"], quantity=quote["quantity"], quote=quote,
        reasons=tuple(notify["reasons"]),
    )


LEAD_INTAKE = Agent(
    "lead_intake", (Qualify(), PurchaseHistory(), Inventory(), Quote(), Notify()),
    _conclude_lead_intake,
)


class AgentRuntime:
    """Starts runs in the background, keeps their tasks, and records how each one ended."""

    def __init__(self, hub: StreamHub, scorer: Scorer | None = None) -> None:
        self.hub = hub
        self.db = hub.db
        self.scorer: Scorer = scorer or RuleScorer()
        self.agents: dict[str, Agent] = {LEAD_INTAKE.name: LEAD_INTAKE}
        self.configs: dict[str, LeadIntakeConfig] = {}
        self._config_updated: dict[str, str | None] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._live: dict[int, dict[str, Any]] = {}
        # Set when other processes serve the same database (runs stay in the process that
        # took the trigger; configuration changes are announced to the others).
        self.cluster: Cluster | None = None

    async def start(self) -> None:
        if self.cluster is not None:
            # Before loading: a change announced meanwhile is then read again, never lost.
            self.cluster.reloaders["agent"] = self.reload
        await self.reload("*")
        await self._fail_interrupted()

    async def reload(self, _key: str) -> None:
        """Read every agent's configuration from the database."""
        for name in self.agents:
            self.configs[name], self._config_updated[name] = LeadIntakeConfig(), None
        for row in await self.db.fetch_all("SELECT agent, config, updated_at FROM agent_config"):
            if row["agent"] in self.agents:
                saved = _dec.decode(row["config"])
                saved["escalate_tiers"] = tuple(saved.get("escalate_tiers", ()))
                known = {k: v for k, v in saved.items() if k in LeadIntakeConfig.__slots__}
                self.configs[row["agent"]] = replace(LeadIntakeConfig(), **known)
                self._config_updated[row["agent"]] = row["updated_at"]

    async def _fail_interrupted(self) -> None:
        """Runs left running by a process that died end as failed, each with its message.

        With several processes, only runs begun before the service started are theirs to
        end, and each is ended once, by whichever process updates it first.
        """
        sql = ("SELECT id, lead_id, customer_id, owner_rep_id FROM agent_runs "
               "WHERE status = 'running'")
        params: tuple[str, ...] = ()
        if self.cluster is not None:
            sql += " AND started_at < ?"
            params = (self.cluster.config.epoch,)
        rows = await self.db.fetch_all(sql + " ORDER BY id", params)
        if not rows:
            return
        error = "interrupted: the service stopped before the run finished"
        async with self.hub.transaction() as tx:
            for row in rows:
                if not await tx.execute(
                    "UPDATE agent_runs SET status = 'failed', finished_at = ?, error = ? "
                    "WHERE id = ? AND status = 'running'",
                    (now_iso(), error, row["id"]),
                ):
                    continue
                publish(tx, "agent.failed", row["customer_id"], {
                    "run_id": str(row["id"]), "lead_id": row["lead_id"],
                    "customer_id": row["customer_id"], "owner_rep_id": row["owner_rep_id"],
                    "status": "failed", "quote_total": None, "duration_ms": None,
                    "error": error,
                })

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Let running runs finish; those still going after ``timeout`` end as failed."""
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def agent(self, name: str) -> Agent:
        agent = self.agents.get(name)
        if agent is None:
            raise StoreError(404, "not_found", f"agent {name!r} does not exist")
        return agent

    async def trigger(self, name: str, body: m.LeadIntakeRunCreate) -> dict[str, Any]:
        """Record a new run and start it; returns at once."""
        agent = self.agent(name)
        started = time.perf_counter()
        lead = await self.db.fetch_one("SELECT * FROM leads WHERE id = ?", (body.lead_id,))
        if lead is None:
            raise StoreError(
                422, "unknown_reference", f"lead_id {body.lead_id} does not exist in leads",
                "lead_id",
            )
        started_at = now_iso()
        async with self.db.transaction() as tx:
            run_id = int(await tx.fetch_val(
                "INSERT INTO agent_runs (agent, lead_id, customer_id, owner_rep_id, status, "
                "quantity, started_at, escalation_reasons, decision_log) "
                "VALUES (?, ?, ?, ?, 'running', ?, ?, '[]', '[]') RETURNING id",
                (name, lead["id"], lead["customer_id"], lead["owner_rep_id"], body.quantity,
                 started_at),
            ))
        ctx = RunContext(self.db, run_id, lead, body.quantity, self.configs[name], self.scorer)
        self._live[run_id] = {
            "run_id": str(run_id), "agent": name, "lead_id": lead["id"],
            "customer_id": lead["customer_id"], "owner_rep_id": lead["owner_rep_id"],
            "status": "running", "started_at": started_at, "finished_at": None,
            "duration_ms": None, "quantity": body.quantity, "escalation_reasons": [],
            "quote": None, "decision_log": [], "error": None,
        }
        task = asyncio.create_task(self._execute(agent, ctx, started), name=f"agent-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(run_id, None))
        return {"run_id": str(run_id), "status": "running"}

    async def _execute(self, agent: Agent, ctx: RunContext, started: float) -> None:
        entries: list[dict[str, Any]] = self._live[ctx.run_id]["decision_log"]
        try:
            try:
                outcome = await self._steps(agent, ctx, entries)
            except asyncio.CancelledError:
                await self._finish(ctx, Outcome("failed", error="cancelled: the service shut "
                                                "down before the run finished"),
                                   entries, started)
                raise
            except Exception as exc:
                log.exception("agent run %d failed", ctx.run_id)
                outcome = Outcome("failed", error=f"{type(exc).__name__}: {exc}")
            await self._finish(ctx, outcome, entries, started)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("agent run %d could not record its end", ctx.run_id)
        finally:
            self._live.pop(ctx.run_id, None)

    @staticmethod
    async def _steps(agent: Agent, ctx: RunContext, entries: list[dict[str, Any]]) -> Outcome:
        for step in agent.steps:
            t0 = time.perf_counter()
            try:
                result = await step.run(ctx)
            except Exception as exc:
                entries.append({
                    "step": step.name, "intent": step.intent, "inputs": {}, "output": {},
                    "confidence": 0.0, "rule": "the step raised an error",
                    "duration_ms": round((time.perf_counter() - t0) * 1000, 3),
                    "error": f"{type(exc).__name__}: {exc}",
                })
                raise
            ctx.results[step.name] = result
            entries.append({
                "step": step.name, "intent": step.intent, "inputs": result.inputs,
                "output": result.output, "confidence": result.confidence, "rule": result.rule,
                "duration_ms": round((time.perf_counter() - t0) * 1000, 3),
            })
        return agent.conclude(ctx)

    async def _finish(
        self, ctx: RunContext, outcome: Outcome, entries: list[dict[str, Any]], started: float
    ) -> None:
        duration = round((time.perf_counter() - started) * 1000, 3)
        lead = ctx.lead
        customer_id = _first(outcome.customer_id, lead["customer_id"])
        owner = _first(outcome.owner_rep_id, lead["owner_rep_id"])
        quantity = _first(outcome.quantity, ctx.quantity)
        payload: dict[str, Any] = {
            "run_id": str(ctx.run_id), "lead_id": ctx.lead["id"], "customer_id": customer_id,
            "owner_rep_id": owner, "status": outcome.status,
            "quote_total": outcome.quote["total"] if outcome.quote else None,
            "duration_ms": duration,
        }
        if outcome.status == "escalated":
            payload["reasons"] = list(outcome.reasons)
        if outcome.error is not None:
            payload["error"] = outcome.error
        async with self.hub.transaction() as tx:
            await tx.execute(
                "UPDATE agent_runs SET status = ?, finished_at = ?, duration_ms = ?, "
                "customer_id = ?, owner_rep_id = ?, quantity = ?, escalation_reasons = ?, "
                "quote = ?, decision_log = ?, error = ? WHERE id = ?",
                (outcome.status, now_iso(), duration, customer_id, owner, quantity,
                 _enc.encode(list(outcome.reasons)).decode(),
                 _enc.encode(outcome.quote).decode() if outcome.quote is not None else None,
                 _enc.encode(entries).decode(), outcome.error, ctx.run_id),
            )
            publish(tx, f"agent.{outcome.status}", customer_id, payload)

    async def get_run(self, run_id: str) -> dict[str, Any]:
        if not run_id.isdigit() or len(run_id) > 16:
            raise StoreError(404, "not_found", f"agent run {run_id!r} does not exist")
        live = self._live.get(int(run_id))
        if live is not None:
            return {**live, "decision_log": list(live["decision_log"])}
        row = await self.db.fetch_one("SELECT * FROM agent_runs WHERE id = ?", (int(run_id),))
        if row is None:
            raise StoreError(404, "not_found", f"agent run {run_id!r} does not exist")
        return _run_doc(row)

    async def queue(self, limit: int, after: int | None) -> Page:
        """Escalated runs, oldest first: the human queue."""
        rows = await self.db.fetch_all(
            "SELECT * FROM agent_runs WHERE status = 'escalated' AND id > ? ORDER BY id LIMIT ?",
            (after or 0, limit + 1),
        )
        items = [_run_doc(r) for r in rows[:limit]]
        return Page(items, int(rows[limit - 1]["id"]) if len(rows) > limit else None)

    def get_config(self, name: str) -> dict[str, Any]:
        self.agent(name)
        cfg = self.configs[name]
        return {"agent": name, "min_confidence": cfg.min_confidence,
                "max_quote": cfg.max_quote, "escalate_tiers": list(cfg.escalate_tiers),
                "scorer": self.scorer.name, "updated_at": self._config_updated[name]}

    async def put_config(self, name: str, body: m.AgentConfigUpdate) -> dict[str, Any]:
        """Change thresholds for runs started from now on; persisted."""
        self.agent(name)
        changes = m.changed_fields(body)
        if "escalate_tiers" in changes:
            wanted = set(changes["escalate_tiers"])
            changes["escalate_tiers"] = tuple(t for t in TIERS if t in wanted)
        cfg = replace(self.configs[name], **changes)
        updated = now_iso()
        doc = {"min_confidence": cfg.min_confidence, "max_quote": cfg.max_quote,
               "escalate_tiers": list(cfg.escalate_tiers)}
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO agent_config (agent, config, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (agent) DO UPDATE SET config = excluded.config, "
                "updated_at = excluded.updated_at",
                (name, _enc.encode(doc).decode(), updated),
            )
            token = await announce(self.cluster, tx, "agent", name)
        self.configs[name], self._config_updated[name] = cfg, updated
        await settle(self.cluster, token)
        return self.get_config(name)


class ProductIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A product of the catalogue the agent quotes from."""

    sku: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    category: Annotated[str, msgspec.Meta(max_length=100)] = "general"
    unit_price: Annotated[float, msgspec.Meta(ge=0, le=1e9)]


class StockIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    quantity: Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)]


class OrderLineIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    product_id: Annotated[int, msgspec.Meta(ge=1)]
    quantity: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    unit_price: Annotated[float, msgspec.Meta(ge=0, le=1e9)]


class OrderIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An order of a customer; its total is the sum of its lines."""

    customer_id: Annotated[int, msgspec.Meta(ge=1)]
    lines: Annotated[list[OrderLineIn], msgspec.Meta(min_length=1, max_length=100)]
    ordered_at: str | None = None
    status: str = "delivered"
    currency: str = "EUR"


async def create_product(db: Database, body: ProductIn) -> dict[str, Any]:
    """Add a product to the catalogue the quote step prices from."""
    async with db.transaction() as tx:
        pid = int(await tx.fetch_val(
            "INSERT INTO products (sku, name, category, unit_price) VALUES (?, ?, ?, ?) "
            "RETURNING id", (body.sku, body.name, body.category, body.unit_price),
        ))
    return {"id": pid, "sku": body.sku, "name": body.name, "category": body.category,
            "unit_price": body.unit_price}


async def set_stock(db: Database, product_id: int, region_id: int, body: StockIn) -> dict[str, Any]:
    """Set the stock of a product in a region, as the inventory step reads it."""
    async with db.transaction() as tx:
        for table, key in (("products", product_id), ("regions", region_id)):
            if await tx.fetch_val(f"SELECT id FROM {table} WHERE id = ?", (key,)) is None:
                raise StoreError(404, "not_found", f"{table[:-1]} {key} does not exist")
        await tx.execute(
            "INSERT INTO inventory (product_id, region_id, quantity) VALUES (?, ?, ?) "
            "ON CONFLICT (product_id, region_id) DO UPDATE SET quantity = excluded.quantity",
            (product_id, region_id, body.quantity),
        )
    return {"product_id": product_id, "region_id": region_id, "quantity": body.quantity}


async def create_order(db: Database, body: OrderIn) -> dict[str, Any]:
    """Record an order with its lines, as the purchase-history step reads it."""
    lines = [{"line_no": i + 1, "product_id": ln.product_id, "quantity": ln.quantity,
              "unit_price": ln.unit_price, "amount": round(ln.unit_price * ln.quantity, 2)}
             for i, ln in enumerate(body.lines)]
    total = round(sum(float(ln["amount"]) for ln in lines), 2)
    ordered_at = body.ordered_at or now_iso()
    async with db.transaction() as tx:
        if await tx.fetch_val("SELECT id FROM customers WHERE id = ?", (body.customer_id,)) is None:
            raise StoreError(422, "unknown_reference",
                             f"customer_id {body.customer_id} does not exist in customers",
                             "customer_id")
        for i, wanted in enumerate(body.lines):
            if await tx.fetch_val("SELECT id FROM products WHERE id = ?",
                                  (wanted.product_id,)) is None:
                raise StoreError(422, "unknown_reference", f"product_id {wanted.product_id} "
                                 "does not exist in products", f"lines[{i}].product_id")
        oid = int(await tx.fetch_val(
            "INSERT INTO orders (customer_id, ordered_at, status, currency, total_amount) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id",
            (body.customer_id, ordered_at, body.status, body.currency, total),
        ))
        for ln in lines:
            await tx.execute(
                "INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price, "
                "amount) VALUES (?, ?, ?, ?, ?, ?)",
                (oid, ln["line_no"], ln["product_id"], ln["quantity"], ln["unit_price"],
                 ln["amount"]),
            )
    return {"id": oid, "customer_id": body.customer_id, "ordered_at": ordered_at,
            "status": body.status, "currency": body.currency, "total_amount": total,
            "lines": lines}


def _first(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def _json_field(raw: Any) -> Any:
    return _dec.decode(raw) if isinstance(raw, str | bytes) else raw


def _run_doc(row: Row) -> dict[str, Any]:
    return {
        "run_id": str(row["id"]), "agent": row["agent"], "lead_id": row["lead_id"],
        "customer_id": row["customer_id"], "owner_rep_id": row["owner_rep_id"],
        "status": row["status"], "started_at": row["started_at"],
        "finished_at": row["finished_at"], "duration_ms": row["duration_ms"],
        "quantity": row["quantity"],
        "escalation_reasons": _json_field(row["escalation_reasons"]),
        "quote": _json_field(row["quote"]) if row["quote"] is not None else None,
        "decision_log": _json_field(row["decision_log"]), "error": row["error"],
    }


__all__ = [
    "LEAD_INTAKE",
    "Agent",
    "AgentRuntime",
    "LeadIntakeConfig",
    "OrderIn",
    "Outcome",
    "ProductIn",
    "RuleScorer",
    "RunContext",
    "Score",
    "Scorer",
    "Step",
    "StepResult",
    "StockIn",
    "create_order",
    "create_product",
    "load_scorer",
    "set_stock",
]
