"""No-code workflows: DAG documents validated on deploy, versioned, run in topological order.

A document is ``{"name", "nodes": [{"id", "type", ...}], "edges": [[from, to(, "true"|"false")]],
"timeout_s"}``. Validation and execution are linear in nodes + edges (Kahn's algorithm over
adjacency lists); a run touches the database once at its end. Nodes not reached (the other
branch of a condition) are skipped; a join runs once when any incoming branch reached it.
Three failed or timed-out runs in a row pause a workflow (``workflow.paused``).

A schedule trigger runs every ``seconds`` (counted from the previous run) or on a 5-field
``cron`` expression in a ``timezone`` (IANA name, default UTC), both on the service clock, so
the test clock drives them. After a cron run the next due time is the first fire time
strictly after the one that fired, so runs keep to the expression's boundaries; if that time
has passed too (the service was behind by more than one period, e.g. the test clock jumped a
week), the missed fire times are not caught up: the workflow runs once and resumes at the
first fire time after now.

Compiled versions are kept in a least-recently-used cache bounded by their total node count;
a version pushed out is compiled again from ``workflow_versions`` when it is next needed.

Served by several processes, a deploy or status change is announced to the others, which
reload the workflow before the changing request returns; the breaker counts failures in the
database row, and only the process owning the timers fires schedules (the others keep the
due times in step, so a takeover neither repeats nor skips more than the fire in progress).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import json
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from cronsim import CronSim, CronSimError
from msgspec import Meta, Struct

from reference_impl.calendars import zone
from reference_impl.clock import Clock
from reference_impl.cluster import announce, settle
from reference_impl.db import IntegrityViolation, Row
from reference_impl.schema import OPPORTUNITY_STAGES, TABLES_BY_NAME
from reference_impl.store import ENTITIES, StoreError, now_iso
from reference_impl.stream import StreamHub, publish

if TYPE_CHECKING:
    from reference_impl.cluster import Cluster

NODE_TYPES = frozenset({"trigger", "condition", "action", "parallel", "join", "wait"})
TRIGGERS = frozenset({
    "manual", "record.created", "record.updated", "stage.changed", "event", "schedule",
})
ACTIONS = frozenset({"set", "set_field", "create_activity", "notify", "noop"})
OPS = frozenset({"==", "!=", ">", ">=", "<", "<=", "in"})
OBJECTS = {"customer": "customers", "lead": "leads", "opportunity": "opportunities"}
MAX_NODES = 200_000
MAX_WRITES = 1_000
BREAKER_THRESHOLD = 3
CACHE_NODES = 500_000
_NUMERIC = ("int", "float", "id")
_enc = msgspec.json.Encoder()


class Node(Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True, gc=False):
    """One node; only the parameters of its type are set.

    Untracked by the cyclic GC (a node holds only strings, numbers and JSON values, never
    itself): cached 100,000-node documents would otherwise lengthen every full collection.
    """

    id: Annotated[str, Meta(min_length=1, max_length=64)]
    type: str
    on: str | None = None
    object: str | None = None
    stage: str | None = None
    event_type: str | None = None
    field: str | None = None
    op: str | None = None
    value: Any = None
    action: str | None = None
    subject: str | None = None
    channel: str | None = None
    seconds: Annotated[float, Meta(ge=0, le=86_400)] | None = None
    cron: str | None = None
    timezone: str | None = None


class WorkflowDeploy(Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]
    nodes: Annotated[list[Node], Meta(min_length=1, max_length=MAX_NODES)]
    # Tuples of strings drop out of the GC's tracking; lists would stay in it.
    edges: Annotated[list[tuple[str, ...]], Meta(max_length=4 * MAX_NODES)] = []
    timeout_s: Annotated[float, Meta(gt=0, le=3_600)] = 30.0


class RunCreate(Struct, forbid_unknown_fields=True, kw_only=True):
    input: dict[str, Any] = {}
    wait: bool = True
    version: Annotated[int, Meta(ge=1)] | None = None


def _invalid(message: str, where: str) -> StoreError:
    return StoreError(422, "invalid_workflow", message, where)


@dataclass(slots=True)
class Compiled:
    """A validated document with its graph in compressed rows, ready to run many times.

    The successors of node i are ``targets[offsets[i]:offsets[i + 1]]`` with the edge labels
    at the same positions in ``labels`` (0 none, 1 true, 2 false). Flat lists of
    small integers instead of a list per node: a cached graph adds a handful of objects for
    the garbage collector to track, not one per node and edge.
    """

    doc: WorkflowDeploy
    offsets: list[int]
    targets: list[int]
    labels: bytes
    indeg: list[int]
    roots: list[int]
    trigger: Node | None


def _check_value(node: Node, where: str, kind: str | None) -> None:
    values = node.value if node.op == "in" else [node.value]
    if node.op == "in" and not isinstance(node.value, list):
        raise _invalid(f"node {node.id!r}: `in` needs a list value", where)
    for v in values:
        is_num = isinstance(v, int | float) and not isinstance(v, bool)
        if node.op in (">", ">=", "<", "<=") and not (is_num or isinstance(v, str)):
            raise _invalid(f"node {node.id!r}: cannot order by {v!r}", where)
        if kind in _NUMERIC and not is_num:
            raise _invalid(
                f"type error in node {node.id!r}: {node.field} is a number, {v!r} is not", where
            )
        if kind in ("text", "ts") and v is not None and not isinstance(v, str):
            raise _invalid(
                f"type error in node {node.id!r}: {node.field} is text, {v!r} is not", where
            )


def cron_next(expr: str, timezone: str | None, after: float) -> float | None:
    """The first fire time of ``expr`` in ``timezone`` strictly after ``after`` (epoch s)."""
    start = dt.datetime.fromtimestamp(after, zone(timezone))
    try:
        return next(CronSim(expr, start)).timestamp()
    except StopIteration:
        return None


def _next_due(trig: dict[str, Any], fired: float, now: float) -> float | None:
    """When a schedule that was due at ``fired`` is next due, the clock reading ``now``."""
    cron = trig.get("cron")
    if cron is None:
        return now + float(trig.get("seconds") or 60)
    nxt = cron_next(cron, trig.get("timezone"), fired)
    if nxt is not None and nxt <= now:
        return cron_next(cron, trig.get("timezone"), now)
    return nxt


def _check_schedule(node: Node, where: str) -> None:
    if node.on != "schedule":
        raise _invalid(f"trigger {node.id!r}: cron and timezone belong to schedule triggers",
                       where)
    if (node.seconds is None) == (node.cron is None):
        raise _invalid(f"trigger {node.id!r}: a schedule needs exactly one of seconds "
                       "(>= 1 between runs) or cron", where)
    if node.seconds is not None:
        if node.seconds < 1:
            raise _invalid(f"trigger {node.id!r}: a schedule needs seconds >= 1 between runs",
                           where)
        if node.timezone is not None:
            raise _invalid(f"trigger {node.id!r}: timezone applies to cron schedules only",
                           where)
        return
    assert node.cron is not None
    try:
        zone(node.timezone)
    except (KeyError, ValueError, OSError):
        raise _invalid(f"trigger {node.id!r}: unknown timezone {node.timezone!r} "
                       "(an IANA name such as Europe/Paris)", where) from None
    try:
        fires = cron_next(node.cron, node.timezone, time.time())
    except CronSimError as exc:
        raise _invalid(f"trigger {node.id!r}: bad cron expression {node.cron!r}: {exc}",
                       where) from None
    if len(node.cron.split()) != 5:
        raise _invalid(f"trigger {node.id!r}: bad cron expression {node.cron!r}: five fields "
                       "(minute hour day month weekday) expected; seconds are not supported",
                       where)
    if fires is None:
        raise _invalid(f"trigger {node.id!r}: cron expression {node.cron!r} never fires", where)


def compile_doc(doc: WorkflowDeploy) -> Compiled:
    """Validate the DAG (ids, types, parameters, edges, cycles) in O(nodes + edges)."""
    nodes = doc.nodes
    index, trigger = _index_nodes(nodes)
    table: str | None = None
    if trigger is not None:
        table = "opportunities" if trigger.on == "stage.changed" else OBJECTS.get(
            trigger.object or "")
    _check_steps(nodes, table)
    offsets, targets, labels, indeg = _adjacency(nodes, doc.edges, index)
    if trigger is not None and indeg[index[trigger.id]]:
        raise _invalid(f"trigger {trigger.id!r} cannot have incoming edges",
                       f"nodes[{index[trigger.id]}]")
    roots = [i for i in range(len(nodes)) if indeg[i] == 0]
    _check_acyclic(nodes, offsets, targets, indeg, roots)
    return Compiled(doc, offsets, targets, bytes(labels), indeg, roots, trigger)


def _index_nodes(nodes: list[Node]) -> tuple[dict[str, int], Node | None]:
    """Position of each node id, and the trigger; refuses duplicates and unknown types."""
    index: dict[str, int] = {}
    trigger: Node | None = None
    for i, node in enumerate(nodes):
        if node.id in index:
            raise _invalid(f"duplicate node id {node.id!r}", f"nodes[{i}]")
        index[node.id] = i
        if node.type not in NODE_TYPES:
            raise _invalid(
                f"node {node.id!r} has unknown type {node.type!r}; "
                f"known: {', '.join(sorted(NODE_TYPES))}", f"nodes[{i}]",
            )
        if node.type == "trigger":
            if trigger is not None:
                raise _invalid(f"node {node.id!r}: only one trigger per workflow", f"nodes[{i}]")
            trigger = node
            _check_trigger(node, f"nodes[{i}]")
    return index, trigger


def _check_trigger(node: Node, where: str) -> None:
    if node.on not in TRIGGERS:
        raise _invalid(f"trigger {node.id!r}: on must be one of "
                       f"{', '.join(sorted(TRIGGERS))}", where)
    if node.object is not None and node.object not in OBJECTS:
        raise _invalid(f"trigger {node.id!r}: unknown object {node.object!r}", where)
    if node.on in ("record.created", "record.updated") and node.object is None:
        raise _invalid(f"trigger {node.id!r}: record triggers need an object", where)
    if node.on == "schedule" or node.cron is not None or node.timezone is not None:
        _check_schedule(node, where)
    if node.stage is not None and node.stage not in OPPORTUNITY_STAGES:
        raise _invalid(f"trigger {node.id!r}: unknown stage {node.stage!r}", where)


def _check_steps(nodes: list[Node], table: str | None) -> None:
    """Parameters of conditions, actions and waits, against the trigger's record table."""
    kinds: dict[str, str] = {}
    if table is not None:
        kinds = {c.name: c.kind for c in TABLES_BY_NAME[table].columns}
    for i, node in enumerate(nodes):
        where = f"nodes[{i}]"
        if node.type == "condition":
            if not node.field or node.op not in OPS:
                raise _invalid(f"condition {node.id!r} needs a field and an op among "
                               f"{' '.join(sorted(OPS))}", where)
            if table is not None and node.field not in kinds:
                raise _invalid(f"condition {node.id!r}: {table} have no field {node.field!r}",
                               where)
            _check_value(node, where, kinds.get(node.field))
        elif node.type == "action":
            _check_action(node, where, table)
        elif node.type == "wait" and node.seconds is None:
            raise _invalid(f"wait {node.id!r} needs seconds", where)


def _check_action(node: Node, where: str, table: str | None) -> None:
    if node.action not in ACTIONS:
        raise _invalid(f"action {node.id!r}: action must be one of "
                       f"{', '.join(sorted(ACTIONS))}", where)
    if node.action in ("set", "set_field") and not node.field:
        raise _invalid(f"action {node.id!r} needs a field", where)
    if node.action in ("set_field", "create_activity"):
        if table is None:
            raise _invalid(f"action {node.id!r} needs a record trigger", where)
        if node.action == "set_field":
            try:
                msgspec.convert({node.field: node.value}, ENTITIES[table].update)
            except msgspec.ValidationError as exc:
                raise _invalid(f"action {node.id!r}: {exc}", where) from None


def _adjacency(
    nodes: list[Node], edges: list[tuple[str, ...]], index: dict[str, int]
) -> tuple[list[int], list[int], bytearray, list[int]]:
    """Offsets, targets and labels of the compressed rows, and the in-degree of each node."""
    n, m = len(nodes), len(edges)
    srcs, dsts, labs = [0] * m, [0] * m, bytearray(m)
    offsets, indeg = [0] * (n + 1), [0] * n
    for k, edge in enumerate(edges):
        where = f"edges[{k}]"
        if len(edge) not in (2, 3):
            raise _invalid("an edge is [from, to] or [from, to, \"true\"|\"false\"]", where)
        src, dst = index.get(edge[0]), index.get(edge[1])
        if src is None or dst is None:
            missing = edge[0] if src is None else edge[1]
            raise _invalid(f"edge {k} is dangling: no node {missing!r}", where)
        if len(edge) == 3:
            if nodes[src].type != "condition" or edge[2] not in ("true", "false"):
                raise _invalid(f"edge {k}: only condition nodes have true/false edges", where)
            labs[k] = 1 if edge[2] == "true" else 2
        srcs[k], dsts[k] = src, dst
        offsets[src + 1] += 1
        indeg[dst] += 1
    for i in range(n):
        offsets[i + 1] += offsets[i]
    targets, labels, fill = [0] * m, bytearray(m), offsets[:-1]
    for k in range(m):
        src = srcs[k]
        at = fill[src]
        targets[at], labels[at] = dsts[k], labs[k]
        fill[src] = at + 1
    return offsets, targets, labels, indeg


def _check_acyclic(
    nodes: list[Node], offsets: list[int], targets: list[int], indeg: list[int],
    roots: list[int],
) -> None:
    """Kahn's algorithm: every node is reached once its predecessors are."""
    left = indeg.copy()
    queue = deque(roots)
    seen = 0
    while queue:
        i = queue.popleft()
        seen += 1
        for at in range(offsets[i], offsets[i + 1]):
            j = targets[at]
            left[j] -= 1
            if left[j] == 0:
                queue.append(j)
    if seen < len(nodes):
        i = _on_cycle(offsets, targets, left)
        raise _invalid(f"cycle through node {nodes[i].id!r}", f"nodes[{i}]")


def prepare(body: bytes, decode: Callable[[bytes], WorkflowDeploy]) -> Compiled:
    """Decode and validate a document with the cyclic GC paused.

    Both allocate objects per node and edge; with the collector running, its repeated
    passes over the young generations make 100,000-node documents cost superlinear time.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return compile_doc(decode(body))
    finally:
        if paused:
            gc.enable()


def _on_cycle(offsets: list[int], targets: list[int], left: list[int]) -> int:
    """A node on a cycle: walk back along unprocessed predecessors until one repeats."""
    pred: dict[int, int] = {}
    for i in range(len(left)):
        if left[i]:
            for at in range(offsets[i], offsets[i + 1]):
                j = targets[at]
                if left[j]:
                    pred[j] = i
    start = next(iter(pred))
    seen: set[int] = set()
    while start not in seen:
        seen.add(start)
        start = pred[start]
    return start


class _RunFailed(Exception):
    pass


def _compare(node: Node, ctx: dict[str, Any]) -> bool:
    left, op, right = ctx.get(node.field or ""), node.op, node.value
    try:
        if op == "==":
            return bool(left == right)
        if op == "!=":
            return bool(left != right)
        if op == "in":
            return left in right
        if left is None:
            return False
        if op == ">":
            return bool(left > right)
        if op == ">=":
            return bool(left >= right)
        if op == "<":
            return bool(left < right)
        return bool(left <= right)
    except TypeError:
        raise _RunFailed(
            f"type error in node {node.id!r}: {node.field}={left!r} {op} {right!r}"
        ) from None


@dataclass(slots=True)
class RunResult:
    status: str
    executed: int
    error: str | None
    writes: list[Node] = field(default_factory=list)


async def execute(c: Compiled, data: dict[str, Any], clock: Clock) -> RunResult:
    """Run the DAG: synchronous nodes inline, ready wait nodes side by side."""
    nodes, offsets, targets, labels = c.doc.nodes, c.offsets, c.targets, c.labels
    indeg = c.indeg.copy()
    active = bytearray(len(nodes))
    for i in c.roots:
        active[i] = 1
    ctx = dict(data)
    ready = deque(c.roots)
    waits: list[int] = []
    writes: list[Node] = []
    executed = 0
    started = clock.now()

    def release(i: int, result: bool | None) -> None:
        on = active[i]
        for at in range(offsets[i], offsets[i + 1]):
            j, label = targets[at], labels[at]
            if on and (label == 0 or (label == 1) == result):
                active[j] = 1
            indeg[j] -= 1
            if indeg[j] == 0:
                ready.append(j)

    try:
        async with asyncio.timeout(c.doc.timeout_s):
            while ready or waits:
                while ready:
                    i = ready.popleft()
                    node = nodes[i]
                    result: bool | None = None
                    if active[i]:
                        kind = node.type
                        if kind == "wait":
                            waits.append(i)
                            continue
                        if kind == "condition":
                            result = _compare(node, ctx)
                        elif kind == "action":
                            if node.action == "set":
                                ctx[node.field or ""] = node.value
                            elif node.action != "noop":
                                writes.append(node)
                                if len(writes) > MAX_WRITES:
                                    raise _RunFailed(f"more than {MAX_WRITES} CRM writes")
                        executed += 1
                        if executed % 8192 == 0:
                            # Big runs let other requests in now and then.
                            await asyncio.sleep(0)
                    release(i, result)
                if waits:
                    await asyncio.gather(*(clock.sleep(nodes[i].seconds or 0.0) for i in waits))
                    if clock.now() - started > c.doc.timeout_s:
                        return RunResult("timed_out", executed, "run exceeded timeout_s")
                    executed += len(waits)
                    for i in waits:
                        release(i, None)
                    waits = []
    except TimeoutError:
        return RunResult("timed_out", executed, f"run exceeded {c.doc.timeout_s:g} s")
    except _RunFailed as exc:
        return RunResult("failed", executed, str(exc))
    return RunResult("completed", executed, None, writes)


@dataclass(slots=True)
class Meta_:
    id: int
    name: str
    latest: int
    status: str
    failures: int
    trigger: dict[str, Any] | None


class CompiledCache:
    """Compiled versions by (workflow id, version), least recently used out first, holding
    at most ``budget`` nodes in total; a version larger than the budget is not kept."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.nodes = 0
        self._entries: OrderedDict[tuple[int, int], Compiled] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: tuple[int, int]) -> Compiled | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: tuple[int, int], compiled: Compiled) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.nodes -= len(old.doc.nodes)
        size = len(compiled.doc.nodes)
        if size > self.budget:
            return
        self._entries[key] = compiled
        self.nodes += size
        while self.nodes > self.budget:
            _key, out = self._entries.popitem(last=False)
            self.nodes -= len(out.doc.nodes)


def _decode_doc(raw: bytes) -> WorkflowDeploy:
    return msgspec.json.decode(raw, type=WorkflowDeploy)


class WorkflowEngine:
    """Deployed workflows, their runs, triggers and breaker."""

    def __init__(self, hub: StreamHub, clock: Clock, cache_nodes: int = CACHE_NODES) -> None:
        self.hub = hub
        self.db = hub.db
        self.clock = clock
        self.meta: dict[int, Meta_] = {}
        self.compiled = CompiledCache(cache_nodes)
        self.runs: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._locks: dict[int, asyncio.Lock] = {}
        # Workflows with an automatic trigger: record hooks look only at these.
        self.automatic: set[int] = set()
        # Scheduled workflows and when each is next due, on the service clock.
        self.scheduled: dict[int, float] = {}
        # Set when other processes serve the same database (see the module docstring).
        self.cluster: Cluster | None = None

    async def start(self) -> None:
        if self.cluster is not None:
            # Before loading: a change announced meanwhile is then read again, never lost.
            self.cluster.reloaders["workflow"] = self.reload
        await self.reload("*")
        task = asyncio.create_task(self._schedule_loop())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self, key: str) -> None:
        """Read one workflow's state (or every one's, ``"*"``) from the database."""
        rows = await self.db.fetch_all(
            "SELECT * FROM workflows" + ("" if key == "*" else " WHERE id = ?"),
            () if key == "*" else (int(key),))
        for r in rows:
            wid = int(r["id"])
            trig = json.loads(r["trigger"]) if r["trigger"] else None
            meta = self.meta.get(wid)
            if meta is None:
                self.meta[wid] = Meta_(wid, r["name"], int(r["latest_version"]), r["status"],
                                       int(r["failures"]), trig)
            else:
                # Updated in place: runs in progress hold this object.
                meta.latest, meta.status, meta.failures = (
                    int(r["latest_version"]), r["status"], int(r["failures"]))
                if meta.trigger == trig:
                    continue
                meta.trigger = trig
            self._index(wid)

    def _index(self, wid: int) -> None:
        trig = self.meta[wid].trigger
        on = trig.get("on") if trig is not None else None
        if on == "schedule":
            assert trig is not None
            self.automatic.discard(wid)
            now = self.clock.now()
            first = _next_due(trig, now, now)
            if first is None:
                self.scheduled.pop(wid, None)
            else:
                self.scheduled[wid] = first
        elif on is not None and on != "manual":
            self.automatic.add(wid)
            self.scheduled.pop(wid, None)
        else:
            self.automatic.discard(wid)
            self.scheduled.pop(wid, None)

    async def _schedule_loop(self) -> None:
        """Start scheduled runs when due; the test clock's advances wake it at once."""
        while True:
            now = self.clock.now()
            for wid, due in list(self.scheduled.items()):
                meta = self.meta.get(wid)
                if meta is None or meta.trigger is None or due > now:
                    continue
                nxt = _next_due(meta.trigger, due, now)
                if nxt is None:
                    del self.scheduled[wid]
                else:
                    self.scheduled[wid] = nxt
                owner = self.cluster is None or self.cluster.owner
                if meta.status == "active" and owner:
                    task = asyncio.create_task(self._triggered(
                        wid, {"scheduled_at": self.clock.iso(due)}, ("schedule", {})))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            nearest = min(self.scheduled.values(), default=now + 1.0) - now
            await self.clock.sleep(min(max(nearest, 0.05), 1.0))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    @property
    def listening(self) -> bool:
        return bool(self.automatic)

    async def deploy(self, compiled: Compiled, received: float,
                     text: str | None = None) -> dict[str, Any]:
        """Store the next version: ``text``, the JSON ``compiled`` was decoded from, or else
        the document encoded again."""
        doc = compiled.doc
        trig = msgspec.to_builtins(compiled.trigger) if compiled.trigger is not None else None
        ts = now_iso()
        body = text if text is not None else _enc.encode(doc).decode()
        try:
            async with self.hub.transaction() as tx:
                row = await tx.fetch_one(
                    "SELECT id, latest_version FROM workflows WHERE name = ?", (doc.name,)
                )
                if row is None:
                    wid = int(await tx.fetch_val(
                        "INSERT INTO workflows (name, latest_version, status, failures, trigger, "
                        "created_at, updated_at) VALUES (?, 1, 'active', 0, ?, ?, ?) RETURNING id",
                        (doc.name, json.dumps(trig) if trig else None, ts, ts),
                    ))
                    version = 1
                else:
                    wid, version = int(row["id"]), int(row["latest_version"]) + 1
                    await tx.execute(
                        "UPDATE workflows SET latest_version = ?, trigger = ?, updated_at = ? "
                        "WHERE id = ?", (version, json.dumps(trig) if trig else None, ts, wid),
                    )
                await tx.execute(
                    "INSERT INTO workflow_versions (workflow_id, version, doc, deployed_at) "
                    "VALUES (?, ?, ?, ?)", (wid, version, body, ts),
                )
                publish(tx, "workflow.deployed", None,
                        {"workflow_id": wid, "name": doc.name, "version": version})
                token = await announce(self.cluster, tx, "workflow", wid)
        except IntegrityViolation as exc:
            raise StoreError(409, "conflict", f"concurrent deploy of {doc.name!r}") from exc
        old = self.meta.get(wid)
        self.meta[wid] = Meta_(wid, doc.name, version, old.status if old else "active",
                               old.failures if old else 0, trig)
        self.compiled.put((wid, version), compiled)
        self._index(wid)
        await settle(self.cluster, token)
        return {"id": wid, "name": doc.name, "version": version, "nodes": len(doc.nodes),
                "edges": len(doc.edges),
                "deploy_ms": round((time.perf_counter() - received) * 1000, 3)}

    def _meta(self, wid: int) -> Meta_:
        meta = self.meta.get(wid)
        if meta is None:
            raise StoreError(404, "not_found", f"workflow {wid} does not exist")
        return meta

    async def _compiled(self, wid: int, version: int) -> Compiled:
        found = self.compiled.get((wid, version))
        if found is not None:
            return found
        raw = await self.db.fetch_val(
            "SELECT doc FROM workflow_versions WHERE workflow_id = ? AND version = ?",
            (wid, version),
        )
        if raw is None:
            raise StoreError(404, "not_found", f"workflow {wid} has no version {version}",
                             "version")
        compiled = prepare(raw.encode() if isinstance(raw, str) else raw, _decode_doc)
        self.compiled.put((wid, version), compiled)
        return compiled

    async def get(self, wid: int, version: int | None) -> dict[str, Any]:
        meta = self._meta(wid)
        c = await self._compiled(wid, version or meta.latest)
        return {"id": wid, "name": meta.name, "version": version or meta.latest,
                "latest_version": meta.latest, "status": meta.status,
                "timeout_s": c.doc.timeout_s, "nodes": msgspec.to_builtins(c.doc.nodes),
                "edges": c.doc.edges}

    async def lineage(self, wid: int) -> dict[str, Any]:
        meta = self._meta(wid)
        c = await self._compiled(wid, meta.latest)
        obj = c.trigger.object if c.trigger is not None else None
        if c.trigger is not None and c.trigger.on == "stage.changed":
            obj = "opportunity"
        reads: dict[tuple[str, str], list[str]] = {}
        writes: dict[tuple[str, str], list[str]] = {}
        integrations: dict[str, list[str]] = {}
        for node in c.doc.nodes:
            if node.type == "condition":
                reads.setdefault((obj or "input", node.field or ""), []).append(node.id)
            elif node.type == "action" and node.action == "set_field":
                writes.setdefault((obj or "input", node.field or ""), []).append(node.id)
            elif node.type == "action" and node.action == "create_activity":
                writes.setdefault(("activity", "*"), []).append(node.id)
            elif node.type == "action" and node.action == "set":
                writes.setdefault(("context", node.field or ""), []).append(node.id)
            elif node.type == "action" and node.action == "notify":
                integrations.setdefault(node.channel or "stream", []).append(node.id)
        if c.trigger is not None and c.trigger.on == "event":
            reads.setdefault(("event", c.trigger.event_type or "*"), []).append(c.trigger.id)

        def listing(found: dict[tuple[str, str], list[str]]) -> list[dict[str, Any]]:
            return [{"object": o, "field": f, "nodes": ids[:100], "count": len(ids)}
                    for (o, f), ids in sorted(found.items())]

        return {
            "workflow_id": wid, "version": meta.latest, "reads": listing(reads),
            "writes": listing(writes),
            "integrations": [{"channel": ch, "message": "workflow.notification",
                              "nodes": ids[:100], "count": len(ids)}
                             for ch, ids in sorted(integrations.items())],
        }

    def status(self, wid: int) -> str:
        return self._meta(wid).status

    async def latest_differs(self, wid: int, doc: WorkflowDeploy) -> bool:
        """Whether ``doc`` differs from the workflow's latest deployed version."""
        meta = self.meta.get(wid)
        if meta is None:
            return True
        current = await self._compiled(wid, meta.latest)
        return bool(_enc.encode(current.doc) != _enc.encode(doc))

    async def set_enabled(self, wid: int, on: bool) -> None:
        """A pack switches its workflows: a disabled one refuses runs and ignores triggers."""
        meta = self._meta(wid)
        if on == (meta.status != "disabled"):
            return
        meta.status, meta.failures = ("active" if on else "disabled"), 0
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE workflows SET status = ?, failures = 0, updated_at = ? WHERE id = ?",
                (meta.status, now_iso(), wid),
            )
            token = await announce(self.cluster, tx, "workflow", wid)
        await settle(self.cluster, token)

    def _refuse_disabled(self, meta: Meta_) -> None:
        if meta.status == "disabled":
            raise StoreError(409, "workflow_disabled",
                             f"workflow {meta.id} belongs to a disabled pack; enable the pack")

    async def resume(self, wid: int) -> dict[str, Any]:
        meta = self._meta(wid)
        self._refuse_disabled(meta)
        meta.status, meta.failures = "active", 0
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE workflows SET status = 'active', failures = 0, updated_at = ? "
                "WHERE id = ?", (now_iso(), wid),
            )
            token = await announce(self.cluster, tx, "workflow", wid)
        await settle(self.cluster, token)
        return {"id": wid, "name": meta.name, "status": meta.status}

    async def run(self, wid: int, body: RunCreate, record: tuple[str, Row] | None = None
                  ) -> dict[str, Any]:
        meta = self._meta(wid)
        self._refuse_disabled(meta)
        if meta.status == "paused":
            raise StoreError(409, "workflow_paused",
                             f"workflow {wid} is paused after {BREAKER_THRESHOLD} failed runs; "
                             f"POST /workflows/{wid}/resume")
        version = body.version or meta.latest
        c = await self._compiled(wid, version)
        run_id = uuid.uuid4().hex
        state: dict[str, Any] = {
            "run_id": run_id, "workflow_id": wid, "version": version, "status": "running",
            "executed_nodes": 0, "duration_ms": None, "error": None, "started_at": now_iso(),
        }
        self.runs[run_id] = state
        coro = self._run(meta, c, state, body.input, record)
        if body.wait:
            await coro
            return state
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return dict(state)

    async def _run(self, meta: Meta_, c: Compiled, state: dict[str, Any],
                   data: dict[str, Any], record: tuple[str, Row] | None) -> None:
        t0 = time.perf_counter()
        result = await execute(c, data, self.clock)
        lock = self._locks.setdefault(meta.id, asyncio.Lock())
        async with lock:
            try:
                await self._finish(meta, state, result, record, t0)
            except StoreError as exc:
                result = RunResult("failed", result.executed, exc.message)
                await self._finish(meta, state, result, None, t0)
            finally:
                self.runs.pop(state["run_id"], None)

    async def _finish(self, meta: Meta_, state: dict[str, Any], result: RunResult,
                      record: tuple[str, Row] | None, t0: float) -> None:
        ok = result.status == "completed"
        ts = now_iso()
        state.update(status=result.status, executed_nodes=result.executed, error=result.error,
                     duration_ms=round((time.perf_counter() - t0) * 1000, 3), finished_at=ts)
        wid = meta.id
        async with self.hub.transaction() as tx:
            if self.cluster is not None:
                # Runs of this workflow in other processes count towards the same breaker.
                row = await tx.fetch_one(
                    "SELECT failures, status FROM workflows WHERE id = ? FOR UPDATE", (wid,))
                if row is not None:
                    meta.failures, meta.status = int(row["failures"]), row["status"]
            failures = 0 if ok else meta.failures + 1
            paused = failures >= BREAKER_THRESHOLD and meta.status != "paused"
            customer_id = None
            if ok and result.writes:
                customer_id = await self._apply(tx, result.writes, record, wid)
            await tx.execute(
                "INSERT INTO workflow_runs (run_id, workflow_id, version, status, "
                "executed_nodes, duration_ms, error, started_at, finished_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (state["run_id"], wid, state["version"], state["status"],
                 state["executed_nodes"], state["duration_ms"], state["error"],
                 state["started_at"], ts),
            )
            await tx.execute(
                "UPDATE workflows SET failures = ?, status = ?, updated_at = ? WHERE id = ?",
                (failures, "paused" if paused else meta.status, ts, wid),
            )
            publish(tx, "workflow.completed" if ok else "workflow.failed", customer_id,
                    {k: state[k] for k in ("run_id", "workflow_id", "version", "status",
                                           "executed_nodes", "duration_ms", "error")})
            if paused:
                publish(tx, "workflow.paused", None, {
                    "workflow_id": wid, "name": meta.name, "failures": failures,
                    "notify": "administrators", "last_error": result.error})
                await announce(self.cluster, tx, "workflow", wid, wait=False)
        meta.failures = failures
        if paused:
            meta.status = "paused"

    async def _apply(self, tx: Any, writes: list[Node], record: tuple[str, Row] | None,
                     wid: int) -> int | None:
        table, row = record if record is not None else ("", {})
        customer_id = row.get("id") if table == "customers" else row.get("customer_id")
        ts = now_iso()
        for node in writes:
            if node.action == "set_field":
                if record is None:
                    raise StoreError(422, "no_record", f"node {node.id!r} needs a record")
                kind = ENTITIES[table].kinds.get(node.field or "")
                value = json.dumps(node.value) if kind == "json" else node.value
                await tx.execute(
                    f"UPDATE {table} SET {node.field} = ?, updated_at = ? WHERE id = ?",
                    (value, ts, row["id"]),
                )
            elif node.action == "create_activity":
                if customer_id is None:
                    raise StoreError(422, "no_customer", f"node {node.id!r}: no customer")
                await tx.execute(
                    "INSERT INTO activities (customer_id, type, subject, occurred_at, "
                    "created_at) VALUES (?, 'note', ?, ?, ?)",
                    (customer_id, node.subject or f"workflow {wid}", ts, ts),
                )
            elif node.action == "notify":
                publish(tx, "workflow.notification", customer_id, {
                    "workflow_id": wid, "node": node.id, "channel": node.channel or "stream",
                    "subject": node.subject, "record_id": row.get("id")})
        return int(customer_id) if customer_id is not None else None

    async def get_run(self, run_id: str) -> dict[str, Any]:
        live = self.runs.get(run_id)
        if live is not None:
            return dict(live)
        row = await self.db.fetch_one("SELECT * FROM workflow_runs WHERE run_id = ?", (run_id,))
        if row is None:
            raise StoreError(404, "not_found", f"workflow run {run_id} does not exist")
        return row

    def on_record(self, table: str, created: bool, row: Row,
                  stage: tuple[str | None, str] | None, event_type: str | None = None) -> None:
        """Start the runs this change triggers, in the background."""
        for wid in list(self.automatic):
            meta = self.meta[wid]
            trig = meta.trigger
            if trig is None or meta.status != "active":
                continue
            on = trig.get("on")
            if on == "event":
                hit = event_type is not None and trig.get("event_type") in (None, event_type)
            elif on == "stage.changed":
                hit = stage is not None and trig.get("stage") in (None, stage[1])
            elif on in ("record.created", "record.updated"):
                hit = (event_type is None and OBJECTS.get(trig.get("object") or "") == table
                       and created == (on == "record.created"))
            else:
                hit = False
            if hit:
                data = dict(row)
                if stage is not None:
                    data.update(from_stage=stage[0], to_stage=stage[1])
                task = asyncio.create_task(self._triggered(meta.id, data, (table, row)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _triggered(self, wid: int, data: dict[str, Any], record: tuple[str, Row]) -> None:
        with contextlib.suppress(StoreError):
            await self.run(wid, RunCreate(input=data, wait=True),
                           record if record[0] in OBJECTS.values() else None)
