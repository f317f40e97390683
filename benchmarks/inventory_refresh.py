"""One inventory refresh of a large simulated cloud: time, HTTP requests and peak memory.

The simulated OpenStack and Fleio (HTTP fakes only: no port listeners at this scale) run in a
child process, so the peak RSS and the CPU time printed are the refresh's own: the real
openstacksdk and aiohttp clients, the join with the owners, and the cached inventory.
Everything stays on 127.0.0.1.

    python -m benchmarks.inventory_refresh [--projects 2000] [--servers-per-project 5]
        [--page-size 1000] [--fleio-page-size 500]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import time
from collections import Counter
from multiprocessing.connection import Connection

from pydantic import SecretStr

from goalkeeper.config import FleioSettings, InventorySettings, OpenStackSettings
from goalkeeper.inventory.cloud import CloudInventory
from goalkeeper_sim.cloud import SimulatedCloud
from goalkeeper_sim.world import build_world


def serve(channel: Connection, projects: int, per_project: int, page_size: int) -> None:
    """The child: build the world, serve it, answer 'counts' and 'stop' over `channel`."""
    asyncio.run(_serve(channel, projects, per_project, page_size))


async def _serve(channel: Connection, projects: int, per_project: int, page_size: int) -> None:
    started = time.perf_counter()
    world = build_world(
        2026,
        projects=projects,
        servers_per_project=per_project,
        floating_ip_share=1.0,
        public_fixed_share=0.0,
        unassociated_floating_ips=0,
    )
    built = time.perf_counter()
    async with SimulatedCloud(world, page_size=page_size, listeners=False) as cloud:
        loaded = time.perf_counter()
        channel.send(
            {
                "env": cloud.os_env(),
                "fleio_url": cloud.fleio_url,
                "fleio_token": cloud.fleio_token,
                "servers": len(world.servers),
                "floating_ips": len(world.floating_ips),
                "ports": len(world.ports),
                "projects": len(world.projects),
                "world_seconds": built - started,
                "index_seconds": loaded - built,
            }
        )
        loop = asyncio.get_running_loop()
        while (command := await loop.run_in_executor(None, channel.recv)) != "stop":
            if command == "counts":
                channel.send(dict(cloud.openstack.requests + cloud.fleio.requests))


async def refresh(facts: dict[str, object], fleio_page_size: int) -> tuple[int, float, float]:
    settings = InventorySettings(
        openstack=OpenStackSettings(api_timeout=300),
        fleio=FleioSettings(
            url=str(facts["fleio_url"]),
            token=SecretStr(str(facts["fleio_token"])),
            page_size=fleio_page_size,
        ),
    )
    source = CloudInventory(settings)
    started, cpu_started = time.perf_counter(), time.process_time()
    inventory = await source.fetch()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    await source.aclose()
    return len(inventory.targets), seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=2000)
    parser.add_argument("--servers-per-project", type=int, default=5)
    parser.add_argument("--page-size", type=int, default=1000, help="OpenStack max page size")
    parser.add_argument("--fleio-page-size", type=int, default=500)
    args = parser.parse_args()

    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(
        target=serve, args=(theirs, args.projects, args.servers_per_project, args.page_size)
    )
    child.start()
    try:
        facts = ours.recv()
        env = facts["env"]
        for name in [n for n in os.environ if n.startswith("OS_")]:
            del os.environ[name]
        os.environ.update(env)
        os.environ["OS_CLIENT_CONFIG_FILE"] = "/nonexistent/clouds.yaml"  # only the OS_* above
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        targets, seconds, cpu = asyncio.run(refresh(facts, args.fleio_page_size))
        rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ours.send("counts")
        counts = Counter(ours.recv())
    finally:
        ours.send("stop")
        child.join(timeout=30)
    print(
        f"world: {facts['servers']} servers, {facts['floating_ips']} floating IPs, "
        f"{facts['ports']} ports, {facts['projects']} projects "
        f"(built in {facts['world_seconds']:.1f} s, indexed by the fakes in "
        f"{facts['index_seconds']:.1f} s)"
    )
    print(f"refresh: {targets} targets in {seconds:.2f} s ({cpu:.2f} s of CPU, all threads)")
    print(f"HTTP requests: {sum(counts.values())} in all")
    for path, count in sorted(counts.items()):
        print(f"  {count:5d}  {path}")
    print(f"peak RSS of the refreshing process: {rss_peak / 1024:.0f} MiB "
          f"(before the refresh: {rss_before / 1024:.0f} MiB)")  # fmt: skip


if __name__ == "__main__":
    main()
