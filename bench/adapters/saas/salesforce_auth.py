"""Salesforce's OAuth 2.0 server-to-server flows: client credentials and JWT bearer.

Client credentials (Salesforce Help, "OAuth 2.0 Client Credentials Flow for
Server-to-Server Integration"): ``grant_type=client_credentials`` with the consumer key and
secret, posted to the org's My Domain token endpoint,
``https://MyDomainName.my.salesforce.com/services/oauth2/token``. The flow does not accept
login.salesforce.com or test.salesforce.com (Salesforce Help 000886201, "Migrate from OAuth
Username-Password to Client Credentials Flow"), so it needs the My Domain host.

JWT bearer (Salesforce Help, "OAuth 2.0 JWT Bearer Flow for Server-to-Server
Integration"): ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` and an
``assertion`` signed with RS256 by the private key whose certificate the connected app
holds. Claims: ``iss`` the consumer key, ``sub`` the username, ``aud``
https://login.salesforce.com (https://test.salesforce.com for sandboxes) and ``exp`` at
most three minutes ahead. This flow may be posted to login.salesforce.com,
test.salesforce.com or the My Domain host.

The private key is read from the PEM file that ``SALESFORCE_PRIVATE_KEY_FILE`` (or the
``private_key_file`` field of the credentials file) names; it is never logged or printed.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from bench.adapters.saas.common import json_or_empty
from bench.adapters.saas.http import (
    CREDENTIALS_ENV,
    Credentials,
    Secret,
    VendorClient,
    git_work_tree,
    redact,
)
from bench.errors import TargetUnreachable, UserError

LOGIN_HOSTS = {"login": "login.salesforce.com", "test": "test.salesforce.com"}
# Credential fields of both flows -> environment variables.
ENV = {
    "client_id": "SALESFORCE_CLIENT_ID",
    "client_secret": "SALESFORCE_CLIENT_SECRET",
    "username": "SALESFORCE_USERNAME",
    "private_key_file": "SALESFORCE_PRIVATE_KEY_FILE",
}
CLIENT_CREDENTIALS = "client_credentials"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_PATH = "/services/oauth2/token"
# The assertion's lifetime: Salesforce accepts an exp at most three minutes ahead.
ASSERTION_TTL_S = 120
_MY_DOMAIN_EXAMPLE = (
    "salesforce://acme.my.salesforce.com (a sandbox: "
    "salesforce://acme--dev.sandbox.my.salesforce.com)"
)

WallClock = Callable[[], float]


def is_login_host(host: str) -> bool:
    """Whether ``host`` is login.salesforce.com or test.salesforce.com (not a My Domain)."""
    return host in LOGIN_HOSTS.values()


def audience(host: str) -> str:
    """The ``aud`` claim of the JWT bearer flow for a target host."""
    sandbox = host == LOGIN_HOSTS["test"] or host.endswith(".sandbox.my.salesforce.com")
    return "https://test.salesforce.com" if sandbox else "https://login.salesforce.com"


def _has(creds: Credentials, name: str) -> bool:
    return name in creds.values


def no_credentials_hint(creds: Credentials) -> str:
    """How to provide credentials for either flow, for error messages."""
    return (
        f"set {ENV['client_id']} and {ENV['client_secret']} (client credentials flow, with "
        f"the org's My Domain host), or {ENV['client_id']}, {ENV['username']} and "
        f"{ENV['private_key_file']} (JWT bearer flow); or the fields client_id, "
        f"client_secret, username, private_key_file in the [{creds.vendor}] table of "
        f"{creds.file} ({CREDENTIALS_ENV} names another file)"
    )


def flow_fields(creds: Credentials) -> tuple[str, ...]:
    """The credential fields of the flow the set fields point to (for ``doctor``)."""
    if _has(creds, "username") or _has(creds, "private_key_file"):
        return ("client_id", "username", "private_key_file")
    return ("client_id", "client_secret")


def choose_flow(creds: Credentials, host: str) -> str:
    """The grant type the credentials allow on ``host``; a clear error when none fits."""
    jwt_fields = [n for n in ("username", "private_key_file") if _has(creds, n)]
    if not _has(creds, "client_id") and not jwt_fields and not _has(creds, "client_secret"):
        raise TargetUnreachable(f"no credentials: {no_credentials_hint(creds)}")
    if not _has(creds, "client_id"):
        raise UserError(f"Salesforce credentials: {ENV['client_id']} (the connected app's "
                        f"consumer key) is not set; {no_credentials_hint(creds)}")
    if len(jwt_fields) == 1:
        missing = "private_key_file" if jwt_fields == ["username"] else "username"
        raise UserError(f"Salesforce JWT bearer flow: {ENV[missing]} is not set (the flow "
                        f"needs {ENV['username']} and {ENV['private_key_file']})")
    if jwt_fields:
        return JWT_BEARER
    if not _has(creds, "client_secret"):
        raise TargetUnreachable(f"no credentials: {no_credentials_hint(creds)}")
    if is_login_host(host):
        raise UserError(
            f"Salesforce's client credentials flow does not accept {host}: it must call the "
            f"org's My Domain host (https://MyDomainName.my.salesforce.com/services/oauth2/"
            f"token). Use {_MY_DOMAIN_EXAMPLE}, or the JWT bearer flow ({ENV['username']} "
            f"and {ENV['private_key_file']}), which accepts salesforce://login and "
            "salesforce://test"
        )
    return CLIENT_CREDENTIALS


def _refuse_unsafe_key(path: Path) -> None:
    resolved = path.resolve()
    tree = git_work_tree(resolved.parent)
    if tree is not None:
        raise UserError(
            f"{ENV['private_key_file']}: the key file {path} is inside the git work tree "
            f"{tree}, where it could be committed; move it outside"
        )
    mode = resolved.stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UserError(f"{ENV['private_key_file']}: the key file {path} can be read by other "
                        f"users; run: chmod 600 {path}")


def load_private_key(raw_path: str) -> RSAPrivateKey:
    """The RSA private key of an unencrypted PEM file; a clear error otherwise."""
    path = Path(raw_path).expanduser()
    what = f"{ENV['private_key_file']} ({path})"
    if not path.is_file():
        raise UserError(f"{what} is not a file; it must name the PEM private key whose "
                        "certificate the connected app holds")
    _refuse_unsafe_key(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{what} cannot be read: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # Say nothing of the content: it is the secret.
        raise UserError(f"{what} is not an unencrypted PEM private key") from None
    if not isinstance(key, RSAPrivateKey):
        raise UserError(f"{what} holds a key that is not RSA; the JWT bearer flow signs "
                        "with RS256")
    return key


def jwt_assertion(
    client_id: str, username: str, key: RSAPrivateKey, aud: str, now: float
) -> Secret:
    """The RS256-signed assertion of the JWT bearer flow."""
    claims = {"iss": client_id, "sub": username, "aud": aud,
              "exp": int(now) + ASSERTION_TTL_S}
    return Secret(jwt.encode(claims, key, algorithm="RS256"))


@dataclass(frozen=True)
class Grant:
    """What a token request found: the access token and the instance to call."""

    token: Secret
    instance: str


class TokenSource:
    """Fetches access tokens with the flow the credentials allow."""

    def __init__(self, host: str, creds: Credentials, *, wall_clock: WallClock = time.time
                 ) -> None:
        self.host = host
        self.creds = creds
        self.flow = choose_flow(creds, host)
        self._wall_clock = wall_clock
        self._key: RSAPrivateKey | None = None
        if self.flow == JWT_BEARER:
            self._key = load_private_key(creds["private_key_file"].reveal())

    def user(self) -> str:
        """Who the calls act as, for messages (no credential value)."""
        if self.flow == JWT_BEARER:
            return f"named by {ENV['username']}"
        return "the connected app runs as (client credentials flow)"

    def _form(self) -> dict[str, str]:
        client_id = self.creds["client_id"].reveal()
        if self._key is None:
            return {"grant_type": CLIENT_CREDENTIALS, "client_id": client_id,
                    "client_secret": self.creds["client_secret"].reveal()}
        assertion = jwt_assertion(client_id, self.creds["username"].reveal(), self._key,
                                  audience(self.host), self._wall_clock())
        return {"grant_type": JWT_BEARER, "assertion": assertion.reveal()}

    def fetch(self, client: VendorClient) -> Grant:
        """One token request (a setup call); UserError when Salesforce refuses it."""
        resp = client.setup("POST", f"https://{self.host}{TOKEN_PATH}", data=self._form())
        body = json_or_empty(resp)
        if resp.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            raise UserError(self._refusal(resp, body))
        instance = str(body.get("instance_url") or f"https://{self.host}").rstrip("/")
        if not instance.startswith("https://"):
            raise UserError(f"Salesforce returned an instance URL that is not https: {instance}")
        return Grant(Secret(str(body["access_token"])), instance)

    def _refusal(self, resp: httpx.Response, body: Any) -> str:
        detail = oauth_error(resp, body)
        if "not supported on this domain" in detail.lower():
            return (f"Salesforce at {self.host} refused the token request ({detail}): the "
                    f"client credentials flow needs the org's My Domain host; use "
                    f"{_MY_DOMAIN_EXAMPLE}")
        if self.flow == JWT_BEARER:
            return (
                f"Salesforce at {self.host} refused the JWT bearer flow ({detail}); check "
                f"that the connected app holds the certificate of {ENV['private_key_file']} "
                f"and its consumer key is {ENV['client_id']}, that the user "
                f"{ENV['username']} is pre-authorized (admin-approved users, by profile or "
                f"permission set), and that the host suits the org (aud "
                f"{audience(self.host)}; sandboxes: salesforce://test)"
            )
        return (f"Salesforce at {self.host} refused the client credentials flow ({detail}); "
                "check that the connected app enables it and has a run-as user, and check "
                f"{ENV['client_id']} / {ENV['client_secret']}")


def oauth_error(resp: httpx.Response, body: Any = None) -> str:
    """``error: error_description`` of an OAuth answer, secrets removed."""
    body = json_or_empty(resp) if body is None else body
    if isinstance(body, dict) and "error" in body:
        text = f"{body.get('error')}: {body.get('error_description')}"
    else:
        text = f"HTTP {resp.status_code}"
    return redact(text)[:300]

