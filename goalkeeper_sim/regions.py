"""A second region for the simulated cloud: its own Nova and Neutron, the same projects.

Keystone's projects are global and a region holds only servers, ports and floating IPs, so a
region's world is a world of its own (built from another seed, on other loopback addresses)
whose projects are renamed to the first world's: its servers belong to the same customers, and
Fleio (which serves the first world) knows their owners. The fake's wiring is in
goalkeeper_sim.cloud; this module only builds the world.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar

from goalkeeper.model import PortSpec
from goalkeeper_sim.world import World, build_world

SECOND_REGION = "RegionTwo"
SECOND_ADDRESS_BASE = "127.68.0.0/16"  # clear of the first region's 127.64.0.0/14
SECOND_IPV6_BASE = "fd00:65::/64"
T = TypeVar("T")


def regional_world(
    first: World,
    *,
    seed: int,
    servers_per_project: int = 3,
    services: Sequence[PortSpec] | None = None,
) -> World:
    """Servers for another region of `first`'s cloud, owned by `first`'s projects."""
    other = build_world(
        seed,
        projects=len(first.projects),
        servers_per_project=servers_per_project,
        unknown_project_share=0,
        address_base=SECOND_ADDRESS_BASE,
        ipv6_base=SECOND_IPV6_BASE,
        services=services,
    )
    renamed = {p.id: q.id for p, q in zip(other.projects, first.projects, strict=True)}
    renamed[other.admin_project_id] = first.admin_project_id

    def owned(items: tuple[T, ...]) -> tuple[T, ...]:
        return tuple(_owned(item, renamed) for item in items)

    return dataclasses.replace(
        other,
        admin_project_id=first.admin_project_id,
        projects=first.projects,
        clients=first.clients,
        services=first.services,
        networks=owned(other.networks),
        ports=owned(other.ports),
        servers=owned(other.servers),
        floating_ips=owned(other.floating_ips),
        security_groups=owned(other.security_groups),
    )


def _owned(item: T, renamed: dict[str, str]) -> T:
    record: Any = item
    return dataclasses.replace(record, project_id=renamed.get(record.project_id, record.project_id))  # type: ignore[no-any-return]
