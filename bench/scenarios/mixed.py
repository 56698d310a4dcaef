"""The mixed read/write CRM workload: which operation comes next, with which arguments.

Keys come from the adapter's keyspace (any type); draws are positions in it. Customer and
opportunity positions follow a Zipf law (YCSB's default exponent 0.99), shuffled so that
the hot records are spread over the keyspace; reps, regions and products are uniform.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench.adapters.base import (
    ActivityInput,
    Adapter,
    BaseAdapter,
    CustomerChanges,
    Key,
    Keyspace,
    LeadInput,
    Readback,
    SearchQuery,
    Stage,
    Status,
)
from reference_impl.schema import TIERS

# The stage changes drawn ("open" is a stage a new opportunity starts in, never a move).
_STAGES: tuple[Stage, ...] = ("qualified", "proposal", "negotiation", "won", "lost")
_TAGS = ("high-value", "newsletter", "churn-risk", "key-account", "price-sensitive")
_ACTIVITY_TYPES = ("call", "email", "meeting", "note", "visit")
_LETTERS = "ABCDEFGHIJKLMNOPRSTW"
_VOWELS = "aeiou"
_SOURCES = ("web", "referral", "trade_show", "cold_call", "partner")
# Operations of the mix and the keyspace kind each cannot do without.
_NEEDS = {
    "customer_360": "customers", "get_customer": "customers", "log_activity": "customers",
    "update_customer": "customers", "update_opportunity_stage": "opportunities",
    "list_leads": "reps",
}


class KeyChooser:
    """Draws keys by position, Zipf-distributed (or uniform), in pre-sampled batches.

    ``keys`` is the keyspace of one kind, or a count ``n`` for the keys 1..n.
    """

    def __init__(
        self, keys: Sequence[Key] | int, seed: int, distribution: str = "zipfian",
        exponent: float = 0.99, batch: int = 65_536,
    ) -> None:
        self._keys: Sequence[Key] = (
            range(1, max(int(keys), 1) + 1) if isinstance(keys, int) else keys
        )
        self.n = len(self._keys)
        self._rng = np.random.default_rng(seed)
        self._batch = batch
        self._cdf: np.ndarray[Any, np.dtype[np.float64]] | None = None
        if distribution == "zipfian" and self.n:
            weights = 1.0 / np.power(np.arange(1, self.n + 1, dtype=np.float64), exponent)
            self._cdf = np.cumsum(weights) / weights.sum()
        # Rank r is drawn, position _positions[r] is used: hot ranks land anywhere.
        self._positions = self._rng.permutation(self.n)
        self._array: np.ndarray[Any, np.dtype[Any]] | None = None
        if not isinstance(self._keys, range):
            self._array = np.array(list(self._keys), dtype=object)
        self._pool: list[Key] = []

    def _refill(self) -> None:
        if self.n == 0:
            raise ValueError("the keyspace of this kind is empty: no key to draw")
        if self._cdf is None:
            ranks = self._rng.integers(0, self.n, self._batch)
        else:
            ranks = np.searchsorted(self._cdf, self._rng.random(self._batch), side="right")
            ranks = np.minimum(ranks, self.n - 1)
        positions = self._positions[ranks]
        if self._array is not None:
            self._pool = self._array[positions].tolist()
        else:
            keys = self._keys
            assert isinstance(keys, range)
            self._pool = (positions * keys.step + keys.start).tolist()

    def __call__(self) -> Key:
        if not self._pool:
            self._refill()
        return self._pool.pop()


Call = tuple[str, Callable[..., Status], tuple[Any, ...]]


def unimplemented(adapter: object, op: str) -> bool:
    """Whether ``adapter`` leaves verb ``op`` to BaseAdapter, which answers unsupported."""
    verb = getattr(type(adapter), op, None)
    return isinstance(adapter, BaseAdapter) and verb is getattr(BaseAdapter, op, None)


def _unsupported_call(op: str) -> Callable[[], Call]:
    def unsupported() -> Status:
        return Status.unsupported

    return lambda: (op, unsupported, ())
# One call in this many of the checked operations has its answer read back and compared.
CHECK_EVERY = 100
_CHECKED = frozenset({"get_customer", "customer_360", "update_customer"})


class AnswerCheck:
    """Reads back a sample of answered calls: the record asked for, and what was written.

    Concurrent users write the same hot customers, so a written record is checked for the
    workload's own consistency (its website names its employee count), not for one value.
    """

    def __init__(self, adapter: Any, every: int = CHECK_EVERY) -> None:
        self.reader = adapter if isinstance(adapter, Readback) else None
        self.every = max(every, 1)
        self._seen = 0

    def due(self, op: str, status: Status) -> bool:
        """Whether this answered call is one of the sample (cheap: a count and a modulo)."""
        if self.reader is None or status is not Status.ok or op not in _CHECKED:
            return False
        self._seen += 1
        return self._seen % self.every == 0

    def verify(self, op: str, args: tuple[Any, ...]) -> bool:
        """Whether the platform's stored record matches the call (False: a wrong answer)."""
        assert self.reader is not None
        status, record = self.reader.read_customer(args[0])
        if status is not Status.ok or not isinstance(record, dict):
            return False
        if str(record.get("id")) != str(args[0]):
            return False
        if op != "update_customer":
            return True
        employees = record.get("employees")
        return (isinstance(employees, int) and 1 <= employees <= 50_000
                and record.get("website") == f"https://www.c{employees}.example")


class MixedWorkload:
    """Picks the next operation by weight and builds its arguments."""

    def __init__(
        self,
        adapter: Adapter,
        keyspace: Keyspace,
        mix: dict[str, float],
        *,
        seed: int,
        distribution: str = "zipfian",
        exponent: float = 0.99,
        namespace: str = "",
    ) -> None:
        self.adapter = adapter
        # Names the leads of one run and one generator process apart from every other's:
        # platforms with duplicate rules (Salesforce's standard lead rule matches name and
        # email) would refuse a second process's "lead 1".
        self._namespace = f"{namespace}-" if namespace else ""
        self.keyspace = keyspace
        self._rng = random.Random(seed)
        self._ops = list(mix)
        self._weights = [mix[o] for o in self._ops]
        empty = sorted({f"{op} needs {kind}" for op, kind in _NEEDS.items()
                        if op in mix and mix[op] > 0 and not getattr(keyspace, kind)
                        and not unimplemented(adapter, op)})
        if empty:
            raise ValueError(f"the target's keyspace is empty where the mix draws: "
                             f"{'; '.join(empty)} (load the fixtures: crmbench load)")
        self._customer = KeyChooser(keyspace.ids("customers"), seed + 1, distribution, exponent)
        self._opportunity = KeyChooser(
            keyspace.ids("opportunities"), seed + 2, distribution, exponent)
        self._reps = keyspace.ids("reps")
        self._regions = keyspace.ids("regions")
        self._products = keyspace.ids("products")
        self._serial = 0
        self._builders: dict[str, Callable[[], Call]] = {
            "customer_360": lambda: ("customer_360", adapter.customer_360, (self._customer(),)),
            "get_customer": lambda: ("get_customer", adapter.get_customer, (self._customer(),)),
            "search_customers": self._search,
            "list_leads": lambda: (
                "list_leads", adapter.list_leads, (self._pick(self._reps), 20)
            ),
            "create_lead": self._lead,
            "update_opportunity_stage": lambda: (
                "update_opportunity_stage", adapter.update_opportunity_stage,
                (self._opportunity(), self._rng.choice(_STAGES)),
            ),
            "log_activity": self._activity,
            "update_customer": self._update_customer,
        }
        unknown = set(self._ops) - set(self._builders)
        if unknown:
            raise ValueError(f"unknown operations in mix: {sorted(unknown)}")
        for op in self._ops:
            if unimplemented(adapter, op):
                # Answered "unsupported" by the adapter's base whatever the key: no key is
                # drawn, so a platform without opportunities can still run the mix.
                self._builders[op] = _unsupported_call(op)

    def _pick(self, keys: Sequence[Key]) -> Key | None:
        """A uniform draw (the same random stream as drawing 1..n); None from no keys."""
        if not keys:
            return None
        return keys[self._rng.randint(1, len(keys)) - 1]

    def next(self) -> Call:
        op = self._rng.choices(self._ops, self._weights)[0]
        return self._builders[op]()

    def _search(self) -> Call:
        r = self._rng.random()
        if r < 0.5:
            prefix = self._rng.choice(_LETTERS) + self._rng.choice(_VOWELS)
            query = SearchQuery(name_prefix=prefix, limit=20)
        elif r < 0.8:
            query = SearchQuery(
                region_id=self._pick(self._regions), tier=self._rng.choice(TIERS), limit=20,
            )
        else:
            query = SearchQuery(tag=self._rng.choice(_TAGS), limit=20)
        return "search_customers", self.adapter.search_customers, (query,)

    def _lead(self) -> Call:
        self._serial += 1
        n = f"{self._namespace}{self._serial}"
        # Drawn in the order of earlier versions, so a seed gives the same requests.
        region = self._pick(self._regions)
        source = self._rng.choice(_SOURCES)
        customer = self._customer() if self._rng.random() < 0.4 and self._customer.n else None
        count = self._rng.randint(1, 3)
        products = [p for _ in range(count) if (p := self._pick(self._products)) is not None]
        lead = LeadInput(
            company_name=f"Bench Prospect {n}", contact_name=f"Contact {n}", region_id=region,
            email=f"lead-{n}@bench.example", source=source, customer_id=customer,
            product_interest=products,
        )
        return "create_lead", self.adapter.create_lead, (lead,)

    def _activity(self) -> Call:
        activity = ActivityInput(
            customer_id=self._customer(),
            type=self._rng.choice(_ACTIVITY_TYPES),
            subject="Follow-up on quote",
            rep_id=self._pick(self._reps),
        )
        return "log_activity", self.adapter.log_activity, (activity,)

    def _update_customer(self) -> Call:
        employees = self._rng.randint(1, 50_000)
        consent = self._rng.random() < 0.8 if self._rng.random() < 0.5 else None
        changes = CustomerChanges(website=f"https://www.c{employees}.example",
                                  employees=employees, consent_marketing=consent)
        return "update_customer", self.adapter.update_customer, (self._customer(), changes)
