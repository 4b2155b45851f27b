"""Ports handed out for embedded servers are distinct within a process."""

from __future__ import annotations

from safeguards.adapters.embedded import free_port


def test_ports_handed_out_before_any_is_bound_are_all_different() -> None:
    # a cluster picks all its ports before any server binds one (client, route, proxy ports)
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
