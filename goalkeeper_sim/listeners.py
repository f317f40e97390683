"""Loopback listeners that play a server's open ports, for the demo, tests and benchmarks.

A TCP endpoint accepts and closes each connection (after an optional short banner), except on
6379, 9200 and 11211, where it speaks just enough Redis, Elasticsearch and Memcached to be
verified; a UDP
endpoint answers every datagram with a small reply, because nmap calls a silent UDP port
`open|filtered`, never `open`. One socket per endpoint and no task per connection, so thousands
start in well under a second. Addresses must be loopback (or, for a caller inside a network
namespace of its own, unique local fd00::/8, which nothing routes): this module must never open a
listener that the outside world can reach, and it never scans anything itself.
"""

from __future__ import annotations

import asyncio
import functools
import resource
from collections.abc import Callable, Iterable
from ipaddress import IPv6Network
from typing import TypeAlias, cast

from goalkeeper.aio import Running
from goalkeeper.model import IPAddress, Transport

Endpoint: TypeAlias = tuple[IPAddress, int, Transport]

DEFAULT_UDP_REPLY = b"goalkeeper-sim\n"
_SPARE_DESCRIPTORS = 256  # for the event loop, nmap's pipes, test servers
_UNIQUE_LOCAL = IPv6Network("fd00::/8")


class _AcceptAndClose(asyncio.Protocol):
    def __init__(self, banner: bytes) -> None:
        self._banner = banner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._banner and isinstance(transport, asyncio.WriteTransport):
            transport.write(self._banner)
        transport.close()


# Just enough of three services for verification (goalkeeper.scanning.verify) to tell the grades
# apart in the demo. Redis speaks RESP (https://redis.io/docs/reference/protocol-spec/): INFO
# answers a bulk string of `key:value` lines; a Redis that wants a password answers an error.
# Elasticsearch answers `GET /` with its root document, laid out as Elasticsearch 7 prints it
# (https://www.elastic.co/guide/en/elasticsearch/reference/7.17/rest-api-compatibility.html
# shows the shape; nmap's nmap-service-probes matches exactly these lines). Memcached wants a
# password (its ASCII authentication, https://github.com/memcached/memcached/wiki/SASLHowto).
_REDIS_INFO = b"# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n"
_ES_ROOT = (
    b'{\n  "name" : "sim-node",\n  "cluster_name" : "sim-cluster",\n'
    b'  "cluster_uuid" : "sim",\n  "version" : {\n    "number" : "7.17.9",\n'
    b'    "build_flavor" : "default",\n    "lucene_version" : "8.11.1"\n  },\n'
    b'  "tagline" : "You Know, for Search"\n}\n'
)


class _Speaker(asyncio.Protocol):
    """Answers what a client asks (a Redis command, an HTTP GET) and waits for it to go."""

    def __init__(self, port: int, locked: bool) -> None:
        self._port = port
        self._locked = locked
        self._transport: asyncio.WriteTransport | None = None
        self._heard = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        self._heard = (self._heard + data)[-4096:]
        if self._transport is None:
            return
        if self._port == ELASTICSEARCH_PORT and b"\r\n\r\n" in self._heard:
            if self._heard.startswith(b"GET / "):
                header = (
                    "HTTP/1.0 200 OK\r\nContent-Type: application/json; charset=UTF-8\r\n"
                    f"Content-Length: {len(_ES_ROOT)}\r\n\r\n"
                )
                self._transport.write(header.encode() + _ES_ROOT)
            self._transport.close()
        elif self._port == MEMCACHED_PORT and self._heard.endswith(b"\n"):
            # Memcached 1.6 with ASCII authentication (-Y) answers every command so.
            self._heard = b""
            self._transport.write(b"CLIENT_ERROR unauthenticated\r\n")
        elif self._port == REDIS_PORT and self._heard.endswith(b"\r\n"):
            self._heard, asked = b"", self._heard.lower()
            if self._locked:
                self._transport.write(b"-ERR operation not permitted\r\n")
            elif b"info" in asked:
                self._transport.write(b"$%d\r\n%s\r\n" % (len(_REDIS_INFO), _REDIS_INFO))
            else:
                self._transport.write(b"-ERR unknown command\r\n")


REDIS_PORT, ELASTICSEARCH_PORT, MEMCACHED_PORT, DNS_PORT = 6379, 9200, 11211, 53
SPOKEN = (REDIS_PORT, ELASTICSEARCH_PORT, MEMCACHED_PORT)


def locked(address: IPAddress) -> bool:
    """Which simulated Redis servers want a password: those on an even address."""
    return int(address) % 2 == 0


def _dns_reply(query: bytes) -> bytes | None:
    """An authoritative server's empty NOERROR answer (RFC 1035 §4.1.1): the query's id and
    question, QR and AA set, no recursion offered (RA clear: the demo's DNS is `reachable`, and
    the exception its owner declared is honoured). None for a datagram too short for DNS."""
    if len(query) < 12:
        return None
    standard = query[2] & 0x78 == 0  # opcode QUERY; anything else (STATUS) is REFUSED
    flags = bytes([(0x84 if standard else 0x80) | (query[2] & 0x79), 0x00 if standard else 0x05])
    return query[:2] + flags + query[4:6] + b"\0\0\0\0\0\0" + query[12:]


class _AnswerEveryDatagram(asyncio.DatagramProtocol):
    def __init__(self, reply: bytes, *, dns: bool = False) -> None:
        self._dns = dns  # port 53: answer as a resolver would, so verification hears DNS
        self._reply = reply
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector datagram transport does not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self._transport is not None:
            reply = _dns_reply(data) if self._dns else None
            self._transport.sendto(reply or self._reply, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier reply (the scanner has gone); nothing to do, keep serving.
        return


class PortListeners(Running):
    """Listen on every (loopback address, port, transport) given, until the context exits.

    Port 0 picks a free port; `endpoints` then holds the ports actually bound. If any endpoint
    cannot be bound, the ones already open are closed and the OSError propagates.
    """

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        *,
        tcp_banner: bytes = b"",
        udp_reply: bytes = DEFAULT_UDP_REPLY,
        unique_local: bool = False,
    ) -> None:
        """`unique_local` also admits fd00::/8 addresses: only for a caller inside a network
        namespace it made (tests.netns), where such an address is on that namespace's `lo`."""
        self._wanted = tuple(dict.fromkeys(endpoints))
        for address, port, _ in self._wanted:
            local = unique_local and address.version == 6 and address in _UNIQUE_LOCAL
            if not (address.is_loopback or local):
                raise ValueError(f"{address} is not a loopback address; the simulator stays local")
            if not 0 <= port <= 65535:
                raise ValueError(f"{port} is not a port number")
        if not udp_reply:
            raise ValueError("udp_reply must not be empty: nmap sees an empty reply as no reply")
        self._tcp_banner = tcp_banner
        self._udp_reply = udp_reply
        self._servers: list[asyncio.Server] = []
        self._datagrams: list[asyncio.DatagramTransport] = []
        self._bound: list[Endpoint] = []

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(self._bound)

    async def start(self) -> None:
        _allow_descriptors(len(self._wanted) + _SPARE_DESCRIPTORS)
        try:
            for address, port, transport in self._wanted:
                if transport is Transport.TCP:
                    bound = await self._start_tcp(address, port)
                else:
                    bound = await self._start_udp(address, port)
                self._bound.append((address, bound, transport))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        servers, self._servers = self._servers, []
        datagrams, self._datagrams = self._datagrams, []
        for server in servers:
            server.close()
        for datagram in datagrams:
            datagram.close()
        for server in servers:
            await server.wait_closed()
        self._bound.clear()

    async def _start_tcp(self, address: IPAddress, port: int) -> int:
        loop = asyncio.get_running_loop()
        banner = self._tcp_banner
        factory: Callable[[], asyncio.Protocol] = lambda: _AcceptAndClose(banner)  # noqa: E731
        if port in SPOKEN:
            factory = functools.partial(_Speaker, port, locked(address))
        server = await loop.create_server(factory, str(address), port, reuse_address=True)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _start_udp(self, address: IPAddress, port: int) -> int:
        loop = asyncio.get_running_loop()
        reply = self._udp_reply
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _AnswerEveryDatagram(reply, dns=port == DNS_PORT),
            local_addr=(str(address), port),
        )
        self._datagrams.append(transport)
        return int(transport.get_extra_info("sockname")[1])


def _allow_descriptors(needed: int) -> None:
    """Raise this process's soft descriptor limit towards the hard one when `needed` exceeds it.

    One socket per endpoint: a few thousand simulated ports pass the usual soft limit of 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
