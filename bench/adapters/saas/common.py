"""What the vendor adapters share: run tags, id maps, URL parameters, capability tables.

Records a run creates on a vendor platform carry the tag ``crmbench:<run_id>`` at the start
of their name field, so that cleanup (and later runs) can find them with a prefix query.
These adapters address records by integer keys 1..n; :class:`IdMap` turns them into the
vendor's record ids, in an order every load-generator process computes the same way.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import httpx

from bench.adapters.base import (
    CAPABILITY_IDS,
    BaseAdapter,
    Capability,
    CredentialField,
    CredentialReport,
    GeneratorSettings,
    Key,
    Keyspace,
    RunPlan,
    Status,
    Support,
)
from bench.adapters.saas.http import (
    ClientThrottled,
    Clock,
    Credentials,
    Sleep,
    TokenBox,
    TokenUnavailable,
    VendorClient,
    load_credentials,
)
from bench.adapters.saas.quota import Concurrency, Quota, RatePlan, plan_rate
from bench.errors import TargetUnreachable, UserError
from reference_impl.schema import TIERS

RUN_ID_ENV = "CRMBENCH_RUN_ID"
TAG_PREFIX = "crmbench:"
DEFAULT_CUSTOMERS = 200
MAX_CUSTOMERS = 100_000
# Letters and vowels of the mixed workload's two-letter name-prefix searches.
NAME_LETTERS = "ABCDEFGHIJKLMNOPRSTW"
NAME_VOWELS = "aeiou"

REGIONS = 30

_RUN_ID = re.compile(r"[A-Za-z0-9-]{1,40}")


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is safe inside queries (letters, digits, dashes; at most 40)."""
    if not _RUN_ID.fullmatch(run_id):
        raise UserError(
            f"run id {run_id!r} must be 1 to 40 letters, digits or dashes"
        )
    return run_id


def run_tag(run_id: str) -> str:
    """The name prefix that marks the records of one run."""
    return TAG_PREFIX + check_run_id(run_id)


# What follows the run tag in every name: ``crmbench:a`` alone would also match run ``ab``.
TAG_SEPARATOR = " "


def tag_prefix(run_id: str) -> str:
    """The prefix to search for one run's records: its tag and the separator."""
    return run_tag(run_id) + TAG_SEPARATOR


def is_tagged(name: object, run_id: str) -> bool:
    """Whether a record name belongs to run ``run_id`` (and not to a run whose id merely
    starts the same)."""
    return isinstance(name, str) and name.startswith(tag_prefix(run_id))


def seed_name(tag: str, i: int) -> str:
    """Name of the i-th seeded customer; its first two letters vary like the searches do."""
    letter = NAME_LETTERS[i % len(NAME_LETTERS)]
    vowel = NAME_VOWELS[(i // len(NAME_LETTERS)) % len(NAME_VOWELS)]
    return f"{tag}{TAG_SEPARATOR}{letter}{vowel}lto Customer {i}"


def seed_region(i: int) -> int:
    return i % REGIONS + 1


def seed_tier(i: int) -> str:
    return TIERS[i % len(TIERS)]


class IdMap:
    """Harness ids 1..n mapped onto vendor record ids, in a fixed order."""

    def __init__(self, ids: Sequence[str]) -> None:
        self._ids = list(ids)

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, harness_id: Key) -> str | None:
        if isinstance(harness_id, int) and 1 <= harness_id <= len(self._ids):
            return self._ids[harness_id - 1]
        return None

    def ids(self) -> list[str]:
        return list(self._ids)


def fit_to_storage(
    requested: int, remaining_mb: float | None, kb_per_customer: float, share: float = 0.5
) -> tuple[int, str | None]:
    """How many customers to seed so they use at most ``share`` of the remaining storage."""
    if remaining_mb is None:
        return requested, None
    cap = max(int(remaining_mb * 1024 * share // kb_per_customer), 0)
    if cap >= requested:
        return requested, None
    return cap, (
        f"scaled from {requested} to {cap} customers: {remaining_mb:g} MB of data storage "
        f"remain and each seeded customer takes about {kb_per_customer:g} KB; at most "
        f"{share:.0%} of the remaining storage is used"
    )


def capability_table(
    entries: Mapping[str, tuple[Support, str]], rest: tuple[Support, str]
) -> dict[str, Capability]:
    """A declaration for every capability id: ``entries``, and ``rest`` for the others."""
    unknown = set(entries) - set(CAPABILITY_IDS)
    if unknown:
        raise ValueError(f"unknown capability ids: {sorted(unknown)}")
    return {cid: Capability(*entries.get(cid, rest)) for cid in CAPABILITY_IDS}


def positive_int(key: str, raw: str, what: str, maximum: int = MAX_CUSTOMERS) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"{what} URL: {key} must be a whole number, got {raw!r}") from None
    if not 1 <= value <= maximum:
        raise UserError(f"{what} URL: {key} must be between 1 and {maximum}, got {value}")
    return value


def parse_target(
    url: str, scheme: str, allowed: Sequence[str], *, host_required: bool = True
) -> tuple[str, dict[str, str]]:
    """Host and query parameters of ``scheme://host?k=v``; anything else is refused."""
    parts = urlsplit(url)
    what = scheme
    if parts.scheme.lower() != scheme:
        raise UserError(f"not a {what} URL: {url!r}")
    if "@" in parts.netloc:
        # Say nothing of what was given: it may be the secret itself.
        raise UserError(
            f"{what} URL must not carry credentials; remove the user/password part and set "
            "them in the environment or the credentials file"
        )
    host = (parts.hostname or "").lower()
    if host_required and not host:
        raise UserError(f"{what} URL names no host: {url!r}")
    if parts.port is not None or parts.path not in ("", "/") or parts.fragment:
        raise UserError(f"{what} URL takes a host and query parameters only: {url!r}")
    params: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in allowed:
            raise UserError(
                f"{what} URL: unknown parameter {key!r}; allowed: {', '.join(allowed) or 'none'}"
            )
        if key in params:
            raise UserError(f"{what} URL: parameter {key!r} given more than once")
        params[key] = value
    if "run_id" in params:
        check_run_id(params["run_id"])
    return host, params


class VendorAdapter(BaseAdapter):
    """Lifecycle and plumbing shared by the vendor adapters; subclasses add the verbs."""

    name: ClassVar[str]
    platform: ClassVar[str]
    sequential_keys: ClassVar[bool] = True
    capabilities: ClassVar[dict[str, Capability]]
    label: ClassVar[str]
    # The credentials file table and field -> environment variable.
    credential_section: ClassVar[str]
    credential_env: ClassVar[Mapping[str, str]]

    def __init__(
        self,
        host: str,
        *,
        customers: int = DEFAULT_CUSTOMERS,
        run_id: str | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep | None = None,
        clock: Clock = time.monotonic,
        environ: Mapping[str, str] | None = None,
        credentials_file: Path | None = None,
    ) -> None:
        self.host = host
        self.customers = customers
        self.run_id = run_id
        self.transport = transport
        self.sleep = sleep
        self.clock = clock
        self.environ = environ
        self.credentials_file = credentials_file
        self.pool_size = 64
        # Load-generator processes sharing the platform's quotas (limiters take a share).
        self.processes = 1
        self._http: VendorClient | None = None
        # The access token of platforms that issue one (set up in open()).
        self._token: TokenBox | None = None

    @property
    def url(self) -> str:
        return f"{self.name}://{self.host}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, run_id={self.run_id!r})"

    def read_credentials(self) -> Credentials:
        """This platform's credentials from the environment or the credentials file."""
        return load_credentials(self.credential_section, self.credential_env,
                                environ=self.environ, path=self.credentials_file)

    def complete_credentials(self) -> Credentials:
        """The credentials, all set; TargetUnreachable naming what to set otherwise."""
        creds = self.read_credentials()
        if not creds.complete:
            raise TargetUnreachable(f"no credentials: {creds.hint()}")
        return creds

    def credential_report(self) -> CredentialReport:
        creds = self.read_credentials()
        return CredentialReport(
            tuple(CredentialField(d["field"], d["env"], d["set"], d["source"])
                  for d in creds.describe()),
            str(creds.file),
        )

    def prepare_generator(self, settings: GeneratorSettings) -> None:
        self.pool_size = max(settings.concurrency, 1)
        self.processes = max(settings.processes, 1)

    def quotas(self) -> list[Quota]:
        """The platform's documented call quotas (with what is left, once known)."""
        return []

    def concurrency(self) -> list[Concurrency]:
        """The platform's documented caps on calls in flight."""
        return []

    def rate_plan(self, plan: RunPlan) -> RatePlan:
        """The rate this run may use under the quotas; UserError with the numbers when the
        plan is refused."""
        found = plan_rate(self.quotas(), plan, concurrency=self.concurrency())
        if found.action == "refused":
            what = ("lower --rate or --users, shorten the run, or let the harness scale it "
                    "(--over-quota scale)") if plan.over_quota == "refuse" else (
                    "less than one call a minute is left; wait for the allocation to reset "
                    "or shorten the run")
            raise UserError(f"{self.label}: {found.summary()}; {what}. Quotas: "
                            + "; ".join(found.lines))
        return found

    def _env(self) -> Mapping[str, str]:
        return os.environ if self.environ is None else self.environ

    def _sleep_fn(self) -> Sleep:
        if self.sleep is not None:
            return self.sleep
        return lambda s: time.sleep(s)

    def _adopt_run_id(self) -> str | None:
        """The run id set by the harness, or the one its generator processes inherit."""
        if self.run_id is None:
            env_id = self._env().get(RUN_ID_ENV, "").strip()
            self.run_id = env_id or None
        if self.run_id is not None:
            check_run_id(self.run_id)
        return self.run_id

    def _tag(self) -> str:
        if self.run_id is None:
            raise RuntimeError(
                f"{type(self).__name__} writes only records tagged with a run id; set run_id"
            )
        return run_tag(self.run_id)

    def _client(self) -> VendorClient:
        if self._http is None:
            raise RuntimeError(f"{type(self).__name__} used before open() or after close()")
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        self._token = None

    @staticmethod
    def _verb(call: Callable[[], Status]) -> Status:
        """Run one timed verb; expected failures become statuses."""
        try:
            return call()
        except ClientThrottled:
            return Status.rate_limited
        except TokenUnavailable:
            # Not sent: the access token expired and its background refresh has not
            # finished (timed calls never fetch a token themselves).
            return Status.error
        except httpx.TimeoutException:
            return Status.timeout
        except httpx.TransportError:
            return Status.transport_error
        except (ValueError, KeyError, TypeError):
            # A body that is not the documented JSON: the target answered wrongly.
            return Status.error

    @staticmethod
    def keyspace_of(customers: int, opportunities: int) -> Keyspace:
        return Keyspace(
            customers=customers, opportunities=opportunities, reps=1, regions=REGIONS,
            products=1,
        )


def int_field(body: Any, key: str) -> int | None:
    """``body[key]`` as an int (vendors' numeric error codes), or None."""
    if isinstance(body, dict) and key in body:
        try:
            return int(body[key])
        except (TypeError, ValueError):
            return None
    return None


def json_or_empty(resp: httpx.Response) -> Any:
    """The JSON body, or None when there is none or it is not JSON."""
    try:
        return resp.json()
    except ValueError:
        return None
