"""The unit suite's own guard: a unit test that starts a process or uses the network fails."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def test_listening_on_the_network_is_refused() -> None:
    with socket.socket() as s, pytest.raises(RuntimeError, match="tests/integration"):
        s.bind(("127.0.0.1", 0))


def test_connecting_over_the_network_is_refused() -> None:
    with socket.socket() as s, pytest.raises(RuntimeError, match="tests/integration"):
        s.connect(("127.0.0.1", 9))


def test_starting_a_process_is_refused() -> None:
    with pytest.raises(RuntimeError, match="tests/integration"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_forking_is_refused() -> None:
    with pytest.raises(RuntimeError, match="tests/integration"):
        os.fork()


def test_local_socket_pairs_still_work_for_asyncio() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"x")
        assert b.recv(1) == b"x"
