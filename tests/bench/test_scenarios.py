"""Scenario files: validation, bases, and the shipped scenarios."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.errors import UserError
from bench.scenarios.config import available, load_scenario
from bench.scenarios.runner import _chosen


def test_shipped_scenarios_load_in_every_profile() -> None:
    assert {"mixed", "agent", "events"} <= set(available())
    for name in available():
        for profile in ("quick", "standard", "full"):
            scenario = load_scenario(name, profile=profile)
            if scenario.workload:
                assert (scenario.users, scenario.rate) == (500, 1000)
            else:
                # Probes only: the base's load is not inherited, since none is sent.
                assert (scenario.users, scenario.rate, scenario.mix) == (0, 0.0, {})
                assert scenario.engines or scenario.probes
            assert scenario.phases.measure_s > 0
            # Every probe of the file gets its options as the run would build them.
            assert _chosen(scenario) or not (scenario.probes or scenario.engines)


def test_agent_and_events_extend_the_mixed_workload() -> None:
    mixed = load_scenario("mixed", profile="quick")
    agent = load_scenario("agent", profile="quick")
    events = load_scenario("events", profile="quick")
    assert agent.mix == mixed.mix and events.mix == mixed.mix
    assert agent.probes == {"agent_rate": 20.0}
    assert events.probes["event_rate"] == 500.0
    assert mixed.probes == {}
    # The digest covers the base too: editing mixed.toml changes agent's identity.
    assert agent.sha256 != mixed.sha256


def test_a_user_file_can_extend_a_shipped_scenario(tmp_path: Path) -> None:
    path = tmp_path / "light.toml"
    path.write_text('version = 1\nbase = "mixed"\nname = "light"\nusers = 50\nrate = 100\n'
                    "[mix]\ncustomer_360 = 0\n")
    scenario = load_scenario(str(path), profile="quick")
    assert (scenario.users, scenario.rate) == (50, 100)
    assert "customer_360" not in scenario.mix
    assert scenario.mix["search_customers"] == 20


def test_base_cycles_and_incomplete_files_are_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text(f'version = 1\nname = "a"\nbase = "{b}"\n')
    b.write_text(f'version = 1\nname = "b"\nbase = "{a}"\n')
    with pytest.raises(UserError, match="cycle"):
        load_scenario(str(a))
    lone = tmp_path / "lone.toml"
    lone.write_text('version = 1\nname = "lone"\nusers = 5\n')
    with pytest.raises(UserError, match="missing rate, mix, profiles"):
        load_scenario(str(lone))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('version = 2\nname = "x"\n', "version"),
        ('version = 1\nname = "x"\n[probes]\nagent_rate = -1\n', "probes.agent_rate"),
        ('version = 1\nname = "x"\n[engines]\nworkflow_cap = 0\n', "engines.workflow_cap"),
        ('version = 1\nname = "x"\n[engines]\nteleport = true\n', "engines.teleport"),
        ('version = 1\nname = "x"\n[engines]\nsla = 3\n', "engines.sla"),
        ('version = 1\nname = "x"\n[mix]\nteleport = 1\n', "mix"),
        ('version = 1\nname = "x"\nusers = "many"\n', "users"),
        ("version = 1\nname = [\n", "not valid TOML"),
    ],
)
def test_invalid_files_name_the_problem(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=where.replace(".", r"\.")):
        load_scenario(str(path))
