"""NDIF status: no key, a key with NDIF unreachable, a key with NDIF answering."""

from __future__ import annotations

import contextlib
import socket

import pytest
from nnsight import CONFIG

from perplex.nnsight_adapter import ndif_status


def closed_port() -> int:
    """A local TCP port nobody listens on (connecting is refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def no_key(monkeypatch):
    """No NDIF key anywhere (nnsight's config or the environment)."""
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    monkeypatch.delenv("NDIF_API_KEY", raising=False)


@pytest.fixture
def key(no_key, monkeypatch):
    """An NDIF key in the environment."""
    monkeypatch.setenv("NDIF_API_KEY", "test-key")


def refuse(address, timeout):
    raise OSError(101, "Network is unreachable")


def test_without_a_key_it_says_so_and_does_not_probe(no_key):
    status = ndif_status(connect=refuse)
    assert not status.key_set and status.reachable is None
    assert "No NDIF API key is set" in status.message


def test_with_a_key_and_no_network_it_says_ndif_cannot_be_reached(key, monkeypatch):
    monkeypatch.setattr(CONFIG.API, "HOST", "https://api.ndif.us")
    status = ndif_status(connect=refuse)
    assert status.key_set and status.reachable is False
    assert "NDIF (api.ndif.us:443) cannot be reached" in status.message
    assert "Network is unreachable" in status.message


def test_with_a_key_and_a_closed_port_the_real_probe_fails_fast(key, monkeypatch):
    monkeypatch.setattr(CONFIG.API, "HOST", f"http://127.0.0.1:{closed_port()}")
    status = ndif_status(timeout=2.0)
    assert status.reachable is False and "ConnectionRefusedError" in status.message


def test_with_a_key_and_ndif_answering_it_offers_the_code(key):
    status = ndif_status(connect=lambda address, timeout: contextlib.nullcontext())
    assert status.key_set and status.reachable
    assert "remote=True" in status.message
