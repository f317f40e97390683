"""Settings: the typed, frozen shape of config.yaml; each field checks its own value.

Reading the file and the environment is goalkeeper.configsources; checks across sections are
goalkeeper.validity. Secrets are SecretStr (or PasswordUrl) fields: only the environment may set
them and they are never printed. No I/O here.
Over 300 lines because it is the whole schema, every section in README order, read in one place.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date
from email.utils import parseaddr
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    collapse_addresses,
    ip_address,
    ip_network,
)
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, get_args
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

from goalkeeper.exceptions import (
    Allowance,
    AllowValueError,
    ProviderException,
    parse_ports,
)
from goalkeeper.mailaddress import checked_mail_address
from goalkeeper.nmapargs import nmap_arguments_problems

ENV_PREFIX = "GOALKEEPER_"
CONFIG_PATH_VARIABLE = "GOALKEEPER_CONFIG"
Network: TypeAlias = IPv4Network | IPv6Network
_IPV4_MAPPED = IPv6Network("::ffff:0:0/96")
_THIS_NETWORK = IPv4Network("0.0.0.0/8")  # RFC 1122 "this network": not a destination
# A config is a few KiB; the bounds only stop a wrong path (a log, a device) or a YAML bomb.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_VALUES = 100_000

_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _network(value: str) -> Network:
    try:
        network = ip_network(value.strip(), strict=True)
    except ValueError as err:
        raise ValueError(f"not an IP address or CIDR network: {value!r} ({err})") from None
    if isinstance(network, IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        # nmap sends to ::ffff:a.b.c.d over IPv4, where an IPv4 exclude would not see it.
        raise ValueError(
            f"{value.strip()} is IPv4-mapped IPv6 (::ffff:a.b.c.d): write the IPv4 network instead"
        )
    return network


def _never_scanned(network: Network, *, loopback: bool) -> str | None:
    """Why no address of `network` would ever be scanned (scope.py refuses each), or None."""
    if network.is_unspecified or (
        isinstance(network, IPv4Network) and network.subnet_of(_THIS_NETWORK)
    ):
        return "the unspecified address is this host to the kernel, never scanned"
    if network.is_loopback and not loopback:
        return "loopback is this host: set scan.allow_loopback: true (tests and the demo only)"
    if network.is_multicast or network.is_link_local:
        return "multicast and link-local addresses are never scanned"
    return None


def _collapsed(networks: Iterable[Network]) -> list[Network]:
    v4 = [n for n in networks if isinstance(n, IPv4Network)]
    v6 = [n for n in networks if isinstance(n, IPv6Network)]
    return [*collapse_addresses(v4), *collapse_addresses(v6)]


def _check_address(value: str) -> str:
    checked_mail_address(value)  # raises ValueError naming the address and why
    return value


class PortEntry(Model):
    port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"
    service: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.+-]+$")


class ScheduleSettings(Model):
    cron: str = "0 6 * * *"
    timezone: str = "UTC"
    run_at_start: bool = False

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(
                f"a cron expression has 5 fields (minute hour day month weekday): {value!r}"
            )
        return value


class VerifySettings(Model):
    """Service verification (DESIGN §7): a short second nmap run over the open pairs only."""

    enabled: bool = True
    script_timeout: float = Field(default=10, gt=0, le=600)  # seconds, per script per port
    host_timeout: float = Field(default=60, gt=0, le=3600)  # seconds, per host of a run


class ScanSettings(Model):
    ports: tuple[PortEntry, ...] | None = None  # None: the dangerous-port catalog
    allowed_networks: tuple[Network, ...] = ()
    exclude: tuple[Network, ...] = ()
    privileged: bool = True
    nmap_arguments: str = "-Pn -n -T4 --max-retries 1 --host-timeout 10m"
    subnet_prefix: int = Field(default=24, ge=8, le=32)
    # IPv6 is grouped by its own prefix: a /64 is one link, as a /24 is one IPv4 subnet.
    subnet_prefix_v6: int = Field(default=64, ge=32, le=128)
    max_concurrent_scans: int = Field(default=4, ge=1, le=64)
    max_concurrent_per_subnet: int = Field(default=1, ge=1, le=64)
    batch_size: int = Field(default=1024, ge=1, le=65536)
    # Politeness ceilings in packets per second: all nmap runs together, and any one subnet.
    # The scanner divides them among the runs it starts at once (docs/performance.md).
    max_rate: int = Field(default=10_000, ge=1, le=10_000_000)
    max_rate_per_subnet: int = Field(default=5_000, ge=1, le=10_000_000)
    # Addresses of this host that nmap may send raw probes from, one per concurrent run: runs
    # sharing an address see each other's replies in their captures and miss open ports, so
    # without any only one raw-socket run goes at a time.
    source_addresses: tuple[IPv4Address | IPv6Address, ...] = ()
    # The addresses the cloud sees the scanner's probes come from (after any NAT): root-cause
    # tracing counts a rule's remote_ip_prefix as admitting the scanner when it covers one of
    # them. None of a family: any prefix holding public address space counts (goalkeeper.rootcause).
    egress_addresses: tuple[IPv4Address | IPv6Address, ...] = ()
    # Loopback targets are this host, never a customer's: only tests and the demo scan them.
    allow_loopback: bool = False
    # allowed_networks covering a whole family (0.0.0.0/0, ::/0) must be meant, not a typo.
    allow_whole_internet: bool = False
    verify: VerifySettings = VerifySettings()

    @field_validator("allowed_networks", "exclude", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            raise ValueError("must be a list of IP addresses or CIDR networks")
        problems: list[str] = []
        networks: list[Network] = []
        for index, item in enumerate(value):
            try:
                networks.append(_network(str(item)))
            except ValueError as err:
                problems.append(f"[{index}] {err}")
        if problems:
            raise ValueError("; ".join(problems))
        return tuple(networks)

    @field_validator("egress_addresses", mode="before")
    @classmethod
    def _egress(cls, value: object) -> object:
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            raise ValueError("must be a list of IP addresses")
        problems: list[str] = []
        addresses: list[IPv4Address | IPv6Address] = []
        for index, item in enumerate(value):
            try:
                address = ip_address(str(item).strip())
            except ValueError:
                why = "a network, not an address" if "/" in str(item) else "not an IP address"
                problems.append(f"[{index}] {item!r}: {why}")
                continue
            if address in addresses:
                problems.append(f"[{index}] {address} is listed twice")
            addresses.append(address)
        if problems:
            raise ValueError("; ".join(problems))
        return tuple(addresses)

    @field_validator("ports")
    @classmethod
    def _unique_ports(cls, value: tuple[PortEntry, ...] | None) -> tuple[PortEntry, ...] | None:
        if value is not None:
            seen: set[tuple[int, str]] = set()
            for entry in value:
                if (entry.port, entry.protocol) in seen:
                    raise ValueError(f"{entry.port}/{entry.protocol} is listed twice")
                seen.add((entry.port, entry.protocol))
        return value

    @field_validator("nmap_arguments")
    @classmethod
    def _allowed_arguments(cls, value: str) -> str:
        problems = nmap_arguments_problems(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("source_addresses")
    @classmethod
    def _distinct_sources(
        cls, value: tuple[IPv4Address | IPv6Address, ...]
    ) -> tuple[IPv4Address | IPv6Address, ...]:
        if len(set(value)) != len(value):
            raise ValueError("an address is listed twice")
        return value

    @model_validator(mode="after")
    def _sane_scope(self) -> ScanSettings:
        problems = [
            f"allowed_networks[{index}] {network}: {why}"
            for index, network in enumerate(self.allowed_networks)
            if (why := _never_scanned(network, loopback=self.allow_loopback))
        ]
        if not self.allow_whole_internet:
            problems += [
                f"allowed_networks covers every IPv{whole.version} address ({whole}): set "
                "scan.allow_whole_internet: true if that is meant"
                for whole in _collapsed(self.allowed_networks)
                if whole.prefixlen == 0
            ]
        if problems:
            raise ValueError("; ".join(problems))
        return self


MAX_REGIONS = 32


class OpenStackSettings(Model):
    cloud: str | None = None
    region: str | None = None
    # Every region to read, each on its own (one failing does not sink the others); empty:
    # only `region` (null: the cloud's own, from clouds.yaml or OS_REGION_NAME).
    regions: tuple[str, ...] = ()
    api_timeout: float = Field(default=60, gt=0, le=3600)

    @field_validator("regions")
    @classmethod
    def _distinct_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = [name.strip() for name in value]
        if any(not name for name in names):
            raise ValueError("a region name must not be empty")
        if len(set(names)) != len(names):
            raise ValueError(f"a region is listed twice: {names}")
        if len(names) > MAX_REGIONS:
            raise ValueError(f"at most {MAX_REGIONS} regions (each is a metric label)")
        return tuple(names)

    @model_validator(mode="after")
    def _region_or_regions(self) -> OpenStackSettings:
        if self.regions and self.region is not None and self.region not in self.regions:
            raise ValueError(
                f"region {self.region!r} is not in regions {list(self.regions)}: set one of them"
            )
        return self

    @property
    def region_names(self) -> tuple[str | None, ...]:
        """The regions to read, each a name for openstack.connect (None: the cloud's own)."""
        return self.regions or (self.region,)


class FleioSettings(Model):
    # null: on when a url or token is set (then both are needed), else not configured, which
    # every tick reports as an owner lookup incident; false: owners off on purpose (all NOT
    # FOUND, no incident); true: on, and url and token are required.
    enabled: bool | None = None
    url: str | None = None
    token: SecretStr | None = None
    verify_tls: bool = True
    page_size: int = Field(default=500, ge=1, le=5000)
    timeout: float = Field(default=60, gt=0, le=3600)  # seconds per request
    # A refresh resolving owners for less than this share of the inventory's projects (or for
    # none) is an owner lookup incident: summary warning, metric, alert.
    min_resolved_share: float = Field(default=0.5, ge=0, le=1)

    @property
    def wanted(self) -> bool:
        """Whether owners are meant to come from Fleio (so a missing url or token is an error)."""
        if self.enabled is None:
            return self.url is not None or self.token is not None
        return self.enabled

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {value!r}")
            return value.rstrip("/")
        return value


class InventorySettings(Model):
    source: Literal["openstack", "static"] = "openstack"
    static_file: Path = Path("inventory.yaml")
    # The most addresses one IPv6 network entry of the static file may stand for: a /64 is never
    # expanded (2^64 targets); the default, 256, is a /120.
    static_max_ipv6_network: int = Field(default=256, ge=1, le=65536)
    openstack: OpenStackSettings = OpenStackSettings()
    fleio: FleioSettings = FleioSettings()


class EmailSettings(Model):
    host: str = Field(default="localhost", min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    ssl: bool = False
    username: str | None = None
    password: SecretStr | None = None
    timeout: float = Field(default=30, gt=0, le=600)
    # Seconds before the SMTP client's own second try of a send, doubling for each next one.
    retry_backoff: float = Field(default=1, ge=0, le=600)

    @model_validator(mode="after")
    def _one_tls_mode(self) -> EmailSettings:
        if self.starttls and self.ssl:
            raise ValueError("starttls and ssl exclude each other: pick one (ssl is implicit TLS)")
        return self


class TelegramSettings(Model):
    enabled: bool = False
    token: SecretStr | None = None
    chat_id: str | None = None
    api_base: str = "https://api.telegram.org"
    message_thread_id: int | None = None
    # "counts": the summary carries numbers only, no customer's address, server or project name,
    # for a provider whose chat is not private enough for them.
    detail: Literal["full", "counts"] = "full"

    @field_validator("chat_id", mode="before")
    @classmethod
    def _chat_id_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return FleioSettings._http_url(value) or value

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> TelegramSettings:
        if self.enabled and (self.token is None or not self.chat_id):
            raise ValueError("enabled needs token (GOALKEEPER_NOTIFY__TELEGRAM__TOKEN) and chat_id")
        return self


class ScannerInfo(Model):
    """Who scans and from where, in the footer of every mail (a customer who sees the probes in
    their logs can tell them from an attack): the egress addresses (default:
    scan.egress_addresses), a page about the scan and an address for abuse reports."""

    addresses: tuple[IPv4Address | IPv6Address, ...] = ()
    info_url: str | None = None
    contact: str | None = None

    @field_validator("info_url")
    @classmethod
    def _info_url(cls, value: str | None) -> str | None:
        return FleioSettings._http_url(value)

    @field_validator("contact")
    @classmethod
    def _contact(cls, value: str | None) -> str | None:
        return None if value is None else _check_address(value)


class NotifySettings(Model):
    send_to_customers: bool = False
    ops_email: str = "security@example.com"
    sender: str = "Goalkeeper <security@example.com>"
    reply_to: str | None = None  # the Reply-To of every mail; None: ops_email
    scanner_info: ScannerInfo = ScannerInfo()
    # A bound keeps `now + timedelta(days=...)` finite: .inf or 1e300 overflowed on every tick.
    reminder_days: float = Field(default=1, ge=0, le=365)
    # Latent exposures (DESIGN §8) told alone at most this often per owner; 0: only inside a
    # report that goes out anyway. Bounded for the same reason as reminder_days.
    latent_days: float = Field(default=30, ge=0, le=365)
    notify_resolved: bool = True
    templates_dir: Path | None = None  # overrides the built-in mail templates, file by file
    # Seconds before a message that failed is tried again in the same pass (doubling, with
    # jitter); past its attempts it stays pending for the next pass or run.
    retry_backoff: float = Field(default=10, ge=0, le=3600)
    email: EmailSettings = EmailSettings()
    telegram: TelegramSettings = TelegramSettings()
    # Exceptions (DESIGN §9): an until further ahead than this is capped, counted from the day
    # the exception is first honoured; and whether a customer's exception may silence a service
    # that answers without a password (grade `unauthenticated`).
    max_exception_days: int = Field(default=180, ge=1, le=3650)
    acknowledge_unauthenticated: bool = False

    @field_validator("templates_dir")
    @classmethod
    def _existing_folder(cls, value: Path | None) -> Path | None:
        # Checked now: a missing folder would only show when the first mail is rendered.
        if value is not None and not value.is_dir():
            why = "is not a folder" if value.exists() else "does not exist"
            raise ValueError(f"{str(value)!r} {why}")
        return value

    @field_validator("ops_email")
    @classmethod
    def _ops(cls, value: str) -> str:
        return _check_address(value)

    @field_validator("reply_to")
    @classmethod
    def _reply_to(cls, value: str | None) -> str | None:
        return None if value is None else _check_address(value)

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "\r" in value or "\n" in value or not address:
            raise ValueError(f"not a sender address: {value!r}")
        _check_address(address)
        return value


class ExceptionEntry(Model):
    """One provider exception: ports accepted open on an address, a network or a project."""

    address: str | None = None
    network: str | None = None
    project_id: str | None = Field(default=None, min_length=1, max_length=255)
    ports: tuple[str, ...]
    until: date
    reason: str = Field(min_length=1, max_length=500)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ip_address(value.strip())
            except ValueError:
                raise ValueError(f"not an IP address: {value!r}") from None
        return value

    @field_validator("network")
    @classmethod
    def _network(cls, value: str | None) -> str | None:
        if value is not None:
            _network(value)  # raises ValueError naming the value
        return value

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            parse_ports(value)
        except AllowValueError as err:
            raise ValueError(str(err)) from None
        return value

    @field_validator("reason")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if not value.strip() or not value.isprintable():
            raise ValueError("give one line of text saying why the port may stay open")
        return value.strip()

    @model_validator(mode="after")
    def _one_target(self) -> ExceptionEntry:
        given = [v for v in (self.address, self.network, self.project_id) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of address, network or project_id")
        return self

    def rule(self) -> ProviderException:
        allowance = Allowance(
            ports=parse_ports(self.ports), until=self.until, reason=self.reason, source="provider"
        )
        return ProviderException(
            allowance=allowance,
            address=ip_address(self.address.strip()) if self.address else None,
            network=_network(self.network) if self.network else None,
            project_id=self.project_id,
        )


# Marks a URL field whose password, if any, is a secret: refused in the file, hidden in output.
_HOLDS_PASSWORD = object()
PasswordUrl: TypeAlias = Annotated[str, _HOLDS_PASSWORD]


class StateSettings(Model):
    url: PasswordUrl = "sqlite+aiosqlite:///./goalkeeper-state.db"

    @field_validator("url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        scheme = value.split("://", 1)[0]
        if scheme not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ValueError(
                f"use sqlite+aiosqlite:///PATH or postgresql+asyncpg://..., not {scheme!r}"
            )
        url = database_url(value)  # never echoed: it may hold the password
        if url is None or not 0 <= (url.port or 0) <= 65535:
            raise ValueError(
                "the port is not a number from 0 to 65535"
                if _bad_port(value)
                else "not a URL SQLAlchemy can read"
            )
        if "@" in (url.host or ""):
            raise ValueError("an @ in the user name or password must be written %40")
        return value


class HttpSettings(Model):
    host: str = "0.0.0.0"  # noqa: S104 - the probes must be reachable by the kubelet
    port: int = Field(default=8080, ge=0, le=65535)
    admin_token: SecretStr | None = None

    @field_validator("host")
    @classmethod
    def _address_or_name(cls, value: str) -> str:
        try:
            ip_address(value)
        except ValueError:
            labels = value.removesuffix(".").split(".")
            if (
                len(value) > 253
                or not all(_HOST_LABEL.fullmatch(x) for x in labels)
                or (labels[-1].isdigit())
            ):
                raise ValueError(f"not an IP address or host name: {value!r}") from None
        return value


class LoggingSettings(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class DaemonSettings(Model):
    shutdown_timeout: float = Field(default=25, gt=0, le=3600)  # the whole SIGTERM sequence
    # A longer tick fails liveness; a week at most, so the check can fire at all.
    max_tick_seconds: float = Field(default=6 * 3600, gt=0, le=7 * 86400)


class Settings(BaseSettings):
    """The whole configuration. `GOALKEEPER_<SECTION>__<KEY>` names a key in the environment;
    goalkeeper.configsources reads the file and those variables (constructing Settings in code
    reads neither, so tests and the demo get exactly what they pass)."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        env_parse_none_str="null",
    )

    environment: Literal["stage", "prod"] = "stage"
    schedule: ScheduleSettings = ScheduleSettings()
    scan: ScanSettings = ScanSettings()
    inventory: InventorySettings = InventorySettings()
    notify: NotifySettings = NotifySettings()
    state: StateSettings = StateSettings()
    http: HttpSettings = HttpSettings()
    logging: LoggingSettings = LoggingSettings()
    daemon: DaemonSettings = DaemonSettings()
    exceptions: tuple[ExceptionEntry, ...] = ()  # the provider's (DESIGN §9); reloaded on SIGHUP

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    def secrets(self) -> list[str]:
        """Every configured secret value, for the log redactor."""
        values: list[str] = []
        for key in password_url_keys(type(self)):
            values += url_passwords(self.value_at(key))
        for key in secret_keys(type(self)):
            node = self.value_at(key)
            if isinstance(node, SecretStr):
                values.append(node.get_secret_value())
        return [value for value in values if value]

    def provider_exceptions(self) -> tuple[ProviderException, ...]:
        return tuple(entry.rule() for entry in self.exceptions)

    def state_passwords(self) -> list[str]:
        """The database password as SQLAlchemy reads it, and as it may be written in the URL."""
        return url_passwords(self.state.url)

    def value_at(self, key: str) -> Any:
        """The value at a dotted key such as "notify.email.password"."""
        node: Any = self
        for part in key.split("."):
            node = getattr(node, part)
        return node


class Problem(Model):
    source: str  # the file, or "environment GOALKEEPER_..."
    key: str
    message: str

    def __str__(self) -> str:
        return (
            f"{self.source}: {self.key}: {self.message}"
            if self.key
            else f"{self.source}: {self.message}"
        )


class ConfigError(Exception):
    """Configuration is invalid. Carries every problem found, never a secret value."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def resolve_path(explicit: str | None, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(explicit or environ.get(CONFIG_PATH_VARIABLE) or "config.yaml")


def secret_keys(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """The dotted keys of every SecretStr field: only the environment may set them."""
    return _keys_of(model, prefix, lambda kinds, _: SecretStr in kinds)


def password_url_keys(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """The dotted keys of every URL that may hold a password (a PasswordUrl field)."""
    return _keys_of(model, prefix, lambda _, metadata: any(m is _HOLDS_PASSWORD for m in metadata))


def _keys_of(
    model: type[BaseModel], prefix: str, wanted: Callable[[tuple[Any, ...], list[Any]], bool]
) -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        kinds = get_args(field.annotation) or (field.annotation,)
        if wanted(kinds, field.metadata):
            keys.append(prefix + name)
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                keys += _keys_of(kind, f"{prefix}{name}.", wanted)
    return keys


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets replaced, for printing."""
    data = settings.model_dump(mode="json")
    for key in secret_keys(type(settings)):
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        if node[leaf] is not None:
            node[leaf] = "***"
    for key in password_url_keys(type(settings)):
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = redact_url(node[leaf])
    return data


def redact_url(url: str) -> str:
    """`url` with its password hidden, read as SQLAlchemy reads it (urllib would not: a `#`, `/`
    or `?` in the password ends its netloc early and leaves the password in the text)."""
    parsed = database_url(url)
    if parsed is None:
        scheme, found, _ = url.partition("://")
        return f"{scheme}://(unreadable, not shown)" if found else "(unreadable, not shown)"
    return parsed.render_as_string(hide_password=True)


def _bad_port(url: str) -> bool:
    """Why SQLAlchemy could not read `url`, told apart only to name the port in the message."""
    try:
        urlsplit(url).port  # noqa: B018 - parsing it is the check
    except ValueError:
        return True
    return False


def url_passwords(url: str) -> list[str]:
    """A URL's password as SQLAlchemy reads it, and as it may be written in the URL."""
    parsed = database_url(url)
    if parsed is None or not parsed.password:
        return []
    return list(dict.fromkeys((parsed.password, quote(parsed.password, safe=""))))


def database_url(url: str) -> URL | None:
    # SQLAlchemy loads on first use: `--help` and most config checks never read a state URL.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        return None
