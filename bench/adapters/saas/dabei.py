"""Adapter of Dabeicloud CRM (``dabei://``): nothing can be measured.

Dabeicloud publishes no API documentation: searches of public documentation, web pages,
public code and this workplace's package lists turned up no endpoint, SDK or
authentication scheme. Every capability is declared not-measurable and every verb is
unsupported (the base class's default); ``open()`` raises TargetUnreachable, so a run
ends with exit code 4 and this reason in its result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from bench.adapters.base import BaseAdapter, Capability, Keyspace
from bench.adapters.saas.common import capability_table, parse_target
from bench.errors import TargetUnreachable

REASON = (
    "not measurable: Dabeicloud publishes no API (no public API documentation, SDK or "
    "authentication scheme was found), so the claimed figures cannot be checked"
)


class DabeiAdapter(BaseAdapter):
    """Adapter of ``dabei://``: declares everything not-measurable and never connects."""

    name: ClassVar[str] = "dabei"
    platform: ClassVar[str] = "dabei"
    capabilities: ClassVar[dict[str, Capability]] = capability_table(
        {}, rest=("not-measurable", "no public API is documented")
    )

    def __init__(self, host: str = "") -> None:
        self.host = host

    @classmethod
    def from_url(
        cls, url: str, *, env: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> DabeiAdapter:
        host, _ = parse_target(url, "dabei", (), host_required=False)
        return cls(host)

    def __repr__(self) -> str:
        return f"DabeiAdapter(url='dabei://{self.host}')"

    def open(self) -> None:
        raise TargetUnreachable(REASON)

    def keyspace(self) -> Keyspace:
        raise TargetUnreachable(REASON)
