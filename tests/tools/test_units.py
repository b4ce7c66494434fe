"""The tools' pure parts: table layout, escaping, where the API and its key come from."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edgesense.common.config import BrokerUrl
from edgesense.common.errors import ConfigurationError
from edgesense.tools.api_client import ApiTarget
from edgesense.tools.arguments import comma_list
from edgesense.tools.errors import UsageError
from edgesense.tools.output import clean, column, details, table
from edgesense.tools.sim_publisher import Broker
from edgesense.tools.simulate import SpikeWindow, spike_window


def test_table_aligns_columns_and_shows_missing_values_as_dashes() -> None:
    rows = [
        {"id": "wh_1", "events": ["device.data", "device.alert"], "note": ""},
        {"id": "wh_long_id", "events": [], "note": "x"},
    ]
    lines = table(rows, [column("ID", "id"), column("EVENTS", "events"), column("NOTE", "note")])
    assert lines == [
        "ID          EVENTS                     NOTE",
        "wh_1        device.data, device.alert  -",
        "wh_long_id  -                          x",
    ]


def test_details_align_values() -> None:
    assert details([("url", "https://x"), ("webhookId", "wh_1"), ("enabled", True)]) == [
        "url:       https://x",
        "webhookId: wh_1",
        "enabled:   yes",
    ]


def test_clean_escapes_control_characters() -> None:
    assert clean("a\x1b[31mb\nc\x9bd") == "a\\x1b[31mb\\x0ac\\x9bd"
    assert clean({"b": 1, "a": "\t"}) == '{"a":"\\t","b":1}'
    assert clean(None) == "-"
    assert clean(0) == "0"


def test_comma_list() -> None:
    assert comma_list(" device.data, ,device.alert ") == ["device.data", "device.alert"]


def test_api_target_options_then_environment_then_dev_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"EDGESENSE_API_URL": "http://env:1/", "EDGESENSE_API_KEY": "env-key"}
    assert ApiTarget.resolve("https://opt:2", "opt-key", env) == ApiTarget(
        "https://opt:2", "opt-key"
    )
    assert ApiTarget.resolve(None, None, env) == ApiTarget("http://env:1", "env-key")
    with pytest.raises(UsageError, match="no API key"):
        ApiTarget.resolve(None, None, {"EDGESENSE_HTTP_ADDR": "127.0.0.1:9999"})
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "dev-api-key").write_text("esk_dev_abc\n")
    assert ApiTarget.resolve(None, None, {"EDGESENSE_HTTP_ADDR": "127.0.0.1:9999"}) == ApiTarget(
        "http://127.0.0.1:9999", "esk_dev_abc"
    )
    assert ApiTarget.resolve(None, None, {}).url == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("url", "problem"), [("http://h", "mqtt:// or mqtts://"), ("mqtt://h:port", "bad port")]
)
def test_the_simulator_reads_a_broker_url_as_the_bridge_does(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as bridge:
        BrokerUrl.parse(url)
    with pytest.raises(UsageError) as tool:
        Broker.parse(url)
    assert problem in tool.value.message
    assert tool.value.message == bridge.value.message
    shown = Broker.parse("mqtts://user:pw@[::1]:8884").url
    assert shown == "mqtts://[::1]:8884"  # no credentials on screen


def test_a_spike_defaults_to_the_middle_third_of_the_run() -> None:
    def window(**given: object) -> SpikeWindow | None:
        options: dict[str, object] = {
            "spike": [("temperature", 95.0)],
            "spike_after": None,
            "spike_for": None,
            "duration": None,
            "count": None,
            "rate": 5.0,
        }
        return spike_window(argparse.Namespace(**(options | given)))

    assert window(duration=30.0) == SpikeWindow({"temperature": 95.0}, 10.0, 10.0, 30.0)
    assert window(count=60) == SpikeWindow({"temperature": 95.0}, 4.0, 4.0, 12.0)
    assert window() == SpikeWindow({"temperature": 95.0}, 10.0, 10.0, None)
    chosen = window(duration=30.0, spike_after=2.0, spike_for=25.0)
    assert chosen == SpikeWindow({"temperature": 95.0}, 2.0, 25.0, 30.0)
    assert chosen is not None
    assert chosen.describe() == "spike temperature=95 from 2 s to 27 s of the run"
    to_the_end = window(duration=30.0, spike_after=2.0, spike_for=28.0)
    assert to_the_end is not None
    assert to_the_end.describe().endswith(
        "to 30 s of the run (to its end: the readings do not come back)"
    )
    assert (chosen.at(1.99), chosen.at(2.0), chosen.at(26.99), chosen.at(27.0)) == (
        {},
        {"temperature": 95.0},
        {"temperature": 95.0},
        {},
    )
    assert window(spike=[]) is None
