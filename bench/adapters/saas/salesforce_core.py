"""What the Salesforce probe mixins share: the adapter's REST plumbing they call, and the
declarations that depend on the org rather than on the platform.

The Salesforce adapter (``bench.adapters.saas.salesforce``) implements the methods declared
here; the mixins (``salesforce_realtime``, ``salesforce_engines``) only call them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.adapters.base import Capability
from bench.adapters.saas.http import Secret
from bench.adapters.saas.salesforce_client import SalesforceClient
from bench.errors import UserError


class SalesforceCore(SalesforceClient):
    """The adapter's REST plumbing as the probe mixins see it (implemented by the adapter)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        table = dict(type(self).capabilities)
        self._declare(table)
        # Declarations that depend on this org's configuration shadow the class table.
        vars(self)["capabilities"] = table

    def _declare(self, table: dict[str, Capability]) -> None:
        """Adjust the capability table for this org (each mixin adds its own)."""

    def _account_ids(self) -> list[str]:
        """The run's Accounts, harness id n at position n - 1."""
        maps = getattr(self, "_maps", {})
        found = maps.get("Account") if isinstance(maps, Mapping) else None
        return found.ids() if found is not None else []

    # ------------------------------------------------------------------ shared helpers

    @property
    def _tooling(self) -> str:
        return f"{self._data}/tooling"

    def _bearer(self, *, timed: bool) -> Secret:
        """The access token: a timed call only peeks (never fetches on its own path)."""
        if self._token is None:
            raise RuntimeError(f"{type(self).__name__} used before open()")
        return self._token.peek() if timed else self._token.get()

    def _tooling_query(self, soql: str) -> list[dict[str, Any]]:
        resp = self._api("GET", f"{self._tooling}/query", setup=True, params={"q": soql})
        body = self._expect(resp, "Tooling API query")
        return list((body or {}).get("records") or [])

    def _org_id(self) -> str:
        org_id = (self._org or {}).get("Id")
        if not org_id:
            raise UserError("Salesforce returned no organization id; open() must run first")
        return str(org_id)
