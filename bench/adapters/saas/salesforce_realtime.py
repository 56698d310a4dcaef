"""The Salesforce adapter's ``Realtime`` verbs: Change Data Capture events and Agent API runs.

Event delay (``cdp.event_delay``): each event of the in-run probe is written to the run's
Account it names, as a ``Description`` that carries the event's key (one request; several
events in one request through sObject Collections). The harness's own Pub/Sub API
subscription to ``/data/AccountChangeEvent`` receives the change events; each key found in
a change event's ``Description`` is one ``profile.updated`` message, stamped when its
FetchResponse arrived, so the write and its event are timed on the harness's clock. Change
Data Capture must have Account selected (Setup > Change Data Capture); the first
subscription of a process selects it through the Tooling API when it is not.

Agent latency (``agent.latency``): a lead-intake run is one conversation with the org's
Agentforce agent through the Agent API (``SALESFORCE_AGENT_ID``): a session is started and
one message about the lead is sent; the agent's answer arriving is the run's outcome
(``agent.escalated`` when the agent hands over to a human, ``agent.completed`` otherwise),
stamped on the harness's clock when the answer arrives. The session is then ended.

The other ``Realtime`` verbs (profiles, agent thresholds, products, stock, orders, the human
queue) have no counterpart in the Salesforce APIs this adapter drives: they answer
``unsupported``.
"""

from __future__ import annotations

import itertools
import logging
import queue
import re
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from typing import Any

from bench.adapters.base import Capability, EventInput, Key, LeadInput, Status, StreamMessage
from bench.adapters.saas.common import json_or_empty
from bench.adapters.saas.http import redact
from bench.adapters.saas.salesforce_core import SalesforceCore
from bench.adapters.saas.salesforce_pubsub import (
    DEFAULT_ENDPOINT,
    PubSubAuth,
    PubSubClient,
    PubSubError,
)
from bench.errors import UserError

log = logging.getLogger("crmbench.vendor.salesforce")

CHANGE_CHANNEL = "/data/AccountChangeEvent"
CHANGE_ENTITY = "AccountChangeEvent"
# The standard channel's member for Account (Tooling API, PlatformEventChannelMember).
CHANNEL_MEMBER = {"FullName": "ChangeEvents_AccountChangeEvent",
                  "Metadata": {"eventChannel": "ChangeEvents", "selectedEntity": CHANGE_ENTITY}}
# What starts an Account Description written for the events probe; the keys follow.
EVENT_MARKER = "crmbench events:"
COLLECTION = 200
AGENT_API = "https://api.salesforce.com/einstein/ai-agent/v1"
AGENT_ENV = "SALESFORCE_AGENT_ID"
AGENT_TYPES = ("agent.completed", "agent.escalated", "agent.failed")
_AGENT_ID = re.compile(r"0Xx[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?")
# Messages of the stream kept for subscribers that resume with ``after``.
KEEP = 10_000
NO_AGENT = (f"no Agentforce agent to run: {AGENT_ENV} is not set (the agent's id, Agent API "
            "'Get the Agent ID'); agents need an Agentforce licence")


def event_marker(keys: Sequence[str]) -> str:
    """The Description that carries these event keys."""
    return f"{EVENT_MARKER} {' '.join(keys)}"


def marker_keys(description: object) -> list[str]:
    """The event keys a Description carries (none unless it is an event marker)."""
    if not isinstance(description, str) or not description.startswith(EVENT_MARKER):
        return []
    return description[len(EVENT_MARKER):].split()


class _Broadcast:
    """Stream messages produced in this process, for every subscriber, with a short history."""

    def __init__(self) -> None:
        self._rt_lock = threading.Lock()
        self._queues: list[queue.Queue[StreamMessage]] = []
        self._history: deque[StreamMessage] = deque(maxlen=KEEP)

    def publish(self, msg: StreamMessage) -> None:
        with self._rt_lock:
            self._history.append(msg)
            for q in self._queues:
                q.put(msg)

    def listen(self, types: set[str], after: int | None) -> Iterator[StreamMessage]:
        q: queue.Queue[StreamMessage] = queue.Queue()
        with self._rt_lock:
            backlog = [m for m in self._history if after is not None and m.seq > after]
            self._queues.append(q)
        try:
            for msg in backlog:
                if msg.type in types:
                    yield msg
            while True:
                msg = q.get()
                if msg.type in types:
                    yield msg
        finally:
            with self._rt_lock:
                self._queues.remove(q)


class SalesforceRealtime(SalesforceCore):
    """``Realtime`` verbs of the Salesforce adapter (see the module)."""

    def __init__(self, *args: Any, pubsub_endpoint: str = DEFAULT_ENDPOINT,
                 pubsub_secure: bool = True, agent_api: str = AGENT_API, **kw: Any) -> None:
        self.pubsub_endpoint = pubsub_endpoint
        self.pubsub_secure = pubsub_secure
        self.agent_api = agent_api.rstrip("/")
        self._pubsub: PubSubClient | None = None
        self._seq = itertools.count(1)
        self._replays: OrderedDict[int, bytes] = OrderedDict()
        self._agent_stream = _Broadcast()
        self._agent_runs: dict[str, dict[str, Any]] = {}
        self._capture_checked = False
        self._rt_lock = threading.Lock()
        super().__init__(*args, **kw)

    def _declare(self, table: dict[str, Capability]) -> None:
        super()._declare(table)
        agent = self._agent_id()
        if not agent:
            table["agent.latency"] = Capability("unsupported", NO_AGENT)
        elif not _AGENT_ID.fullmatch(agent):
            table["agent.latency"] = Capability("unsupported", (
                f"{AGENT_ENV} is not an agent id: expected 0Xx followed by 12 or 15 letters "
                "and digits (an Agentforce agent's BotDefinition id)"))

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None
        super().close()

    # ------------------------------------------------------------------ events

    def send_events(self, events: Sequence[EventInput]) -> Status:
        """Write each event's key into the Description of the run's Account it names."""
        by_account: dict[str, list[str]] = {}
        for event in events:
            rid = self._id("Account", event.customer_id)
            if rid is None:
                return Status.not_found
            by_account.setdefault(rid, []).append(event.idempotency_key)
        if not by_account:
            return Status.ok

        def call() -> Status:
            items = list(by_account.items())
            if len(items) == 1:
                rid, keys = items[0]
                return self._sf_status(self._api(
                    "PATCH", f"{self._data}/sobjects/Account/{rid}", setup=False,
                    json={"Description": event_marker(keys)}))
            worst = Status.ok
            for start in range(0, len(items), COLLECTION):
                status = self._update_collection(items[start:start + COLLECTION])
                worst = status if worst is Status.ok else worst
            return worst
        return self._verb(call)

    def _update_collection(self, items: list[tuple[str, list[str]]]) -> Status:
        resp = self._api("PATCH", f"{self._data}/composite/sobjects", setup=False, json={
            "allOrNone": True,
            "records": [{"attributes": {"type": "Account"}, "id": rid,
                         "Description": event_marker(keys)} for rid, keys in items]})
        status = self._sf_status(resp)
        results = json_or_empty(resp)
        if status is Status.ok and not (isinstance(results, list) and all(
                isinstance(r, dict) and r.get("success") for r in results)):
            return Status.rejected
        return status

    def _sf_status(self, resp: Any) -> Status:
        from bench.adapters.saas.salesforce import sf_status

        return sf_status(resp)

    def _remember(self, seq: int, replay_id: bytes) -> None:
        with self._rt_lock:
            self._replays[seq] = replay_id
            while len(self._replays) > KEEP:
                self._replays.popitem(last=False)

    def _client_pubsub(self) -> PubSubClient:
        if self._pubsub is None:
            self._pubsub = PubSubClient(self.pubsub_endpoint, self._pubsub_auth,
                                        secure=self.pubsub_secure)
        return self._pubsub

    def _pubsub_auth(self) -> PubSubAuth:
        if self._instance is None:
            raise RuntimeError(f"{type(self).__name__} used before open()")
        return PubSubAuth(self._bearer(timed=False), self._instance, self._org_id())

    def ensure_change_capture(self) -> bool:
        """Select Account for Change Data Capture unless it is; True when this call did."""
        members = self._tooling_query(
            "SELECT Id, DeveloperName, SelectedEntity FROM PlatformEventChannelMember")
        if any(m.get("SelectedEntity") == CHANGE_ENTITY for m in members):
            return False
        resp = self._api("POST", f"{self._tooling}/sobjects/PlatformEventChannelMember",
                         setup=True, json=CHANNEL_MEMBER)
        if resp.status_code >= 300 and "DUPLICATE" not in resp.text:
            self._expect(resp, "selecting Account for Change Data Capture")
        log.info("Salesforce: Account selected for Change Data Capture (standard channel)")
        return True

    def _change_events(self, after: int | None) -> Iterator[StreamMessage]:
        if not self._capture_checked:
            # Once per process: a subscriber that reconnects must not spend API calls on it.
            self._capture_checked = True
            try:
                self.ensure_change_capture()
            except UserError as exc:
                log.warning("Salesforce: Account's Change Data Capture selection could not "
                            "be checked or made (%s); subscribing anyway", exc)
        replay = self._replays.get(after) if after is not None else None
        harness_ids = {rid: n for n, rid in enumerate(self._account_ids(), 1)}
        try:
            for event in self._client_pubsub().subscribe(CHANGE_CHANNEL, replay):
                header = event.payload.get("ChangeEventHeader") or {}
                records = header.get("recordIds") or []
                for key in marker_keys(event.payload.get("Description")):
                    seq = next(self._seq)
                    self._remember(seq, event.replay_id)
                    yield StreamMessage(
                        seq=seq, type="profile.updated",
                        customer_id=harness_ids.get(records[0]) if records else None,
                        payload={"idempotency_key": key, "record_ids": list(records),
                                 "change_type": header.get("changeType"),
                                 "commit_timestamp": header.get("commitTimestamp"),
                                 "replay_id": event.replay_id.hex()},
                        received_ns=event.received_ns)
        except PubSubError as exc:
            if exc.code == "UNAUTHENTICATED" and self._token is not None:
                self._token.refresh(self._bearer(timed=False))
            raise

    def subscribe(self, types: Sequence[str], after: int | None = None
                  ) -> Iterator[StreamMessage]:
        """``profile.updated`` from Change Data Capture; agent outcomes of this process's runs.

        No other message type exists on this platform: those subscriptions end at once.
        """
        wanted = set(types)
        if wanted & set(AGENT_TYPES):
            yield from self._agent_stream.listen(wanted, after)
        elif "profile.updated" in wanted:
            yield from self._change_events(after)

    # ------------------------------------------------------------------ agent

    def _agent_id(self) -> str:
        return self._env().get(AGENT_ENV, "").strip()

    def start_agent_run(self, lead_id: Key, quantity: int | None = None
                        ) -> tuple[Status, str | None]:
        """Start one conversation about the lead in the background; its id at once."""
        agent = self._agent_id()
        if self.capabilities["agent.latency"].support == "unsupported":
            return Status.unsupported, None
        if self._instance is None:
            return Status.error, None
        run_id = f"sf-agent-{uuid.uuid4().hex}"
        with self._rt_lock:
            self._agent_runs[run_id] = {"run_id": run_id, "status": "running",
                                        "lead_id": lead_id, "decision_log": []}
        text = (f"New lead {lead_id} ({self.run_id or 'crmbench'}): qualify it"
                + (f" for a quote of {quantity} units" if quantity else "") + ".")
        threading.Thread(target=self._converse, args=(agent, run_id, text),
                         name=f"agent-{run_id[-6:]}", daemon=True).start()
        return Status.ok, run_id

    def _agent_call(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self._bearer(timed=True).reveal()}",
                   **kw.pop("headers", {})}
        return self._client().send(method, self.agent_api + path, headers=headers, **kw)

    def _converse(self, agent: str, run_id: str, text: str) -> None:
        """Start a session, send the message, publish the outcome when the answer arrives."""
        session: str | None = None
        outcome, detail, received = "agent.failed", "", 0
        answer: list[dict[str, Any]] = []
        try:
            resp = self._agent_call("POST", f"/agents/{agent}/sessions", json={
                "externalSessionKey": str(uuid.uuid4()),
                "instanceConfig": {"endpoint": self._instance},
                "streamingCapabilities": {"chunkTypes": ["Text"]}, "bypassUser": True})
            body = json_or_empty(resp)
            session = body.get("sessionId") if isinstance(body, dict) else None
            if resp.status_code >= 300 or not session:
                detail = f"starting a session answered HTTP {resp.status_code}"
            else:
                resp = self._agent_call("POST", f"/sessions/{session}/messages", json={
                    "message": {"sequenceId": 1, "type": "Text", "text": text}})
                received = time.perf_counter_ns()
                outcome, detail, answer = _outcome(resp)
        except Exception as exc:
            detail = redact(f"{type(exc).__name__}: {exc}")[:300]
        self._finish(run_id, outcome, detail, received or time.perf_counter_ns(), answer)
        if session:
            try:
                self._agent_call("DELETE", f"/sessions/{session}",
                                 headers={"x-session-end-reason": "UserRequest"})
            except Exception as exc:
                log.debug("ending agent session failed: %s", redact(str(exc)))

    def _finish(self, run_id: str, outcome: str, detail: str, received_ns: int,
                answer: list[dict[str, Any]]) -> None:
        status = outcome.removeprefix("agent.")
        with self._rt_lock:
            run = self._agent_runs.setdefault(run_id, {"run_id": run_id})
            run.update(status=status, messages=answer, detail=detail or None)
        self._agent_stream.publish(StreamMessage(
            seq=next(self._seq), type=outcome, customer_id=None,
            payload={"run_id": run_id, "status": status, "detail": detail or None},
            received_ns=received_ns))

    def agent_run(self, run_id: str) -> tuple[Status, dict[str, Any] | None]:
        with self._rt_lock:
            run = self._agent_runs.get(run_id)
            return (Status.ok, dict(run)) if run is not None else (Status.not_found, None)

    # ------------------------------------------------------------------ not on this platform

    def agent_config(self, changes: dict[str, Any] | None = None
                     ) -> tuple[Status, dict[str, Any] | None]:
        return Status.unsupported, None

    def customer_profile(self, customer_id: Key) -> tuple[Status, dict[str, Any] | None]:
        return Status.unsupported, None

    def create_lead_record(self, lead: LeadInput) -> tuple[Status, int | None]:
        return Status.unsupported, None

    def create_customer_record(self, fields: dict[str, Any]) -> tuple[Status, int | None]:
        return Status.unsupported, None

    def create_product_record(self, fields: dict[str, Any]) -> tuple[Status, int | None]:
        return Status.unsupported, None

    def set_stock(self, product_id: Key, region_id: Key, quantity: int) -> Status:
        return Status.unsupported

    def create_order_record(self, customer_id: Key, lines: Sequence[dict[str, Any]]
                            ) -> tuple[Status, int | None]:
        return Status.unsupported, None

    def human_queue(self, run_ids: Sequence[str]) -> tuple[Status, set[str] | None]:
        return Status.unsupported, None


def _outcome(resp: Any) -> tuple[str, str, list[dict[str, Any]]]:
    """The run's outcome from the Agent API's answer to the message (Agent API, Send
    Synchronous Messages: ``messages`` of types such as Inform and Escalate)."""
    body = json_or_empty(resp)
    messages = body.get("messages") if isinstance(body, dict) else None
    if resp.status_code >= 300 or not isinstance(messages, list):
        return "agent.failed", f"the message answered HTTP {resp.status_code}", []
    answer = [m for m in messages if isinstance(m, dict)]
    kinds = {str(m.get("type", "")) for m in answer}
    if "Escalate" in kinds:
        return "agent.escalated", "", answer
    if any(str(m.get("message") or "").strip() for m in answer):
        return "agent.completed", "", answer
    return "agent.failed", f"no answer in the agent's messages (types {sorted(kinds)})", answer
