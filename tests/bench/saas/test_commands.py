"""doctor and cleanup command functions, through a small typer app and CliRunner."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import typer
from typer.testing import CliRunner

from bench.adapters import commands
from bench.adapters.base import RunPlan
from bench.adapters.saas.salesforce import SalesforceAdapter
from bench.errors import UserError
from tests.bench.saas.fakes import SF_CLIENT_ID, SF_CLIENT_SECRET, SF_LOGIN_HOST, FakeSalesforce

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("doctor")(commands.doctor_cmd)
    app.command("cleanup")(commands.cleanup_cmd)
    return app


def test_doctor_without_credentials_names_the_variables_and_exits_4() -> None:
    result = runner.invoke(_app(), ["doctor", "--target", "salesforce://acme.my.salesforce.com"])
    assert result.exit_code == 4
    assert "SALESFORCE_CLIENT_ID" in result.stderr and "missing" in result.stderr
    assert "no-credentials" in result.stderr
    assert result.stdout == ""


def test_doctor_json_goes_to_stdout() -> None:
    result = runner.invoke(_app(), ["doctor", "-t", "fxiaoke://open.fxiaoke.com", "--json"])
    assert result.exit_code == 4
    report = json.loads(result.stdout)
    assert report["status"] == "no-credentials"
    assert report["message"].startswith("no credentials")
    assert {c["env"] for c in report["credentials"]} == {
        "FXIAOKE_APP_ID", "FXIAOKE_APP_SECRET", "FXIAOKE_PERMANENT_CODE", "FXIAOKE_OPEN_USER_ID"}
    assert not any(c["set"] for c in report["credentials"])
    assert report["guarded"] is True and report["platform"] == "fxiaoke"


def test_doctor_reports_not_measurable_platforms() -> None:
    result = runner.invoke(_app(), ["doctor", "--target", "dabei://", "--json"])
    assert result.exit_code == 4
    report = json.loads(result.stdout)
    assert report["status"] == "not-measurable"
    assert report["capabilities"] == {"not-measurable": 26}


def _fake_salesforce(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[FakeSalesforce, Callable[[str], SalesforceAdapter]]:
    fake = FakeSalesforce()
    env = {"SALESFORCE_CLIENT_ID": SF_CLIENT_ID, "SALESFORCE_CLIENT_SECRET": SF_CLIENT_SECRET}
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    def create(url: str) -> SalesforceAdapter:
        adapter = SalesforceAdapter.from_url(url)
        adapter.transport = fake.transport()
        adapter.sleep = lambda s: None
        return adapter

    monkeypatch.setattr("bench.adapters.doctor.create_adapter", create)
    monkeypatch.setattr("bench.adapters.commands.create_adapter", create)
    return fake, create


def test_doctor_on_a_reachable_org_reports_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_salesforce(monkeypatch)
    result = runner.invoke(_app(), ["doctor", "-t", f"salesforce://{SF_LOGIN_HOST}", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "ok"
    assert report["facts"]["org_type"] == "Developer Edition"
    assert report["facts"]["api_daily_remaining"] > 0
    assert all(c["set"] and c["source"].startswith("env ") for c in report["credentials"])
    assert SF_CLIENT_SECRET not in result.stdout + result.stderr


def test_cleanup_deletes_a_runs_records(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, create = _fake_salesforce(monkeypatch)
    seeder = create(f"salesforce://{SF_LOGIN_HOST}?customers=5")
    seeder.open()
    seeder.preflight(RunPlan(run_id="abc123", scenario="mixed", estimated_calls=10))
    result = runner.invoke(_app(), ["cleanup", "-t", f"salesforce://{SF_LOGIN_HOST}",
                                    "--run-id", "abc123", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "target": f"salesforce://{SF_LOGIN_HOST}", "run_id": "abc123", "deleted": 10}
    assert not fake.records["Account"]


def test_cleanup_refuses_unguarded_targets_and_bad_run_ids() -> None:
    result = runner.invoke(_app(), ["cleanup", "--target", "noop://", "--run-id", "abc"])
    assert isinstance(result.exception, UserError)
    assert "not guarded" in str(result.exception)
    result = runner.invoke(_app(), ["cleanup", "--target", "noop://", "--run-id", "a b"])
    assert isinstance(result.exception, UserError)
