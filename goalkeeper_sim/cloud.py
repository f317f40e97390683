"""The whole simulated cloud on loopback: fake OpenStack, fake Fleio, and the open ports.

`SimulatedCloud` starts both HTTP fakes on 127.0.0.1 (free ports) and, unless told not to,
listeners that play every open port of the world on its 127.x.y.z public addresses, and tells
the real clients where to find them: OS_* variables or a clouds.yaml for openstacksdk, a URL
and a token for Fleio. It owns no logic of its own beyond wiring and must never be imported by
the daemon; the credentials it hands out are throwaway values for loopback fakes. With
`regions`, each further region's Nova and Neutron run on a port of their own, listed in the
first one's Keystone catalog (goalkeeper_sim.regions builds their worlds).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from aiohttp import web

from goalkeeper.aio import Running
from goalkeeper_sim.fleio import API_ROOT, FleioSim
from goalkeeper_sim.listeners import PortListeners
from goalkeeper_sim.openstack import OpenStackSim
from goalkeeper_sim.world import World

SIM_CLOUD_NAME = "goalkeeper-sim"


class SimulatedCloud(Running):
    """An async context manager; `page_size` is the OpenStack services' server-side page limit."""

    def __init__(
        self,
        world: World,
        *,
        page_size: int = 1000,
        fleio_max_page_size: int = 1000,
        listeners: bool = True,
        host: str = "127.0.0.1",
        regions: dict[str, World] | None = None,
    ) -> None:
        self.world = world
        self.openstack = OpenStackSim(world, page_size=page_size)
        # Further regions (name -> world): their own Nova and Neutron, this cloud's Keystone.
        self.regions = {
            name: OpenStackSim(other, page_size=page_size, region=name)
            for name, other in (regions or {}).items()
        }
        self.fleio = FleioSim(world, max_page_size=fleio_max_page_size)
        self.host = host
        self._with_listeners = listeners
        self.listeners: PortListeners | None = None
        self._runners: list[web.AppRunner] = []
        self._ports: list[int] = []

    async def start(self) -> None:
        for app in (self.openstack.app(), self.fleio.app()):
            runner = web.AppRunner(app, handle_signals=False, access_log=None)
            self._runners.append(runner)
            await runner.setup()
            site = web.TCPSite(runner, self.host, 0)
            await site.start()
            self._ports.append(_bound_port(runner))
        for region in self.regions.values():
            runner = web.AppRunner(region.app(), handle_signals=False, access_log=None)
            self._runners.append(runner)
            await runner.setup()
            await web.TCPSite(runner, self.host, 0).start()
            region.serve_region_of(self.openstack, f"http://{self.host}:{_bound_port(runner)}")
        if self._with_listeners:
            worlds = [self.world, *(r.world for r in self.regions.values())]
            self.listeners = PortListeners(e for w in worlds for e in w.exposed())
            await self.listeners.start()

    async def close(self) -> None:
        if self.listeners is not None:
            await self.listeners.close()
            self.listeners = None
        self.openstack.release()
        for region in self.regions.values():
            region.release()
        self.fleio.release()
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()

    def replace_world(self, world: World) -> None:
        """Serve another world over HTTP (the listeners keep playing the first one's ports)."""
        self.world = world
        self.openstack.load(world)
        self.fleio.load(world)

    @property
    def auth_url(self) -> str:
        return f"http://{self.host}:{self._ports[0]}/identity"

    @property
    def fleio_url(self) -> str:
        return f"http://{self.host}:{self._ports[1]}{API_ROOT}"

    @property
    def fleio_token(self) -> str:
        return self.fleio.token

    @property
    def requests_total(self) -> int:
        return self.openstack.requests_total + self.fleio.requests_total

    def reset_counters(self) -> None:
        self.openstack.requests.clear()
        self.fleio.requests.clear()

    def os_env(self, *, application_credential: bool = False) -> dict[str, str]:
        """OS_* variables for openstacksdk: password auth, or an application credential."""
        env = {
            "OS_AUTH_URL": self.auth_url,
            "OS_REGION_NAME": self.openstack.region,
            "OS_IDENTITY_API_VERSION": "3",
            "OS_INTERFACE": "public",
        }
        if application_credential:
            return env | {
                "OS_AUTH_TYPE": "v3applicationcredential",
                "OS_APPLICATION_CREDENTIAL_ID": self.openstack.application_credential_id,
                "OS_APPLICATION_CREDENTIAL_SECRET": self.openstack.application_credential_secret,
            }
        return env | {
            "OS_AUTH_TYPE": "password",
            "OS_USERNAME": self.openstack.username,
            "OS_PASSWORD": self.openstack.password,
            "OS_PROJECT_NAME": self.openstack.project_name,
            "OS_USER_DOMAIN_NAME": "Default",
            "OS_PROJECT_DOMAIN_NAME": "Default",
        }

    def write_clouds_yaml(
        self, path: Path, *, cloud: str = SIM_CLOUD_NAME, application_credential: bool = False
    ) -> Path:
        """A clouds.yaml naming this cloud `cloud`; point OS_CLIENT_CONFIG_FILE at it."""
        env = self.os_env(application_credential=application_credential)
        keys = {k.removeprefix("OS_").lower(): v for k, v in env.items()}
        top = {"region_name", "identity_api_version", "interface", "auth_type"}
        entry: dict[str, object] = {k: v for k, v in keys.items() if k in top}
        entry["auth"] = {k: v for k, v in keys.items() if k not in top}
        if self.regions:  # openstacksdk refuses a region_name its cloud entry does not list
            entry["regions"] = [self.openstack.region, *self.regions]
        path.write_text(yaml.safe_dump({"clouds": {cloud: entry}}), encoding="utf-8")
        path.chmod(0o600)
        return path


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the simulated service did not bind a TCP port")
