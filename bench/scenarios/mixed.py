"""The mixed read/write CRM workload: which operation comes next, with which arguments.

Keys follow a Zipf law over the target's records (YCSB's default exponent 0.99); ranks
are shuffled onto ids so that the hot customers are spread over the id range.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.adapters.base import ActivityInput, Adapter, Keyspace, LeadInput, SearchQuery, Status
from reference_impl.schema import TIERS

_STAGES = ("qualification", "proposal", "negotiation", "closed_won", "closed_lost")

_TAGS = ("high-value", "newsletter", "churn-risk", "key-account", "price-sensitive")
_ACTIVITY_TYPES = ("call", "email", "meeting", "note", "visit")
_LETTERS = "ABCDEFGHIJKLMNOPRSTW"
_VOWELS = "aeiou"
_SOURCES = ("web", "referral", "trade_show", "cold_call", "partner")


class KeyChooser:
    """Draws ids from 1..n, Zipf-distributed (or uniform), in pre-sampled batches."""

    def __init__(
        self, n: int, seed: int, distribution: str = "zipfian", exponent: float = 0.99,
        batch: int = 65_536,
    ) -> None:
        self.n = max(int(n), 1)
        self._rng = np.random.default_rng(seed)
        self._batch = batch
        self._cdf: np.ndarray[Any, np.dtype[np.float64]] | None = None
        if distribution == "zipfian":
            weights = 1.0 / np.power(np.arange(1, self.n + 1, dtype=np.float64), exponent)
            self._cdf = np.cumsum(weights) / weights.sum()
        self._ids = self._rng.permutation(self.n) + 1
        self._pool: list[int] = []

    def _refill(self) -> None:
        if self._cdf is None:
            ranks = self._rng.integers(0, self.n, self._batch)
        else:
            ranks = np.searchsorted(self._cdf, self._rng.random(self._batch), side="right")
            ranks = np.minimum(ranks, self.n - 1)
        self._pool = self._ids[ranks].tolist()

    def __call__(self) -> int:
        if not self._pool:
            self._refill()
        return self._pool.pop()


Call = tuple[str, Callable[..., Status], tuple[Any, ...]]


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
    ) -> None:
        self.adapter = adapter
        self.keyspace = keyspace
        self._rng = random.Random(seed)
        self._ops = list(mix)
        self._weights = [mix[o] for o in self._ops]
        self._customer = KeyChooser(keyspace.customers, seed + 1, distribution, exponent)
        self._opportunity = KeyChooser(keyspace.opportunities, seed + 2, distribution, exponent)
        self._serial = 0
        self._builders: dict[str, Callable[[], Call]] = {
            "customer_360": lambda: ("customer_360", adapter.customer_360, (self._customer(),)),
            "get_customer": lambda: ("get_customer", adapter.get_customer, (self._customer(),)),
            "search_customers": self._search,
            "list_leads": lambda: (
                "list_leads", adapter.list_leads, (self._pick(keyspace.reps), 20)
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

    def _pick(self, n: int) -> int:
        return self._rng.randint(1, max(n, 1))

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
                region_id=self._pick(self.keyspace.regions),
                tier=self._rng.choice(TIERS), limit=20,
            )
        else:
            query = SearchQuery(tag=self._rng.choice(_TAGS), limit=20)
        return "search_customers", self.adapter.search_customers, (query,)

    def _lead(self) -> Call:
        self._serial += 1
        n = self._serial
        lead = LeadInput(
            company_name=f"Bench Prospect {n}",
            contact_name=f"Contact {n}",
            region_id=self._pick(self.keyspace.regions),
            email=f"lead{n}@bench.example",
            source=self._rng.choice(_SOURCES),
            customer_id=self._customer() if self._rng.random() < 0.4 else None,
            product_interest=[self._pick(self.keyspace.products)
                              for _ in range(self._rng.randint(1, 3))],
        )
        return "create_lead", self.adapter.create_lead, (lead,)

    def _activity(self) -> Call:
        activity = ActivityInput(
            customer_id=self._customer(),
            type=self._rng.choice(_ACTIVITY_TYPES),
            subject="Follow-up on quote",
            rep_id=self._pick(self.keyspace.reps),
        )
        return "log_activity", self.adapter.log_activity, (activity,)

    def _update_customer(self) -> Call:
        changes: dict[str, Any] = {"employees": self._rng.randint(1, 50_000)}
        if self._rng.random() < 0.5:
            changes["consent_marketing"] = self._rng.random() < 0.8
        return "update_customer", self.adapter.update_customer, (self._customer(), changes)
