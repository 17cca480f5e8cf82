"""Unit tests: no processes and no network. Enforced, so a test that needs either fails here."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from ..conftest import HOT_PATHS, use_hot_path

_INET = (socket.AF_INET, socket.AF_INET6)


def _refuse(what: str) -> Any:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"unit tests may not {what}: move this test to tests/integration")

    return refused


@pytest.fixture(autouse=True)
def _no_processes_or_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_bind, real_connect = socket.socket.bind, socket.socket.connect

    def bind(self: socket.socket, address: Any) -> None:
        if self.family in _INET:
            raise RuntimeError("unit tests may not listen on the network: move this test to tests/integration")
        real_bind(self, address)

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in _INET:
            raise RuntimeError("unit tests may not connect over the network: move this test to tests/integration")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "bind", bind)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("start processes"))
    monkeypatch.setattr(os, "fork", _refuse("fork"))
    yield


@pytest.fixture(scope="module", params=HOT_PATHS)
def on_each_hot_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """A module's tests on each of the components' hot paths in turn (``pytestmark = usefixtures(...)``);
    module-scoped, so hypothesis tests may use it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_hot_path(request.param, monkeypatch)
        yield request.param
