"""The demo names its service, so pushed metrics get a meaningful ``job``; the user's name wins."""

from __future__ import annotations

import pytest

from otel_trading.tooling.demo import DEMO_SERVICE_NAME, demo_resource


def test_the_demo_names_its_service_by_default() -> None:
    assert demo_resource().attributes["service.name"] == DEMO_SERVICE_NAME == "otel-trading-demo"


def test_otel_service_name_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "bot-eu")
    assert demo_resource().attributes["service.name"] == "bot-eu"


def test_a_service_name_in_the_resource_attributes_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=bot-us,service.instance.id=1")
    assert demo_resource().attributes["service.name"] == "bot-us"
