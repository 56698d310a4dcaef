"""Targets that lie to the customer-data sovereignty probes, each in one way."""

from __future__ import annotations

import hashlib
from typing import IO, Any

from bench.adapters.base import Key, Status
from tests.bench.liars_realtime import Liar


class MasksNothing(Liar):
    """Restricted identities read with the adapter's own, unmasked one."""

    def read_as(self, identity: str | None, view: str, customer_id: Key, **kw: Any
                ) -> tuple[Status, Any]:
        return self.honest.read_as(None, view, customer_id, **kw)


class WrongHash(Liar):
    """The bundle's manifest claims the hash of other bytes."""

    def export_customer(self, customer_id: Key, out: IO[bytes],
                        identity: str | None = None) -> Status:
        import io

        buf = io.BytesIO()
        status = self.honest.export_customer(customer_id, buf, identity)
        raw = buf.getvalue()
        claimed = hashlib.sha256(raw).hexdigest().encode()
        head, _, sha = raw.rpartition(b'"sha256":"')
        out.write(head + b'"sha256":"' + claimed + sha[64:])
        return status


class KeepsAfterErase(Liar):
    """Answers the erasure, erases nothing: the record stays readable."""

    def erase_customer(self, customer_id: Key) -> tuple[Status, dict[str, Any] | None]:
        return Status.ok, {"customer_id": customer_id, "erased": True}


class IgnoresConsent(Liar):
    """Acknowledges a withdrawal and changes nothing."""

    def customer_consent(self, customer_id: Key, changes: dict[str, Any] | None = None
                         ) -> tuple[Status, dict[str, Any] | None]:
        status, now = self.honest.customer_consent(customer_id)
        if changes is not None and now is not None:
            now = {**now, **{k: v for k, v in changes.items() if k.startswith("consent")}}
        return status, now


class BrokenAudit(Liar):
    """Keeps an audit whose chain does not verify."""

    def audit_verify(self, identity: str | None = None) -> tuple[Status, dict[str, Any] | None]:
        status, found = self.honest.audit_verify(identity)
        return status, {**(found or {}), "ok": False, "problem": "entry 3 was changed"}
