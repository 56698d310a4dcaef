"""Customer-data sovereignty probes: masking by role, consent, export, erasure and the audit.

One probe decides the five ids in order on one customer the harness writes (contacts, an
order, events): restricted identities walk every read of it, consent is withdrawn and
restored around event batches, the export is checked against the harness's own hash and
records, the customer is erased and looked for everywhere, and the audit must hold the
export and the erasure and verify. Identities it asks the platform for are revoked after.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gevent
import msgspec

from bench.adapters.base import EventInput, Realtime, Status
from bench.adapters.sovereignty import VIEWS, Sovereignty
from bench.probes.capability import CDP_KINDS, ProbeError, _customer, _price_sensitivity
from bench.probes.registry import Findings, Probe, ProbeContext, register
from bench.probes.verdict import Verdict, verdict

IDS = ("cdp.permissions", "cdp.consent", "cdp.export", "cdp.erase", "cdp.audit")
# The catalogue's field classes, by the key a value has wherever it appears.
FIELD_CLASSES = {
    "email": "contact", "phone": "contact", "first_name": "contact", "last_name": "contact",
    "contact_name": "contact", "consent_marketing": "preferences",
    "consent_profiling": "preferences", "tags": "preferences", "counters": "preferences",
}
# Restricted roles walked, with what puts the probe's customer (rep 1, region 1) in scope.
ROLES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("analyst", {}), ("sales_rep", {"rep_id": 1, "regions": (1,)}))
# Events sent while profiling is withdrawn: enough pricing views to move every tag.
WITHDRAWN_KINDS = ("pricing_view",) * 5
_dec = msgspec.json.Decoder()


class SovereigntyOptions(msgspec.Struct, frozen=True):
    """``[probes] sovereignty = true``; ``sovereignty_settle_s``: wait for events to land."""

    sovereignty: bool = False
    sovereignty_settle_s: float = 0.5


@dataclass
class Subject:
    """What the harness wrote about its customer, and so knows the export must hold."""

    customer: int
    name: str
    tag: str
    secrets: list[str]
    order: int
    event_keys: list[str] = field(default_factory=list)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _subject(adapter: Any, run_id: str) -> Subject:
    tag = f"crmbench-{run_id}"[:40]
    cid = _customer(adapter, run_id, "sovereignty", tags=[tag])
    secrets: list[str] = []
    for i in range(2):
        contact: dict[str, Any] = {"customer_id": cid, "first_name": f"Probefirst{i}",
                   "last_name": f"Probelast {run_id}", "email": f"p{i}.{run_id}@crmbench.example",
                   "phone": f"+49 30 555 {i:04d}"}
        status, made = adapter.create_contact_record(contact)
        if status is not Status.ok or made is None:
            raise ProbeError(f"could not create a probe contact ({status.value})")
        secrets += [contact["email"], contact["phone"], contact["last_name"]]
    status, product = adapter.create_product_record(
        {"sku": f"crmbench-{run_id}-cdp", "name": f"crmbench probe {run_id}", "unit_price": 10.0})
    if status is not Status.ok or product is None:
        raise ProbeError(f"could not create a probe product ({status.value})")
    status, order = adapter.create_order_record(
        cid, [{"product_id": product, "quantity": 1, "unit_price": 10.0}])
    if status is not Status.ok or order is None:
        raise ProbeError(f"could not create a probe order ({status.value})")
    return Subject(cid, f"crmbench probe {run_id} sovereignty", tag, secrets, order)


def _send(adapter: Any, subject: Subject, kinds: tuple[str, ...], label: str) -> None:
    keys = [f"{subject.tag}-{label}-{i}" for i in range(len(kinds))]
    events = [EventInput(customer_id=subject.customer, type=kind, idempotency_key=key,
                         occurred_at=_now(),
                         properties={"discount": True} if kind == "pricing_view" else {})
              for key, kind in zip(keys, kinds, strict=True)]
    status = adapter.send_events(events)
    if status is not Status.ok:
        raise ProbeError(f"an event batch was answered {status.value}")
    subject.event_keys += keys


def _lines(raw: bytes) -> Iterator[Any]:
    for line in raw.splitlines():
        if line.strip():
            yield _dec.decode(line)


def _shown(value: Any, masked: set[str]) -> set[str]:
    """Keys of a masked class whose value is shown rather than marked masked."""
    out: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if FIELD_CLASSES.get(key) in masked:
                if not (isinstance(item, dict) and "masked" in item):
                    out.add(key)
            else:
                out |= _shown(item, masked)
    elif isinstance(value, list):
        for item in value:
            out |= _shown(item, masked)
    return out


def _mentions(value: Any, cid: int) -> bool:
    """Whether a read answer holds the customer: a record or page item with its id."""
    items = value.get("items") if isinstance(value, dict) else None
    records = items if isinstance(items, list) else [value]
    return any(isinstance(r, dict) and r.get("id") == cid for r in records)


def _walk(adapter: Sovereignty, identity: str, masked: set[str], subject: Subject
          ) -> tuple[dict[str, str], list[str], int]:
    """Every view as ``identity``: statuses, leaks, and how many answers showed the customer."""
    statuses: dict[str, str] = {}
    leaks: list[str] = []
    showed = 0
    for view in VIEWS:
        status, body = adapter.read_as(identity, view, subject.customer, name=subject.name,
                                       tag=subject.tag)
        statuses[view] = status.value
        if status is not Status.ok:
            continue
        text = bytes(body) if isinstance(body, bytes | bytearray) else msgspec.json.encode(body)
        value = list(_lines(text)) if view == "export" else body
        leaks += [f"{view}: {key}" for key in sorted(_shown(value, masked))]
        if "contact" in masked:
            leaks += [f"{view}: a contact value the harness wrote" for s in subject.secrets
                      if s.encode() in text][:1]
        if (view == "search_masked" and FIELD_CLASSES["tags"] in masked
                and _mentions(value, subject.customer)):
            leaks.append("search_masked: found by a field the role may not see")
        showed += view in ("record", "customer_360") and _mentions(
            value.get("customer", value) if isinstance(value, dict) else value,
            subject.customer)
    return statuses, leaks, showed


def _permissions(adapter: Sovereignty, run_id: str, subject: Subject,
                 issued: list[str]) -> Verdict:
    walked: dict[str, dict[str, str]] = {}
    leaks: list[str] = []
    blind: list[str] = []
    for role, scope in ROLES:
        status, made = adapter.issue_identity(role, f"crmbench-{run_id}-{role}"[:64], **scope)
        if status in (Status.unsupported, Status.rejected):
            # e.g. the reference with several workers: tokens must be given at start.
            return verdict("not-measured", reason=f"the platform issues no {role} identity "
                                                  f"at run time ({status.value})")
        if status is not Status.ok or made is None:
            return verdict("fail", reason=f"issuing a {role} identity was answered "
                                          f"{status.value}")
        issued.append(made["identity"])
        masked = set(made.get("masked_classes") or ())
        if not masked:
            return verdict("fail", reason=f"the {role} role masks no field class")
        statuses, found, showed = _walk(adapter, made["identity"], masked, subject)
        walked[role] = statuses
        leaks += [f"{role} {leak}" for leak in found]
        if not showed:
            blind.append(role)
    evidence = {"roles_walked": len(walked), "routes_walked": len(VIEWS),
                "reads": sum(len(v) for v in walked.values()), "answers": walked}
    if leaks:
        return verdict("fail", evidence, "masked fields shown: " + "; ".join(leaks[:8]))
    if blind:
        return verdict("fail", evidence, f"{', '.join(blind)} could not read the customer "
                       "at all, so masking was not observed")
    return verdict("pass", evidence)


def _tags(adapter: Realtime, cid: int) -> dict[str, Any]:
    status, profile = adapter.customer_profile(cid)
    if status is not Status.ok:
        raise ProbeError(f"reading the profile was answered {status.value}")
    tags = (profile or {}).get("tags")
    return dict(tags) if isinstance(tags, dict) else {}


def _consent(adapter: Any, subject: Subject, settle: float) -> Verdict:
    cid = subject.customer
    _send(adapter, subject, CDP_KINDS, "before")
    gevent.sleep(settle)
    if not _tags(adapter, cid):
        return verdict("fail", reason="no tags were computed while consent was given")
    status, now = adapter.customer_consent(cid, {"consent_profiling": False,
                                                 "reason": "crmbench probe"})
    if status is not Status.ok or (now or {}).get("consent_profiling") is not False:
        return verdict("fail", reason=f"withdrawing consent was answered {status.value}")
    withdrawn = _tags(adapter, cid)
    _send(adapter, subject, WITHDRAWN_KINDS, "withdrawn")
    gevent.sleep(settle)
    after = _tags(adapter, cid)
    adapter.customer_consent(cid, {"consent_profiling": True, "reason": "crmbench probe"})
    _send(adapter, subject, CDP_KINDS, "restored")
    gevent.sleep(settle)
    restored = _tags(adapter, cid)
    price = restored.get("price_sensitivity")
    views = CDP_KINDS.count("pricing_view")
    expected = _price_sensitivity(views, views, len(CDP_KINDS),
                                  (price or {}).get("weights") or {}) if price else None
    evidence = {"tags_at_withdrawal": sorted(withdrawn), "tags_after_events_withdrawn":
                sorted(after), "events_while_withdrawn": len(WITHDRAWN_KINDS),
                "price_sensitivity_restored": (price or {}).get("value"),
                "price_sensitivity_by_harness": expected}
    if after != withdrawn:
        return verdict("fail", evidence, "events sent after the withdrawal changed the tags")
    if not price or expected is None or price.get("value") != expected:
        return verdict("fail", evidence, "after restoring, tags did not resume from the "
                       "events sent since (price_sensitivity differs from the formula)")
    return verdict("pass", evidence)


def _export(adapter: Sovereignty, subject: Subject) -> Verdict:
    buf = io.BytesIO()
    status = adapter.export_customer(subject.customer, buf)
    if status is not Status.ok:
        return verdict("fail", reason=f"the export was answered {status.value}")
    raw = buf.getvalue()
    cut = raw.rstrip(b"\n").rfind(b"\n") + 1
    try:
        manifest = _dec.decode(raw[cut:])["manifest"]
        records = list(_lines(raw[:cut]))[1:]
    except (msgspec.DecodeError, KeyError, TypeError) as exc:
        return verdict("fail", reason=f"the bundle is not in the bundle format: {exc}")
    digest = hashlib.sha256(raw[:cut]).hexdigest()
    text = raw[:cut]
    wanted = {"customer": any(r.get("section") == "customer" and
                              (r.get("record") or {}).get("id") == subject.customer
                              for r in records),
              "order": any("order" in str(r.get("section")) and
                           (r.get("record") or {}).get("id") == subject.order for r in records)}
    missing = [k for k, ok in wanted.items() if not ok]
    missing += [s for s in subject.secrets if s.encode() not in text]
    missing += [k for k in subject.event_keys if k.encode() not in text]
    evidence = {"bytes": len(raw), "records": len(records), "sha256_by_harness": digest,
                "sha256_in_manifest": manifest.get("sha256"),
                "written_by_harness": 2 + len(subject.secrets) + len(subject.event_keys)}
    if digest != manifest.get("sha256"):
        return verdict("fail", evidence, "the manifest's SHA-256 does not match the bundle")
    if missing:
        return verdict("fail", evidence, f"the bundle lacks what the harness wrote: "
                       f"{missing[:6]}")
    return verdict("pass", evidence)


def _erase(adapter: Sovereignty, subject: Subject) -> Verdict:
    status, answer = adapter.erase_customer(subject.customer)
    if status is not Status.ok:
        return verdict("fail", reason=f"the erasure was answered {status.value}")
    left: list[str] = []
    seen: dict[str, str] = {}
    for view in ("record", "customer_360", "profile", "contacts", "search", "export"):
        got, body = adapter.read_as(None, view, subject.customer, name=subject.name)
        seen[view] = got.value
        text = msgspec.json.encode(body) if not isinstance(body, bytes) else body
        if got is Status.ok and (view in ("record", "customer_360", "profile", "export")
                                 or _mentions(body, subject.customer)
                                 or any(s.encode() in text for s in subject.secrets)):
            left.append(view)
    again, _ = adapter.erase_customer(subject.customer)
    status, entries = adapter.audit_entries(customer_id=subject.customer, action="erase")
    kept = [e for e in entries or [] if e.get("outcome", "ok") == "ok"]
    personal = [s for s in [*subject.secrets, subject.name]
                if any(s.encode() in msgspec.json.encode(e) for e in kept)]
    evidence = {"answer": answer, "after_erase": seen, "erase_again": again.value,
                "audit_entries_kept": len(kept)}
    wrong = [f"still found by: {', '.join(left)}"] if left else []
    wrong += [] if again is Status.ok else [f"a repeated erasure was answered {again.value}"]
    wrong += [] if kept else ["no audit entry of the erasure was kept"]
    wrong += [f"the audit entry holds personal data: {personal[:3]}"] if personal else []
    return verdict("fail" if wrong else "pass", evidence, "; ".join(wrong))


def _audit(adapter: Sovereignty, run_id: str, subject: Subject, issued: list[str]) -> Verdict:
    status, made = adapter.issue_identity("auditor", f"crmbench-{run_id}-auditor"[:64])
    who = None
    if status is Status.ok and made is not None:
        who = made["identity"]
        issued.append(who)
    status, entries = adapter.audit_entries(customer_id=subject.customer, identity=who)
    if status is not Status.ok or entries is None:
        return verdict("fail", reason=f"reading the audit was answered {status.value}")
    actions = sorted({str(e.get("action")) for e in entries})
    vstatus, checked = adapter.audit_verify(identity=who)
    evidence = {"as": "auditor" if who else "adapter", "entries_about_customer": len(entries),
                "actions": actions, "verify": checked}
    wrong = [f"no {a} entry for the probe's {a}" for a in ("export", "erase")
             if a not in actions]
    if vstatus is not Status.ok or not (checked or {}).get("ok"):
        wrong.append(f"the chain does not verify ({vstatus.value}: "
                     f"{(checked or {}).get('problem')})")
    return verdict("fail" if wrong else "pass", evidence, "; ".join(wrong))


def probe_sovereignty(adapter: Any, ctx: ProbeContext,
                      options: SovereigntyOptions) -> Findings:
    """cdp.permissions, cdp.consent, cdp.export, cdp.erase and cdp.audit, in that order."""
    issued: list[str] = []
    started = time.monotonic()
    try:
        subject = _subject(adapter, ctx.run_id)
        found = {"cdp.permissions": _permissions(adapter, ctx.run_id, subject, issued),
                 "cdp.consent": _consent(adapter, subject, options.sovereignty_settle_s)}
        found["cdp.export"] = _export(adapter, subject)
        found["cdp.erase"] = _erase(adapter, subject)
        found["cdp.audit"] = _audit(adapter, ctx.run_id, subject, issued)
    except ProbeError as exc:
        failed = verdict("fail", reason=str(exc))
        return None, {cid: failed for cid in IDS}
    finally:
        for identity in issued:
            adapter.revoke_identity(identity)
    ctx.say(f"sovereignty probes done in {time.monotonic() - started:.1f} s")
    return None, found


SOVEREIGNTY = register(Probe(
    name="sovereignty", trigger=("probes", "sovereignty"), needs=(Realtime, Sovereignty),
    options=SovereigntyOptions, capabilities=IDS, run=probe_sovereignty,
))
