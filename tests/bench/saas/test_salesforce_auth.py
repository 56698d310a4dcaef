"""Salesforce login: client credentials on the My Domain host, or the JWT bearer flow."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bench.adapters.saas.salesforce import SalesforceAdapter
from bench.errors import TargetUnreachable, UserError
from tests.bench.saas.fake_salesforce import (
    SF_CLIENT_ID,
    SF_CLIENT_SECRET,
    SF_INSTANCE,
    SF_USERNAME,
    FakeSalesforce,
)

CC_ENV = {"SALESFORCE_CLIENT_ID": SF_CLIENT_ID, "SALESFORCE_CLIENT_SECRET": SF_CLIENT_SECRET}


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture()
def key_file(tmp_path: Path, key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "salesforce.key"
    path.write_bytes(_pem(key))
    path.chmod(0o600)
    return path


def jwt_env(key_file: Path) -> dict[str, str]:
    return {"SALESFORCE_CLIENT_ID": SF_CLIENT_ID, "SALESFORCE_USERNAME": SF_USERNAME,
            "SALESFORCE_PRIVATE_KEY_FILE": str(key_file)}


def adapter_for(url: str, fake: FakeSalesforce, env: dict[str, str]) -> SalesforceAdapter:
    adapter = SalesforceAdapter.from_url(url, env=env)
    adapter.transport = fake.transport()
    adapter.sleep = lambda s: None
    return adapter


# ------------------------------------------------------------------ client credentials


@pytest.mark.parametrize("url", ["salesforce://login", "salesforce://test"])
def test_client_credentials_need_the_my_domain_host(url: str) -> None:
    fake = FakeSalesforce()
    adapter = adapter_for(url, fake, CC_ENV)
    with pytest.raises(UserError) as info:
        adapter.open()
    message = str(info.value)
    assert "client credentials flow does not accept" in message
    assert "My Domain" in message and "salesforce://acme.my.salesforce.com" in message
    assert "JWT bearer flow" in message
    # Refused before anything is sent.
    assert fake.requests == []


def test_a_domain_refusal_is_explained_as_a_my_domain_problem() -> None:
    # A host that is not the org's My Domain (here an instance host) is refused by
    # Salesforce itself: the message says what to use instead of blaming the app.
    fake = FakeSalesforce(my_domain_hosts={"acme.my.salesforce.com"})
    adapter = adapter_for("salesforce://na123.salesforce.com", fake, CC_ENV)
    with pytest.raises(UserError) as info:
        adapter.open()
    message = str(info.value)
    assert "request not supported on this domain" in message
    assert "needs the org's My Domain host" in message
    assert "check that the connected app enables it" not in message


def test_no_credentials_names_both_flows() -> None:
    adapter = SalesforceAdapter.from_url("salesforce://acme.my.salesforce.com", env={})
    with pytest.raises(TargetUnreachable) as info:
        adapter.open()
    message = str(info.value)
    assert message.startswith("no credentials")
    for var in ("SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_USERNAME",
                "SALESFORCE_PRIVATE_KEY_FILE"):
        assert var in message


# ------------------------------------------------------------------ JWT bearer


def test_jwt_bearer_flow_on_the_login_host(key: rsa.RSAPrivateKey, key_file: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeSalesforce(jwt_public_key=key.public_key())
    adapter = adapter_for("salesforce://login", fake, jwt_env(key_file))
    adapter.open()
    token_request = fake.requests[0]
    assert token_request.url.host == "login.salesforce.com"
    assert token_request.url.path == "/services/oauth2/token"
    assert b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in \
        token_request.content
    assert b"client_secret" not in token_request.content
    # The fake verified the RS256 signature with the certificate's public key.
    claims = fake.assertions[0]
    assert claims["iss"] == SF_CLIENT_ID and claims["sub"] == SF_USERNAME
    assert claims["aud"] == "https://login.salesforce.com"
    assert 0 < claims["exp"] - time.time() <= 180
    assert {r.url.host for r in fake.requests[1:]} == {httpx.URL(SF_INSTANCE).host}
    assert adapter.platform_version() == "Salesforce Developer Edition, REST API v62.0"
    # Neither the key nor the assertion is logged.
    pem = key_file.read_text()
    body = pem.split("-----")[2].strip().splitlines()[1]
    assert body not in caplog.text and token_request.content.decode() not in caplog.text


def test_jwt_bearer_flow_on_a_sandbox_uses_the_test_audience(key: rsa.RSAPrivateKey,
                                                             key_file: Path) -> None:
    fake = FakeSalesforce(sandbox=True, org_type="Enterprise Edition",
                          jwt_public_key=key.public_key())
    adapter = adapter_for("salesforce://test", fake, jwt_env(key_file))
    adapter.open()
    assert fake.assertions[0]["aud"] == "https://test.salesforce.com"
    assert fake.requests[0].url.host == "test.salesforce.com"


def test_jwt_bearer_flow_on_a_my_domain_host(key: rsa.RSAPrivateKey, key_file: Path) -> None:
    fake = FakeSalesforce(jwt_public_key=key.public_key())
    adapter = adapter_for("salesforce://acme.my.salesforce.com", fake, jwt_env(key_file))
    adapter.open()
    assert fake.requests[0].url.host == "acme.my.salesforce.com"
    assert fake.assertions[0]["aud"] == "https://login.salesforce.com"


def test_jwt_key_from_the_credentials_file(key: rsa.RSAPrivateKey, key_file: Path,
                                           tmp_path: Path) -> None:
    creds = tmp_path / "credentials.toml"
    creds.write_text(f'[salesforce]\nclient_id = "{SF_CLIENT_ID}"\nusername = "{SF_USERNAME}"\n'
                     f'private_key_file = "{key_file}"\n')
    creds.chmod(0o600)
    fake = FakeSalesforce(jwt_public_key=key.public_key())
    adapter = adapter_for("salesforce://login", fake, {"CRMBENCH_CREDENTIALS": str(creds)})
    adapter.open()
    assert fake.assertions[0]["sub"] == SF_USERNAME
    report = adapter.credential_report()
    assert [(f.field, f.set) for f in report.fields] == [
        ("client_id", True), ("username", True), ("private_key_file", True)]


def test_a_key_the_connected_app_does_not_hold_is_refused(key_file: Path) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fake = FakeSalesforce(jwt_public_key=other.public_key())
    adapter = adapter_for("salesforce://login", fake, jwt_env(key_file))
    with pytest.raises(UserError) as info:
        adapter.open()
    message = str(info.value)
    assert "refused the JWT bearer flow (invalid_grant: invalid assertion)" in message
    assert "certificate" in message and "SALESFORCE_PRIVATE_KEY_FILE" in message


def test_a_user_the_app_does_not_pre_authorize_is_refused(key: rsa.RSAPrivateKey,
                                                          key_file: Path) -> None:
    fake = FakeSalesforce(jwt_public_key=key.public_key(), jwt_username="someone@else.test")
    adapter = adapter_for("salesforce://login", fake, jwt_env(key_file))
    with pytest.raises(UserError, match=r"user hasn't approved this consumer.*pre-authorized"):
        adapter.open()


def test_half_a_jwt_configuration_names_what_is_missing(key_file: Path) -> None:
    env = {"SALESFORCE_CLIENT_ID": SF_CLIENT_ID, "SALESFORCE_USERNAME": SF_USERNAME}
    with pytest.raises(UserError, match=r"SALESFORCE_PRIVATE_KEY_FILE is not set"):
        adapter_for("salesforce://login", FakeSalesforce(), env).open()
    env = {"SALESFORCE_USERNAME": SF_USERNAME, "SALESFORCE_PRIVATE_KEY_FILE": str(key_file)}
    with pytest.raises(UserError, match=r"SALESFORCE_CLIENT_ID .* is not set"):
        adapter_for("salesforce://login", FakeSalesforce(), env).open()


def test_unusable_key_files_are_clear_errors(tmp_path: Path, key_file: Path) -> None:
    def refused(path: Path) -> str:
        env = {**jwt_env(path)}
        with pytest.raises(UserError) as info:
            adapter_for("salesforce://login", FakeSalesforce(), env).open()
        return str(info.value)

    assert "is not a file" in refused(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot-a-key-SECRETISH\n"
                       "-----END PRIVATE KEY-----\n")
    garbage.chmod(0o600)
    message = refused(garbage)
    assert "is not an unencrypted PEM private key" in message
    assert "SECRETISH" not in message
    curve = tmp_path / "ec.pem"
    curve.write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    curve.chmod(0o600)
    assert "not RSA" in refused(curve)
    if os.name == "posix":
        key_file.chmod(0o644)
        assert "chmod 600" in refused(key_file)
