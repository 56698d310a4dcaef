"""Vendor adapter tests run without credentials: every vendor variable is removed."""

from __future__ import annotations

from pathlib import Path

import pytest

VENDOR_VARS = (
    "SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_USERNAME",
    "SALESFORCE_PRIVATE_KEY_FILE", "FXIAOKE_APP_ID", "FXIAOKE_APP_SECRET",
    "FXIAOKE_PERMANENT_CODE", "FXIAOKE_OPEN_USER_ID", "EC_CORP_ID", "EC_APP_ID",
    "EC_APP_SECRET", "EC_USER_ID", "WECOM_CORP_ID", "WECOM_SECRET", "CRMBENCH_RUN_ID",
)


@pytest.fixture(autouse=True)
def no_vendor_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credential reaches a test unless the test sets it, and no real file is read."""
    for var in VENDOR_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CRMBENCH_CREDENTIALS", str(tmp_path / "no-credentials.toml"))
