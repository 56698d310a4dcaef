"""The Salesforce adapter's own measurements of the engine probes' dimensions.

The harness's workflow, SLA and pack probes speak in documents Salesforce has no
counterpart for (node/edge graphs with parallel branches, SLAs on lead fields and
opportunity stages, a named scenario pack with PPAP records). The adapter answers them
with ``own_probe``, which ``bench.probes.registry.run_probe`` asks first, measuring the same
dimensions with Salesforce's own means, each by an effect the harness observes:

- ``workflow`` -> ``salesforce_flows``: the largest autolaunched flow created, activated
  and run whose last element's write is read back;
- ``sla`` -> ``salesforce_sla``: the shortest entitlement milestone accepted, and its
  violation observed on a Case;
- ``pack`` -> a managed package version (``SALESFORCE_PACKAGE_VERSION_ID``, 04t...)
  installed through the Tooling API's PackageInstallRequest; the time runs until the
  Tooling API lists it among the installed packages, then it is uninstalled again.

The other capabilities these probes decide get the adapter's declaration as their verdict
(``unsupported`` or ``not-measured`` with its note): never ``pass`` on the adapter's word.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from bench.adapters.saas.common import json_or_empty
from bench.adapters.saas.salesforce_core import SalesforceCore
from bench.adapters.saas.salesforce_flows import measure_flows
from bench.adapters.saas.salesforce_sla import measure_milestones
from bench.errors import UserError
from bench.probes.registry import Findings, Probe, ProbeContext
from bench.probes.verdict import Verdict, verdict

PACKAGE_ENV = "SALESFORCE_PACKAGE_VERSION_ID"
_PACKAGE_ID = re.compile(r"04t[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?")
INSTALL_POLL_S = 5.0
# A managed package install commonly takes minutes; the scenario's timeout is raised to this.
INSTALL_TIMEOUT_S = 1800.0
DEFAULT_FLOW_CAP = 100_000
NO_PACKAGE = (
    "Salesforce has no scenario pack to switch on: industry features are managed packages "
    "(installed through the Tooling API's PackageInstallRequest, by a 04t package version "
    "id) or licensed clouds provisioned by Salesforce. Set " + PACKAGE_ENV + " to a package "
    "version to time its install; without it nothing is installed")


class SalesforceEngines(SalesforceCore):
    """``own_probe`` for the workflow, SLA and pack probes (see the module)."""

    def own_probe(self, probe: Probe[Any], ctx: ProbeContext, options: Any) -> Findings | None:
        measure: dict[str, Callable[[ProbeContext, Any], tuple[dict[str, Any],
                                                               dict[str, Verdict]]]] = {
            "workflow": self._probe_flows, "sla": self._probe_milestones,
            "pack": self._probe_package}
        handler = measure.get(probe.name)
        if handler is None:
            return None
        dim, found = handler(ctx, options)
        return dim, {cid: found.get(cid) or self._declared_verdict(cid)
                     for cid in probe.capabilities}

    def _declared_verdict(self, cid: str) -> Verdict:
        cap = self.capabilities[cid]
        if cap.support == "unsupported":
            return verdict("unsupported", reason=cap.note)
        return verdict("not-measured", reason=cap.note or "not probed on Salesforce")

    def _probe_flows(self, ctx: ProbeContext, options: Any
                     ) -> tuple[dict[str, Any], dict[str, Verdict]]:
        cap = int(getattr(options, "cap", DEFAULT_FLOW_CAP))
        return measure_flows(self, ctx.run_id, cap, ctx.say)

    def _probe_milestones(self, ctx: ProbeContext, _options: Any
                          ) -> tuple[dict[str, Any], dict[str, Verdict]]:
        return measure_milestones(self, ctx.run_id, ctx.say), {}

    # ------------------------------------------------------------------ packages

    def _package_version(self) -> str | None:
        raw = self._env().get(PACKAGE_ENV, "").strip()
        if raw and not _PACKAGE_ID.fullmatch(raw):
            raise UserError(f"{PACKAGE_ENV} must be a package version id (04t followed by 12 "
                            f"or 15 letters and digits), got {raw!r}")
        return raw or None

    def _installed(self, version: str) -> bool:
        rows = self._tooling_query(
            "SELECT Id, SubscriberPackageVersionId FROM InstalledSubscriberPackage")
        return any(str(r.get("SubscriberPackageVersionId", ""))[:15] == version[:15]
                   for r in rows)

    def _tooling_poll(self, path: str, done: Callable[[dict[str, Any]], bool],
                      timeout_s: float) -> dict[str, Any]:
        sleep, deadline = self._sleep_fn(), time.monotonic() + timeout_s
        while True:
            body = json_or_empty(self._api("GET", f"{self._tooling}/sobjects/{path}",
                                           setup=True))
            row = body if isinstance(body, dict) else {}
            if done(row) or time.monotonic() > deadline:
                return row
            sleep(INSTALL_POLL_S)

    def _probe_package(self, ctx: ProbeContext, options: Any
                       ) -> tuple[dict[str, Any], dict[str, Verdict]]:
        dim: dict[str, Any] = {"capability": "pack.enable_time", "unit": "s", "value": None,
                               "ends_when": "the Tooling API lists the version among the "
                                            "org's installed packages"}
        version = self._package_version()
        if version is None:
            return {**dim, "status": "not-measured", "reason": NO_PACKAGE}, {}
        dim["package_version"] = version
        if self._installed(version):
            return {**dim, "status": "not-measured", "reason": (
                f"package version {version} is installed already: an install is timed from "
                "an org without it; uninstall it first")}, {}
        timeout = max(float(getattr(options, "timeout_s", 0.0)), INSTALL_TIMEOUT_S)
        t0 = time.perf_counter()
        resp = self._api("POST", f"{self._tooling}/sobjects/PackageInstallRequest",
                         setup=True, json={"SubscriberPackageVersionKey": version,
                                           "NameConflictResolution": "Block",
                                           "SecurityType": "None"})
        request = str(self._expect(resp, "PackageInstallRequest")["id"])
        row = self._tooling_poll(f"PackageInstallRequest/{request}",
                                 lambda r: r.get("Status") in ("SUCCESS", "ERROR"), timeout)
        seen = row.get("Status") == "SUCCESS" and self._installed(version)
        elapsed = round(time.perf_counter() - t0, 3)
        dim["server_reported"] = {"source": "server-reported", "status": row.get("Status"),
                                  "errors": row.get("Errors")}
        if not seen:
            return {**dim, "status": "fail", "reason": (
                f"install request {request} ended {row.get('Status') or 'unfinished'} and the "
                f"version is not listed as installed after {elapsed} s")}, {}
        ctx.say(f"salesforce package {version}: installed and listed after {elapsed} s")
        dim.update(value=elapsed, status="pass", uninstall=self._uninstall(version))
        return dim, {}

    def _uninstall(self, version: str) -> str:
        resp = self._api("POST", f"{self._tooling}/sobjects/SubscriberPackageVersionUninstall"
                         "Request", setup=True, json={"SubscriberPackageVersionId": version})
        body = json_or_empty(resp)
        if resp.status_code >= 300 or not isinstance(body, dict) or "id" not in body:
            return f"not uninstalled: HTTP {resp.status_code}; remove it in Setup"
        row = self._tooling_poll(f"SubscriberPackageVersionUninstallRequest/{body['id']}",
                                 lambda r: r.get("Status") in ("Success", "Error"),
                                 INSTALL_TIMEOUT_S)
        return str(row.get("Status") or "unfinished")
