"""Read-only smoke tests against real vendor accounts; skipped, with the reason, without them.

They open the adapter (token or signature accepted), read the platform version and the
facts ``crmbench doctor`` shows, and write nothing. The environment is read when this module
is imported, before the folder's fixture hides the vendor variables from the other tests.
"""

from __future__ import annotations

import os

import pytest

from bench.adapters.registry import create_adapter

LIVE = dict(os.environ)


def _missing(*names: str) -> list[str]:
    return [n for n in names if not LIVE.get(n, "").strip()]


def _skip_unless(*names: str) -> pytest.MarkDecorator:
    missing = _missing(*names)
    return pytest.mark.skipif(
        bool(missing), reason=f"live smoke test: set {', '.join(missing)} to run it"
    )


def _smoke(url: str) -> None:
    adapter = create_adapter(url)
    adapter.environ = LIVE  # type: ignore[attr-defined]
    adapter.open()
    try:
        assert adapter.platform_version()
        facts = adapter.target_facts()  # type: ignore[attr-defined]
        assert isinstance(facts, dict)
    finally:
        adapter.close()


@_skip_unless("SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "CRMBENCH_LIVE_SALESFORCE")
def test_salesforce_live() -> None:
    _smoke(LIVE["CRMBENCH_LIVE_SALESFORCE"])


@_skip_unless("SALESFORCE_CLIENT_ID", "SALESFORCE_USERNAME", "SALESFORCE_PRIVATE_KEY_FILE",
              "CRMBENCH_LIVE_SALESFORCE_JWT")
def test_salesforce_jwt_live() -> None:
    _smoke(LIVE["CRMBENCH_LIVE_SALESFORCE_JWT"])


@_skip_unless("FXIAOKE_APP_ID", "FXIAOKE_APP_SECRET", "FXIAOKE_PERMANENT_CODE",
              "FXIAOKE_OPEN_USER_ID")
def test_fxiaoke_live() -> None:
    _smoke(LIVE.get("CRMBENCH_LIVE_FXIAOKE") or "fxiaoke://open.fxiaoke.com")


@_skip_unless("EC_CORP_ID", "EC_APP_ID", "EC_APP_SECRET", "EC_USER_ID")
def test_ec_live() -> None:
    _smoke(LIVE.get("CRMBENCH_LIVE_EC") or "ec://open.workec.com")


@_skip_unless("WECOM_CORP_ID", "WECOM_SECRET")
def test_wecom_live() -> None:
    _smoke("wecom://qyapi.weixin.qq.com")
