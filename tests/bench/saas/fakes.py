"""In-memory stand-ins for the vendor APIs, replaying their documented request/response shapes.

Each fake is an ``httpx.MockTransport`` handler that keeps the requests it saw, so tests can
check what an adapter sent as well as how it read the answers. Each vendor's fake lives in
a module of its own (``fake_salesforce``, ``fake_fxiaoke``, ``fake_ec``); the Salesforce
names stay importable from here.
"""

from __future__ import annotations

from tests.bench.saas.fake_salesforce import (
    SF_CLIENT_ID,
    SF_CLIENT_SECRET,
    SF_INSTANCE,
    SF_LOGIN_HOST,
    FakeSalesforce,
    V,
    sf_error,
)

__all__ = ["SF_CLIENT_ID", "SF_CLIENT_SECRET", "SF_INSTANCE", "SF_LOGIN_HOST", "FakeSalesforce",
           "V", "sf_error"]
