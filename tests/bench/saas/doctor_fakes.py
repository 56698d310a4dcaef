"""``crmbench doctor`` for each vendor, with made-up credentials, against the test fakes.

    python -m tests.bench.saas.doctor_fakes [--json]

prints what a run would measure on each platform, at which rate and under which quotas,
exactly as ``crmbench doctor --target URL`` prints it against a live account (the fakes
answer in the vendors' documented shapes; no network is used).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from bench.adapters import doctor
from bench.adapters.base import Adapter
from bench.adapters.registry import create_adapter
from bench.scenarios.config import load_scenario
from tests.bench.saas.fake_ec import (
    EC_APP_ID,
    EC_APP_SECRET,
    EC_CORP_ID,
    EC_USER_ID,
    WECOM_CORP_ID,
    WECOM_SECRET,
    FakeEC,
    FakeWeCom,
)
from tests.bench.saas.fake_fxiaoke import (
    FX_APP_ID,
    FX_APP_SECRET,
    FX_OPEN_USER_ID,
    FX_PERMANENT_CODE,
    FakeFxiaoke,
)
from tests.bench.saas.fake_salesforce import SF_CLIENT_ID, SF_CLIENT_SECRET, SF_LOGIN_HOST
from tests.bench.saas.fake_salesforce_dims import FakeSalesforceOrg

# (target, credentials, the fake that answers)
VENDORS: list[tuple[str, dict[str, str], Callable[[], Any]]] = [
    (f"salesforce://{SF_LOGIN_HOST}",
     {"SALESFORCE_CLIENT_ID": SF_CLIENT_ID, "SALESFORCE_CLIENT_SECRET": SF_CLIENT_SECRET},
     FakeSalesforceOrg),
    ("fxiaoke://open.fxiaoke.com",
     {"FXIAOKE_APP_ID": FX_APP_ID, "FXIAOKE_APP_SECRET": FX_APP_SECRET,
      "FXIAOKE_PERMANENT_CODE": FX_PERMANENT_CODE, "FXIAOKE_OPEN_USER_ID": FX_OPEN_USER_ID},
     FakeFxiaoke),
    ("ec://open.workec.com",
     {"EC_CORP_ID": EC_CORP_ID, "EC_APP_ID": EC_APP_ID, "EC_APP_SECRET": EC_APP_SECRET,
      "EC_USER_ID": EC_USER_ID},
     # The fake checks the signed timestamp against its own clock: today's.
     lambda: FakeEC(now_ms=int(time.time() * 1000))),
    ("wecom://qyapi.weixin.qq.com",
     {"WECOM_CORP_ID": WECOM_CORP_ID, "WECOM_SECRET": WECOM_SECRET},
     lambda: FakeWeCom(contacts={"zhangsan": ["wmA1", "wmA2", "wmA3"], "lisi": ["wmB1"]})),
]


@contextmanager
def answered_by(fake: Any, environ: Mapping[str, str]) -> Iterator[None]:
    """doctor's adapters built with ``environ`` and the fake's transport."""
    original = doctor.create_adapter

    def create(url: str) -> Adapter:
        adapter = create_adapter(url, env=dict(environ))
        adapter.transport = fake.transport()  # type: ignore[attr-defined]
        adapter.sleep = lambda s: None  # type: ignore[attr-defined]
        return adapter

    doctor.create_adapter = create  # type: ignore[assignment]
    try:
        yield
    finally:
        doctor.create_adapter = original  # type: ignore[assignment]


def reports() -> list[dict[str, Any]]:
    """doctor's report of each vendor, for the standard mixed scenario."""
    scenario = load_scenario("mixed", profile="standard")
    out = []
    for target, environ, make_fake in VENDORS:
        with answered_by(make_fake(), environ):
            out.append(doctor.diagnose(target, scenario))
    return out


def main(argv: list[str]) -> int:
    found = reports()
    if "--json" in argv:
        print(json.dumps(found, indent=2, default=str))
        return 0
    console = Console(width=150, soft_wrap=True)
    for report in found:
        doctor.print_doctor(report, console)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
