"""`edgesense rules …` against the real registry and REST API, as a user runs
them: a subprocess with EDGESENSE_API_URL and EDGESENSE_API_KEY, reading
stdout, stderr and the exit code."""

from __future__ import annotations

import json
import re

from tests.conftest import key_of
from tests.integration.conftest import Api
from tests.tools.conftest import run_cli

RULE_ID = re.compile(r"rule_[a-z2-7]{20}")


def env_of(api: Api, project: str = "project-a") -> dict[str, str]:
    return {"EDGESENSE_API_URL": api.server.url, "EDGESENSE_API_KEY": key_of(api.keys, project)}


def fields_of(lines: list[str]) -> dict[str, str]:
    return dict(re.split(r":\s+", line, maxsplit=1) for line in lines)


async def test_create_list_get_update_delete(api: Api) -> None:
    env = env_of(api)
    created = await run_cli(
        "rules", "create", "--name", "Boiler too hot", "--field", "temperature",
        "--operator", "gt", "--threshold", "80", "--clear-threshold", "75", "--count", "2",
        "--severity", "critical", "--device-ids", "edge-node-321, edge-node-322",
        env=env,
    )  # fmt: skip
    assert created.code == 0, created.err
    fields = fields_of(created.lines)
    rule = fields["ruleId"]
    assert RULE_ID.fullmatch(rule)
    assert fields["condition"] == "temperature gt 80 (clears at 75)"
    assert (fields["count"], fields["severity"], fields["enabled"]) == ("2", "critical", "yes")
    assert fields["deviceIds"] == "edge-node-321, edge-node-322"
    assert (fields["gatewayIds"], fields["version"]) == ("all", "1")

    ranged = await run_cli(
        "rules", "create", "--name", "Pressure band", "--field", "hydraulics.pressure",
        "--operator", "outside", "--threshold", "1.5", "--threshold-high", "4.25",
        "--for-seconds", "60", "--disabled", "--json",
        env=env,
    )  # fmt: skip
    assert ranged.code == 0, ranged.err
    band = json.loads(ranged.out)
    assert (band["thresholdHigh"], band["forSeconds"], band["enabled"]) == (4.25, 60, False)

    listed = await run_cli("rules", "list", env=env)
    assert listed.code == 0, listed.err
    header = listed.lines[0]
    assert header.split() == [
        *("RULE", "ID", "ENABLED", "SEVERITY", "CONDITION", "COUNT", "FOR", "DEVICES"),
        *("VERSION", "NAME"),
    ]
    first, second = listed.lines[1:]  # oldest first
    assert first.startswith(rule)
    assert first.endswith("Boiler too hot")
    assert second.startswith(band["ruleId"])
    assert second.endswith("Pressure band")
    assert first.index("critical") == header.index("SEVERITY")
    assert "hydraulics.pressure outside [1.5, 4.25]" in second
    as_json = await run_cli("rules", "list", "--json", env=env)
    assert [r["ruleId"] for r in json.loads(as_json.out)["rules"]] == [rule, band["ruleId"]]

    updated = await run_cli("rules", "update", rule, "--threshold", "85", "--disabled", env=env)
    assert updated.code == 0, updated.err
    fields = fields_of(updated.lines)
    assert fields["condition"] == "temperature gt 85 (clears at 75)"
    assert (fields["enabled"], fields["version"], fields["count"]) == ("no", "2", "2")
    renamed = await run_cli("rules", "update", rule, "--name", "Hot", env=env)
    assert fields_of(renamed.lines)["version"] == "2"  # a name is not the condition
    enabled = await run_cli("rules", "update", rule, "--enabled", env=env)
    assert fields_of(enabled.lines)["version"] == "3"  # enabling is
    got = await run_cli("rules", "get", rule, env=env)
    assert got.code == 0, got.err
    assert fields_of(got.lines) == fields_of(enabled.lines)
    assert (fields_of(got.lines)["name"], fields_of(got.lines)["enabled"]) == ("Hot", "yes")

    deleted = await run_cli("rules", "delete", rule, env=env)
    assert deleted.code == 0, deleted.err
    assert deleted.lines == [f"ruleId: {rule}", "status: deleted"]
    gone = await run_cli("rules", "get", rule, env=env)
    assert (gone.code, gone.out) == (1, "")
    assert gone.err == f"error: rule {rule} not found (HTTP 404)\n"


async def test_a_bad_rule_exits_1_with_the_apis_message_naming_the_field(api: Api) -> None:
    bad = await run_cli(
        "rules", "create", "--name", "Too cold", "--field", "temperature", "--operator", "lt",
        "--threshold", "5", "--clear-threshold", "2",
        env=env_of(api),
    )  # fmt: skip
    assert (bad.code, bad.out) == (1, "")
    assert bad.err.startswith("error: clearThreshold: is 2, below threshold (5)")
    assert bad.err.endswith("(HTTP 400)\n")
    empty = await run_cli("rules", "list", env=env_of(api))
    assert (empty.code, empty.out, empty.err) == (0, "", "no rules\n")


async def test_usage_errors_exit_2(api: Api) -> None:
    for args in [
        ("rules", "create", "--name", "x", "--field", "t", "--operator", "gt"),  # no threshold
        ("rules", "create", "--name", "x", "--field", "t", "--operator", "gt", "--threshold",
         "nan"),
        ("rules", "update", "rule_x"),  # nothing to change
        ("rules", "update", "rule_x", "--enabled", "--disabled"),
    ]:  # fmt: skip
        result = await run_cli(*args, env=env_of(api))
        assert result.code == 2, (args, result.err)
        assert result.out == ""
    nothing = await run_cli("rules", "update", "rule_x", env=env_of(api))
    assert "nothing to update" in nothing.err
