"""HTTP plumbing shared by the vendor adapters: credentials, secrets, retries, rate limits.

    Secret          a string that prints as ``***``; its value is registered for redaction
    redact          removes registered secrets and secret-looking parameters from text
    load_credentials  environment first, then a TOML file outside every git work tree
    RetryPolicy     exponential backoff with full jitter (429, 503, vendor throttle codes)
    SlidingWindow   client-side limiter: at most N calls per W seconds per key
    TokenBox        one cached access token shared by all greenlets, refreshed once;
                    timed verbs ``peek`` it and never fetch on their own path
    VendorClient    httpx.Client with an injectable transport; ``setup`` retries and raises
                    TargetUnreachable, ``send`` makes one attempt for timed verbs

Timed verbs never retry and never wait for the limiter: a retry or a queue inside a timed
call would hide the platform's throttling in the latency figures. They get ``send``, which
refuses (``ClientThrottled``) instead of waiting, and the adapter reports
``Status.rate_limited``.
"""

from __future__ import annotations

import hmac
import logging
import os
import random
import re
import stat
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.errors import TargetUnreachable, UserError

CREDENTIALS_ENV = "CRMBENCH_CREDENTIALS"
DEFAULT_CREDENTIALS = Path("~/.config/crmbench/credentials.toml")

Clock = Callable[[], float]
Sleep = Callable[[float], None]

log = logging.getLogger("crmbench.vendor")

# ------------------------------------------------------------------ secrets

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
# Shorter values would redact ordinary words; no credential of these vendors is that short.
_MIN_SECRET_LEN = 6
_SECRET_PARAM = re.compile(
    r"(?i)\b(access_token|corpsecret|client_secret|client_assertion|assertion|appsecret"
    r"|permanentcode|corpaccesstoken|accesstoken|refresh_token|token)=([^&\s\"']+)"
)
_SECRET_JSON = re.compile(
    r"(?i)(\"(?:access_token|accessToken|corpAccessToken|appSecret|client_secret"
    r"|permanentCode|refresh_token|corpsecret)\"\s*:\s*)\"[^\"]*\""
)
_BEARER = re.compile(r"(?i)\bBearer\s+[^\s\"',]+")


def register_secret(value: str) -> None:
    """Remember ``value`` so that :func:`redact` removes it wherever it turns up."""
    if len(value) >= _MIN_SECRET_LEN:
        with _SECRETS_LOCK:
            _SECRETS.add(value)


def redact(text: str) -> str:
    """``text`` without registered secrets, bearer tokens and secret-looking parameters."""
    with _SECRETS_LOCK:
        known = sorted(_SECRETS, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, "***")
    text = _SECRET_PARAM.sub(r"\1=***", text)
    text = _SECRET_JSON.sub(r'\1"***"', text)
    return _BEARER.sub("Bearer ***", text)


class Secret:
    """A credential or token: ``str()``, ``repr()`` and f-strings show ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(
            self._value.encode(), other._value.encode()
        )

    def __hash__(self) -> int:
        return hash(self._value)


class _RedactingFilter(logging.Filter):
    """Rewrites log records so that no secret leaves through a log handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


_FILTER = _RedactingFilter()
# httpx logs every request URL at INFO; WeCom puts the secret and the token in the query.
for _name in ("httpx", "httpcore", "crmbench.vendor"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _RedactingFilter) for f in _logger.filters):
        _logger.addFilter(_FILTER)


# ------------------------------------------------------------------ credentials


@dataclass(frozen=True)
class Credentials:
    """One vendor's credentials: each field from the environment or the credentials file."""

    vendor: str
    env: Mapping[str, str]
    values: Mapping[str, Secret]
    sources: Mapping[str, str]
    file: Path

    @property
    def missing(self) -> tuple[str, ...]:
        """Environment variable names of the fields that have no value."""
        return tuple(var for name, var in self.env.items() if name not in self.values)

    @property
    def complete(self) -> bool:
        return not self.missing

    def __getitem__(self, name: str) -> Secret:
        return self.values[name]

    def describe(self) -> list[dict[str, Any]]:
        """Which fields are set and where from; never the values."""
        return [
            {"field": name, "env": var, "set": name in self.values,
             "source": self.sources.get(name)}
            for name, var in self.env.items()
        ]

    def hint(self) -> str:
        """How to provide the missing fields, for error messages."""
        section = f"[{self.vendor}] table of {self.file}"
        return (f"set {_join(self.missing)} (or the fields "
                f"{_join(n for n in self.env if n not in self.values)} in the {section}; "
                f"{CREDENTIALS_ENV} names another file)")


def _join(items: Iterable[str]) -> str:
    names = list(items)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def credentials_path(environ: Mapping[str, str] | None = None) -> Path:
    """The credentials file: ``$CRMBENCH_CREDENTIALS`` or ~/.config/crmbench/credentials.toml."""
    env = os.environ if environ is None else environ
    raw = env.get(CREDENTIALS_ENV, "").strip()
    return Path(raw).expanduser() if raw else DEFAULT_CREDENTIALS.expanduser()


def git_work_tree(start: Path) -> Path | None:
    """The root of the git work tree that holds ``start``, if any."""
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return None


def _refuse_unsafe_file(path: Path) -> None:
    resolved = path.resolve()
    trees = {t for t in (git_work_tree(Path.cwd().resolve()),
                         git_work_tree(Path(__file__).resolve().parent)) if t is not None}
    for tree in trees:
        if resolved.is_relative_to(tree):
            raise UserError(
                f"credentials file {path} is inside the git work tree {tree}, where it could "
                f"be committed; move it outside (default {DEFAULT_CREDENTIALS}) and point "
                f"{CREDENTIALS_ENV} at it"
            )
    mode = resolved.stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UserError(
            f"credentials file {path} can be read by other users; run: chmod 600 {path}"
        )


def load_credentials(
    vendor: str,
    env: Mapping[str, str],
    *,
    environ: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> Credentials:
    """Credentials of ``vendor``: field -> environment variable, overriding the file's table."""
    environ = os.environ if environ is None else environ
    file = path or credentials_path(environ)
    values: dict[str, Secret] = {}
    sources: dict[str, str] = {}
    if file.is_file():
        _refuse_unsafe_file(file)
        try:
            table = tomllib.loads(file.read_text(encoding="utf-8")).get(vendor, {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"credentials file {file} is not valid TOML: {exc}") from None
        if not isinstance(table, dict):
            raise UserError(f"credentials file {file}: [{vendor}] must be a table")
        for name in env:
            raw = table.get(name)
            if raw is None:
                continue
            if not isinstance(raw, str | int):
                raise UserError(f"credentials file {file}: {vendor}.{name} must be a string")
            if str(raw).strip():
                values[name] = Secret(str(raw).strip())
                sources[name] = f"file {file}"
    for name, var in env.items():
        raw = environ.get(var, "").strip()
        if raw:
            values[name] = Secret(raw)
            sources[name] = f"env {var}"
    return Credentials(vendor, dict(env), values, sources, file)


# ------------------------------------------------------------------ retries and limits


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter (AWS Architecture Blog, 'Exponential Backoff And
    Jitter'): wait uniform(0, min(cap, base * 2**attempt)), at least ``Retry-After``."""

    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0

    def backoff(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        delay = rng.uniform(0.0, min(self.cap_s, self.base_s * 2.0 ** attempt))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cap_s))
        return delay


def _default_sleep(seconds: float) -> None:
    # Looked up per call: in the gevent-patched load generator this is gevent.sleep.
    time.sleep(seconds)


class SlidingWindow:
    """At most ``limit`` calls per ``window_s`` seconds for each key (e.g. per endpoint)."""

    def __init__(
        self, limit: int, window_s: float, *, clock: Clock = time.monotonic,
        sleep: Sleep = _default_sleep,
    ) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("a sliding window needs limit >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _wait(self, key: str, now: float) -> float:
        calls = self._calls.setdefault(key, deque())
        while calls and calls[0] <= now - self.window_s:
            calls.popleft()
        if len(calls) < self.limit:
            return 0.0
        return calls[0] + self.window_s - now

    def try_acquire(self, key: str = "") -> bool:
        """Take a slot now if one is free; never waits."""
        with self._lock:
            now = self._clock()
            if self._wait(key, now) > 0:
                return False
            self._calls[key].append(now)
            return True

    def acquire(self, key: str = "") -> float:
        """Take a slot, sleeping until one is free; return the seconds waited."""
        waited = 0.0
        while True:
            # The lock is released before sleeping so other greenlets can still count.
            with self._lock:
                now = self._clock()
                wait = self._wait(key, now)
                if wait <= 0:
                    self._calls[key].append(now)
                    return waited
            self._sleep(wait)
            waited += wait


class TokenUnavailable(Exception):
    """A timed call found no valid access token; nothing was sent."""


class TokenBox:
    """One access token for all callers: fetched once, refreshed once per expiry or rejection.

    Setup code uses ``get`` and ``refresh``, which fetch on the caller's path. Timed verbs
    use ``peek`` and ``refresh_later``: a token fetch inside a timed call would be counted
    as the platform's latency, so the refresh runs in the background (a thread; a greenlet
    in the load generator) before the token expires, and a call that finds none is not sent.
    """

    def __init__(
        self, fetch: Callable[[], tuple[Secret, float | None]], *, clock: Clock = time.monotonic,
        margin_s: float = 300.0,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._margin_s = margin_s
        self._token: Secret | None = None
        # When the token stops being served (its expiry) and when a refresh is due.
        self._expires: float | None = None
        self._renew_at: float | None = None
        self._lock = threading.Lock()
        self._background: threading.Thread | None = None
        self.fetches = 0
        self.background_failures = 0

    def _load(self) -> Secret:
        return self._store(*self._fetch())

    def _store(self, token: Secret, ttl_s: float | None) -> Secret:
        self.fetches += 1
        self._token = token
        now = self._clock()
        if ttl_s is None:
            self._expires = self._renew_at = None
        else:
            self._expires = now + max(ttl_s, 0)
            self._renew_at = now + max(ttl_s - self._margin_s, 0)
        return token

    def get(self) -> Secret:
        with self._lock:
            now = self._clock()
            if self._token is None or any(
                t is not None and now >= t for t in (self._renew_at, self._expires)
            ):
                return self._load()
            return self._token

    def refresh(self, stale: Secret) -> Secret:
        """A new token, unless another caller already replaced ``stale``."""
        with self._lock:
            if self._token is None or self._token == stale:
                return self._load()
            return self._token

    def peek(self) -> Secret:
        """The token for a timed call, never fetched here: TokenUnavailable without one."""
        with self._lock:
            token, now = self._token, self._clock()
            if token is None or (self._expires is not None and now >= self._expires):
                self._start_refresh(None)
                raise TokenUnavailable("no valid access token; a refresh is under way")
            if self._renew_at is not None and now >= self._renew_at:
                self._start_refresh(token)
            return token

    def refresh_later(self, stale: Secret) -> None:
        """The platform refused ``stale``: replace it in the background, once."""
        with self._lock:
            if self._token == stale:
                # Not served again: later calls wait for the new token instead.
                self._expires = self._clock()
            self._start_refresh(stale)

    def _start_refresh(self, stale: Secret | None) -> None:
        if self._background is not None and self._background.is_alive():
            return
        self._background = threading.Thread(
            target=self._refresh_in_background, args=(stale,), name="crmbench-token",
            daemon=True)
        self._background.start()

    def _refresh_in_background(self, stale: Secret | None) -> None:
        # The fetch runs outside the lock: timed calls keep peeking the current token.
        with self._lock:
            if stale is not None and self._token is not None and self._token != stale:
                return
        try:
            fetched = self._fetch()
        except Exception as exc:  # reported; the next peek tries again
            self.background_failures += 1
            log.warning("access token refresh failed: %s", redact(str(exc)))
            return
        with self._lock:
            self._store(*fetched)

    def wait_refreshed(self, timeout_s: float = 30.0) -> None:
        """Block until a background refresh under way has finished (tests, shutdown)."""
        thread = self._background
        if thread is not None:
            thread.join(timeout_s)


# ------------------------------------------------------------------ the client


class ClientThrottled(Exception):
    """The client-side limiter refused a timed call; nothing was sent."""


Throttled = Callable[[httpx.Response], bool]


def _retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("Retry-After", "").strip()
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


class VendorClient:
    """A pooled ``httpx.Client`` for one vendor host, with retries and a limiter."""

    def __init__(
        self,
        vendor: str,
        *,
        transport: httpx.BaseTransport | None = None,
        limiter: SlidingWindow | None = None,
        retry: RetryPolicy | None = None,
        throttled: Throttled | None = None,
        sleep: Sleep = _default_sleep,
        rng: random.Random | None = None,
        pool_size: int = 64,
        timeout_s: float = 30.0,
    ) -> None:
        self.vendor = vendor
        self.limiter = limiter
        self.retry = retry or RetryPolicy()
        self._throttled = throttled
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.retries = 0
        self.client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
            headers={"User-Agent": "crmbench", "Accept": "application/json"},
            follow_redirects=False,
        )

    def close(self) -> None:
        self.client.close()

    def is_throttled(self, resp: httpx.Response) -> bool:
        if resp.status_code in (429, 503):
            return True
        return self._throttled is not None and self._throttled(resp)

    def send(self, method: str, url: str, *, limit_key: str = "", **kw: Any) -> httpx.Response:
        """One attempt, for timed verbs: raises ClientThrottled or httpx.TransportError."""
        if self.limiter is not None and not self.limiter.try_acquire(limit_key):
            raise ClientThrottled(limit_key)
        return self.client.request(method, url, **kw)

    def setup(self, method: str, url: str, *, limit_key: str = "", **kw: Any) -> httpx.Response:
        """A setup call: waits for the limiter, retries throttling and network failures."""
        host = httpx.URL(url).host
        last: str = ""
        for attempt in range(self.retry.attempts):
            if self.limiter is not None:
                self.limiter.acquire(limit_key)
            try:
                resp = self.client.request(method, url, **kw)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {redact(str(exc))}"
                retry_after: float | None = None
            else:
                if not self.is_throttled(resp) or attempt == self.retry.attempts - 1:
                    return resp
                last = f"HTTP {resp.status_code} (throttled)"
                retry_after = _retry_after(resp)
            delay = self.retry.backoff(attempt, self._rng, retry_after)
            self.retries += 1
            log.debug("%s %s %s: %s; retry in %.2f s", self.vendor, method, host, last, delay)
            if attempt < self.retry.attempts - 1:
                self._sleep(delay)
        raise TargetUnreachable(
            f"{self.vendor} at {host} does not answer after {self.retry.attempts} attempts "
            f"({last})"
        )


@dataclass
class LimitUsage:
    """API allocation used so far, as last reported by the vendor (e.g. Sforce-Limit-Info)."""

    used: int | None = None
    max: int | None = None

    def note(self, used: int, maximum: int) -> None:
        self.used, self.max = used, maximum

    @property
    def remaining(self) -> int | None:
        return None if self.used is None or self.max is None else self.max - self.used
