"""Optional adapter verbs for customer-data sovereignty: roles, consent, export, erase, audit.

A platform that implements :class:`Sovereignty` can be probed for ``cdp.permissions``,
``cdp.consent``, ``cdp.export``, ``cdp.erase`` and ``cdp.audit``. Restricted identities are
asked of the platform at run time (:meth:`Sovereignty.issue_identity`, with the adapter's
own administrative credentials) and revoked afterwards, so a run needs no extra secrets.

An export is written in crmbench's bundle format, NDJSON: a header line, one
``{"section", "record"}`` line per record, and last ``{"manifest": {"sha256", ...}}`` whose
SHA-256 covers every byte before that line. Reads return JSON as the platform sent it.
"""

from __future__ import annotations

from typing import IO, Any, Literal, Protocol, runtime_checkable

from bench.adapters.base import Key, Status

# The reads a restricted identity is walked through; an adapter answers unsupported for a
# view its platform lacks. ``search_masked`` filters on a field the identity may not see.
View = Literal["record", "list", "search", "search_masked", "customer_360", "profile",
               "contacts", "consent", "export"]
VIEWS: tuple[View, ...] = ("record", "list", "search", "search_masked", "customer_360",
                           "profile", "contacts", "consent", "export")


@runtime_checkable
class Sovereignty(Protocol):
    """Identities with roles, reads as one of them, consent, export, erase and the audit."""

    def issue_identity(
        self, role: str, name: str, *, rep_id: int | None = None, regions: tuple[int, ...] = ()
    ) -> tuple[Status, dict[str, Any] | None]:
        """A new identity of ``role``: ``{"identity": <opaque handle>, "masked_classes": [..]}``.

        ``masked_classes`` name the field classes hidden from it (``contact``,
        ``preferences``); Status.unsupported when the platform cannot issue one."""

    def revoke_identity(self, identity: str) -> Status: ...

    def read_as(
        self, identity: str | None, view: View, customer_id: Key, *, name: str = "",
        tag: str = "",
    ) -> tuple[Status, Any]:
        """One read of ``view`` about a customer as ``identity`` (None: the adapter's own).

        ``name`` is the customer's name (search), ``tag`` one of its tags (search_masked);
        ``export`` answers the bundle's bytes."""

    def export_customer(
        self, customer_id: Key, out: IO[bytes], identity: str | None = None
    ) -> Status:
        """Stream the customer's bundle into ``out`` chunk by chunk."""

    def erase_customer(self, customer_id: Key) -> tuple[Status, dict[str, Any] | None]: ...

    def customer_consent(
        self, customer_id: Key, changes: dict[str, Any] | None = None
    ) -> tuple[Status, dict[str, Any] | None]:
        """Read consent, or change it (``{"consent_profiling": false, "reason": ...}``)."""

    def create_contact_record(self, fields: dict[str, Any]) -> tuple[Status, int | None]: ...

    def audit_entries(
        self, customer_id: Key | None = None, action: str | None = None,
        identity: str | None = None,
    ) -> tuple[Status, list[dict[str, Any]] | None]:
        """Audit entries (``action``, ``customer_id``, ``outcome``...), oldest first."""

    def audit_verify(self, identity: str | None = None) -> tuple[Status, dict[str, Any] | None]:
        """The platform's verdict on its audit chain: ``{"ok": bool, "entries": int, ...}``."""
