"""Who may do what: roles, scoped API tokens, the policy, and field masking.

A token is bound to a role (admin, sales_director, sales_rep, analyst, auditor) and, for a
sales rep, to a rep id and regions. The policy of a role says which permissions it holds
(``records:read``, ``export``, ...), which customers it sees (a rep: those it owns or of its
regions; every role: not those of hidden tiers) and which field classes are masked for it.
A masked field keeps its key; its value becomes ``{"masked": "<class>"}``.

The token in ``CRMBENCH_API_TOKEN`` is the service token: role admin, compared as before on
every request and never masked or audited per read. Other tokens are looked up by the
SHA-256 of the presented header, so the comparison takes the same time whatever the bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from reference_impl.errors import UserError

ROLES: Final = ("admin", "sales_director", "sales_rep", "analyst", "auditor")
SERVICE_NAME: Final = "service"

# Field classes, by the key a value has wherever it appears (records, 360, stream, export).
FIELD_CLASSES: Final[Mapping[str, str]] = {
    "email": "contact", "phone": "contact", "first_name": "contact", "last_name": "contact",
    "contact_name": "contact",
    "consent_marketing": "preferences", "consent_profiling": "preferences",
    "tags": "preferences", "counters": "preferences",
}
# Search parameters that filter on a field, so a role that cannot see it cannot search it.
FILTER_FIELDS: Final[Mapping[str, str]] = {"tag": "tags"}

PERMISSIONS: Final = (
    "records:read", "records:write", "records:delete", "customer_data:read",
    "customer_data:write", "consent:write", "stream:read", "agents:read", "agents:write",
    "engines:read", "engines:write", "packs:read", "packs:write", "export", "erase",
    "audit:read", "meta:read", "tokens:write",
)
_CRM_READ = ("records:read", "customer_data:read", "stream:read", "agents:read",
             "engines:read", "packs:read", "meta:read")


@dataclass(frozen=True, slots=True)
class Policy:
    """What one role may do and see."""

    role: str
    permissions: frozenset[str]
    masked: frozenset[str] = frozenset()
    hidden_tiers: frozenset[str] = frozenset()
    # "all" customers, or "own_region": owned by the token's rep or in its regions.
    scope: str = "all"

    def describe(self) -> dict[str, Any]:
        return {"role": self.role, "permissions": sorted(self.permissions),
                "masked_classes": sorted(self.masked), "hidden_tiers": sorted(self.hidden_tiers),
                "scope": self.scope}


POLICIES: Final[Mapping[str, Policy]] = {
    "admin": Policy("admin", frozenset(PERMISSIONS)),
    "sales_director": Policy("sales_director", frozenset(
        (*_CRM_READ, "records:write", "records:delete", "customer_data:write", "consent:write",
         "agents:write", "export"))),
    "sales_rep": Policy("sales_rep", frozenset(
        ("records:read", "records:write", "customer_data:read", "stream:read", "agents:read",
         "agents:write", "packs:read", "meta:read")),
        masked=frozenset({"preferences"}), scope="own_region"),
    "analyst": Policy("analyst", frozenset(_CRM_READ), masked=frozenset({"contact"}),
                      hidden_tiers=frozenset({"strategic", "vip"})),
    "auditor": Policy("auditor", frozenset(("audit:read", "meta:read"))),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The holder of one token."""

    name: str
    role: str
    rep_id: int | None = None
    regions: frozenset[int] = frozenset()

    @property
    def policy(self) -> Policy:
        return POLICIES[self.role]

    @property
    def unrestricted(self) -> bool:
        policy = self.policy
        return not policy.masked and not policy.hidden_tiers and policy.scope == "all"

    def may(self, permission: str) -> bool:
        return permission in self.policy.permissions

    def sees(self, customer: Mapping[str, Any]) -> bool:
        """Whether a customer (its ``tier``, ``region_id``, ``owner_rep_id``) is in scope."""
        policy = self.policy
        if customer.get("tier") in policy.hidden_tiers:
            return False
        if policy.scope == "all":
            return True
        return (self.rep_id is not None and customer.get("owner_rep_id") == self.rep_id) or (
            customer.get("region_id") in self.regions)

    def masks(self, key: str) -> str | None:
        """The class of ``key`` when it is masked for this principal, else None."""
        cls = FIELD_CLASSES.get(key)
        return cls if cls is not None and cls in self.policy.masked else None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "rep_id": self.rep_id, "regions": sorted(self.regions),
                **self.policy.describe()}


SERVICE: Final = Principal(SERVICE_NAME, "admin")
# Where a request's scope carries a named token's principal; absent for the service token.
PRINCIPAL_KEY: Final = "crm.principal"


def principal_of(scope: Mapping[str, Any]) -> Principal:
    found: Principal = scope.get(PRINCIPAL_KEY, SERVICE)
    return found


def mask(value: Any, principal: Principal) -> Any:
    """``value`` with every field of a masked class replaced by its marker (a new object)."""
    masked = principal.policy.masked
    if not masked:
        return value
    return _mask(value, masked)


def _mask(value: Any, masked: frozenset[str]) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            cls = FIELD_CLASSES.get(key)
            out[key] = {"masked": cls} if cls in masked else _mask(item, masked)
        return out
    if isinstance(value, list):
        return [_mask(v, masked) for v in value]
    return value


def sensitive_keys(value: Any, found: set[str] | None = None) -> set[str]:
    """Keys of sensitive fields whose values ``value`` shows (unmasked)."""
    out = set() if found is None else found
    if isinstance(value, dict):
        for key, item in value.items():
            if key in FIELD_CLASSES and not (isinstance(item, dict) and "masked" in item):
                out.add(key)
            else:
                sensitive_keys(item, out)
    elif isinstance(value, list):
        for item in value:
            sensitive_keys(item, out)
    return out


def _digest(header: bytes) -> bytes:
    return hashlib.sha256(header).digest()


@dataclass(frozen=True)
class TokenTable:
    """The named (non-service) tokens, by the SHA-256 of their ``Bearer`` header."""

    by_digest: dict[bytes, Principal] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.by_digest)

    def lookup(self, header: bytes) -> Principal | None:
        """The principal of an ``Authorization`` header value; None when unknown."""
        if not header:
            return None
        # Hashing first means the dict compares digests, never the secret's own bytes.
        return self.by_digest.get(_digest(header))

    def principals(self) -> list[Principal]:
        return sorted(self.by_digest.values(), key=lambda p: p.name)

    def issue(self, spec: Mapping[str, Any]) -> Generated:
        """Add a token with a generated secret (``POST /tokens``); names stay unique."""
        principal = _principal(spec, f"token {spec.get('name')!r}")
        if any(p.name == principal.name for p in self.by_digest.values()):
            raise UserError(f"token {principal.name!r}: the name is in use")
        secret = secrets.token_urlsafe(24)
        self.by_digest[_digest(f"Bearer {secret}".encode())] = principal
        return Generated(principal, secret)

    def revoke(self, name: str) -> Principal | None:
        """Remove the token named ``name``; the principal it held, or None."""
        for digest, principal in list(self.by_digest.items()):
            if principal.name == name:
                del self.by_digest[digest]
                return principal
        return None


def token_digest(secret: str) -> str:
    """The hex SHA-256 of ``Bearer <secret>``, as ``sha256`` in a token file takes it."""
    return _digest(f"Bearer {secret}".encode()).hex()


@dataclass(frozen=True, slots=True)
class Generated:
    """A token created at start-up: its secret may be shown once, to whoever started it."""

    principal: Principal
    secret: str


def _principal(spec: Mapping[str, Any], where: str) -> Principal:
    name, role = spec.get("name"), spec.get("role")
    if not isinstance(name, str) or not name or name == SERVICE_NAME:
        raise UserError(f"{where}: name must be a non-empty text other than {SERVICE_NAME!r}")
    if role not in ROLES:
        raise UserError(f"{where}: role must be one of {', '.join(ROLES)}, not {role!r}")
    rep_id, regions = spec.get("rep_id"), spec.get("regions", [])
    if rep_id is not None and (not isinstance(rep_id, int) or rep_id < 1):
        raise UserError(f"{where}: rep_id must be a positive integer")
    if not isinstance(regions, list) or not all(isinstance(r, int) for r in regions):
        raise UserError(f"{where}: regions must be a list of region ids")
    if role == "sales_rep" and rep_id is None and not regions:
        raise UserError(f"{where}: a sales_rep token needs rep_id or regions")
    return Principal(name, role, rep_id, frozenset(regions))


def _secret_digest(spec: Mapping[str, Any], where: str) -> bytes | None:
    """The digest a token spec names (by environment variable or hash); None: generate one."""
    env, digest = spec.get("token_env"), spec.get("sha256")
    if env is not None and digest is not None:
        raise UserError(f"{where}: give token_env or sha256, not both")
    if env is not None:
        secret = os.environ.get(str(env), "").strip()
        if not secret:
            raise UserError(f"{where}: environment variable {env} is empty or not set")
        return _digest(f"Bearer {secret}".encode())
    if digest is not None:
        text = str(digest).lower()
        if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            raise UserError(f"{where}: sha256 must be 64 hex digits")
        return bytes.fromhex(text)
    return None


def parse_role_token(text: str) -> dict[str, Any]:
    """A ``--role-token`` value: ``ROLE:NAME[:REP_ID][@REGION,REGION]``."""
    head, _, regions = text.partition("@")
    parts = head.split(":")
    if len(parts) not in (2, 3):
        raise UserError(f"--role-token {text!r}: expected ROLE:NAME[:REP_ID][@REGION,...]")
    spec: dict[str, Any] = {"role": parts[0], "name": parts[1]}
    try:
        if len(parts) == 3:
            spec["rep_id"] = int(parts[2])
        if regions:
            spec["regions"] = [int(r) for r in regions.split(",")]
    except ValueError:
        raise UserError(f"--role-token {text!r}: rep and region ids are integers") from None
    return spec


def build_tokens(
    specs: Iterable[Mapping[str, Any]], *, service_token: str | None,
) -> tuple[TokenTable, list[Generated]]:
    """The token table of ``specs``; secrets neither given nor hashed are generated."""
    table: dict[bytes, Principal] = {}
    names: set[str] = set()
    generated: list[Generated] = []
    service = _digest(f"Bearer {service_token}".encode()) if service_token else None
    for i, spec in enumerate(specs):
        where = f"token {spec.get('name', i + 1)!r}"
        principal = _principal(spec, where)
        if principal.name in names:
            raise UserError(f"{where}: the name is used twice")
        names.add(principal.name)
        digest = _secret_digest(spec, where)
        if digest is None:
            secret = secrets.token_urlsafe(24)
            digest = _digest(f"Bearer {secret}".encode())
            generated.append(Generated(principal, secret))
        if digest in table or (service is not None and hmac.compare_digest(digest, service)):
            raise UserError(f"{where}: the same secret is given to another token")
        table[digest] = principal
    return TokenTable(table), generated


def load_token_file(path: Path) -> list[dict[str, Any]]:
    """The ``[[tokens]]`` of a TOML file (``version = 1``)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read the token file {path}: {exc}") from exc
    if data.get("version", 1) != 1:
        raise UserError(f"{path}: version must be 1")
    tokens = data.get("tokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, dict) for t in tokens):
        raise UserError(f"{path}: tokens must be an array of tables ([[tokens]])")
    allowed = {"name", "role", "rep_id", "regions", "token_env", "sha256"}
    for spec in tokens:
        unknown = set(spec) - allowed
        if unknown:
            raise UserError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} in a token")
    return list(tokens)


def resolve_access(
    token_file: Path | None, role_tokens: Iterable[str], *, service_token: str | None,
) -> tuple[TokenTable, list[Generated]]:
    """Tokens from a file and from ``--role-token`` values, with those generated now."""
    specs = load_token_file(token_file) if token_file is not None else []
    specs += [parse_role_token(t) for t in role_tokens]
    return build_tokens(specs, service_token=service_token)
