"""Configuration from the environment (contract section 2), validated once.

Every variable is optional. Development mode (`edgesense up --dev` or
`EDGESENSE_DEV=1`) allows http:// and private-network targets and creates an
API key and a secret key under `var/` when none is configured; outside it, a
service without `EDGESENSE_API_KEYS` or `EDGESENSE_SECRET_KEY` refuses to start
and says which one is missing.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from edgesense.common.cores import usable_cores
from edgesense.common.errors import ConfigurationError
from edgesense.common.hostaddr import embedded_ipv4, host_address, is_local_name, normalize_host
from edgesense.common.tls import GrpcTls

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///var/edgesense.db"
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"
DEFAULT_TOPIC_PREFIX = "edgesense"
DEV_DIR = Path("var")
DEFAULT_METRICS_ADDRS = {
    "registry": "127.0.0.1:9101",
    "delivery": "127.0.0.1:9102",
    "bridge": "127.0.0.1:9104",
}
N = TypeVar("N", int, float)


# The parsers of single variables, for every process's settings (`Settings`
# below, the bridge's `BridgeSettings`, `edgesense simulate`): one spelling of
# "unset", one wording of each complaint. An empty variable counts as unset.


def env_text(env: Mapping[str, str], name: str, default: str) -> str:
    """The variable as it is, or `default` when unset."""
    return env.get(name) or default


def env_optional(env: Mapping[str, str], name: str) -> str | None:
    """The variable as it is, or None when unset."""
    return env.get(name) or None


def env_flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    """1/0, true/false, yes/no, on/off (any case)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be 0 or 1, not {raw!r}")


def env_number(
    env: Mapping[str, str],
    name: str,
    default: float,
    minimum: float = 0.0,
    maximum: float | None = None,
) -> float:
    """A number (seconds, hours) within [minimum, maximum]."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {raw!r}") from None
    if not math.isfinite(value):  # float() takes "nan" and "inf", no limit stops nan
        raise ConfigurationError(f"{name} must be a finite number, not {raw!r}")
    return _within(name, raw, value, minimum, maximum)


def env_int(
    env: Mapping[str, str],
    name: str,
    default: int,
    minimum: int = 0,
    maximum: int | None = None,
) -> int:
    """A whole number (a count, bytes, milliseconds) within [minimum, maximum]."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, not {raw!r}") from None
    return _within(name, raw, value, minimum, maximum)


def env_choice(env: Mapping[str, str], name: str, default: str, choices: Sequence[str]) -> str:
    """One of `choices` (surrounding blanks ignored)."""
    value = (env.get(name) or default).strip()
    if value not in choices:
        raise ConfigurationError(f"{name} must be {' or '.join(choices)}, not {value!r}")
    return value


def _within(name: str, raw: str, value: N, minimum: N, maximum: N | None) -> N:
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, not {raw!r}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"{name} must be at most {maximum}, not {raw!r}")
    return value


MQTT_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class BrokerUrl:
    """`mqtt[s]://[user[:password]@]host[:port]`, parsed."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        parts = urlsplit(url)
        # The messages never repeat the URL: it may hold a password.
        if parts.scheme not in MQTT_DEFAULT_PORTS:
            given = f"{parts.scheme}://" if parts.scheme else "no scheme"
            raise ConfigurationError(
                "the MQTT URL (EDGESENSE_MQTT_URL) must start with mqtt:// or mqtts://, "
                f"not {given}"
            )
        try:
            port = parts.port or MQTT_DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise ConfigurationError("the MQTT URL (EDGESENSE_MQTT_URL) has a bad port") from None
        if not parts.hostname:
            raise ConfigurationError("the MQTT URL (EDGESENSE_MQTT_URL) has no host")
        return cls(
            host=parts.hostname,
            port=port,
            tls=parts.scheme == "mqtts",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    def __str__(self) -> str:
        """The URL without its credentials, for logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def check_topic_prefix(prefix: str) -> str:
    """EDGESENSE_MQTT_TOPIC_PREFIX: topic levels, without wildcards or a
    leading or trailing '/' (the bridge subscribes below it, the simulator
    publishes below it)."""
    if (
        not prefix
        or any(c in prefix for c in "+#")
        or prefix.startswith("/")
        or prefix.endswith("/")
    ):
        raise ConfigurationError(
            f"the topic prefix (EDGESENSE_MQTT_TOPIC_PREFIX) {prefix!r} must be topic levels "
            "without wildcards or a leading or trailing '/'"
        )
    return prefix


MAX_SENDERS = 32


def default_per_project(capacity: int, per_webhook: int) -> int:
    """All slots but one webhook's limit, or half of them if that is more: a
    newcomer's first webhook finds its whole lane free, and a project alone
    keeps most of the slots (fan-out to many webhooks needs them while
    receivers are slow to answer)."""
    return max(1, capacity // 2, capacity - per_webhook)


# With a PostgreSQL server on this machine, below this many usable cores
# delivery makes its POSTs itself.
SENDERS_FROM_CORES_BESIDE_POSTGRES = 4
# `Settings.delivery_senders` until resolved: `default_senders` for its database.
SENDERS_BY_DEFAULT = -1


def _local_host(host: str) -> bool:
    """A Unix socket directory, or a host (a port after it allowed) that names
    or denotes this machine, read as `common.hostaddr` reads webhook hosts."""
    if host.startswith("/"):
        return True
    try:
        name = urlsplit("//" + host).hostname or ""
        found = host_address(name)
    except ValueError:  # NumericHostError too: no address at all
        return False
    if found is None:
        return is_local_name(normalize_host(name))
    address = found.address
    inner = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    return address.is_loopback or (inner is not None and inner.is_loopback)


def postgres_on_this_machine(database_url: str) -> bool:
    """A PostgreSQL URL whose server is reached over loopback or a Unix socket:
    its backends run on our cores. The hosts of `?host=` (SQLAlchemy's
    multi-host form, or a socket directory) take the place of the URL's own,
    and all must be local; with no host at all the driver's default is a
    local socket (or `PGHOST`, not looked at). A URL that does not parse
    is judged not local: delivery's engine reports it, without repeating it."""
    if not database_url.startswith("postgresql"):
        return False
    try:
        parts = urlsplit(database_url)
        query_hosts = [
            h for k, v in parse_qsl(parts.query) if k == "host" for h in v.split(",") if h
        ]
        hosts = query_hosts or parts.netloc.rpartition("@")[2].split(",")
    except ValueError:
        return False
    return all(host == "" or _local_host(host) for host in hosts)


def default_senders(database_url: str, cores: int | None = None) -> int:
    """Sender processes by default: half the usable cores, at most 4; none on
    one core, and none under 4 cores beside a PostgreSQL server on this
    machine (`cores`: `common.cores.usable_cores()`, which counts a
    container's CPU limit, not its node's cores).

    A sender takes POSTs off the delivery process (see
    `edgesense.delivery.send.senders`), which raises what one delivery
    process can send, but handing a POST over and reading its answer back
    costs more CPU than libcurl's POST itself, so it pays only where cores
    are left over. Measured on 2 cores with everything on them (`make
    bench`; README Performance, "Sender processes beside PostgreSQL"):
    - with PostgreSQL's server on the same cores, its backends use as much
      CPU per delivery as the delivery process, and a sender does not pay:
      at saturation a delivery cost the delivery process and its sender
      0.117 ms of CPU together, the delivery process alone 0.103 ms, and
      every scale layout was faster without;
    - on SQLite the database's work runs inside the delivery process, and a
      sender pays for itself: fan-out 0.98 and 1.08 of the baseline with
      one, 0.87 and 0.85 without. So does it, presumably, beside a
      PostgreSQL elsewhere, where no server shares the cores.
    """
    if cores is None:
        cores = usable_cores()
    fewest = SENDERS_FROM_CORES_BESIDE_POSTGRES if postgres_on_this_machine(database_url) else 2
    return 0 if cores < fewest else min(4, cores // 2)


def per_project(env: Mapping[str, str], concurrency: int, per_target: int) -> int:
    """EDGESENSE_DELIVERY_PER_PROJECT: by default the concurrency less one
    webhook's limit (at least half); never more than all of it (then one
    project's hanging receivers could hold every slot)."""
    name = "EDGESENSE_DELIVERY_PER_PROJECT"
    value = env_int(env, name, default_per_project(concurrency, per_target), 1)
    if value > concurrency:
        raise ConfigurationError(
            f"{name} ({value}) must not exceed EDGESENSE_DELIVERY_CONCURRENCY ({concurrency}): "
            "below it, a project whose receivers hang leaves slots for the others"
        )
    return value


def parse_api_keys(raw: str) -> dict[str, str]:
    """`key=projectId,key2=projectId2` -> {key: projectId}."""
    keys: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, project = item.partition("=")
        key, project = key.strip(), project.strip()
        if not sep or not key or not project:
            raise ConfigurationError(
                "EDGESENSE_API_KEYS must look like key=projectId,key2=projectId2; "
                f"an entry has no key or no project ({len(keys) + 1}. entry)"
            )
        if key in keys:
            raise ConfigurationError(
                f"EDGESENSE_API_KEYS names a key twice ({len(keys) + 1}. entry)"
            )
        keys[key] = project
    return keys


def parse_secret_key(raw: str) -> bytes:
    """A Fernet key: 32 bytes, URL-safe base64."""
    try:
        decoded = base64.urlsafe_b64decode(raw.strip().encode())
    except (binascii.Error, ValueError):
        raise ConfigurationError("EDGESENSE_SECRET_KEY is not URL-safe base64") from None
    if len(decoded) != 32:
        raise ConfigurationError(
            f"EDGESENSE_SECRET_KEY must decode to 32 bytes, not {len(decoded)} "
            "(make one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())')"
        )
    return raw.strip().encode()


def _dev_file(name: str, make: str) -> str:
    path = DEV_DIR / name
    if path.exists():
        return path.read_text().strip()
    DEV_DIR.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(make + "\n")
    return make


def dev_api_key() -> str:
    """The development API key (project `dev`), created in var/dev-api-key once."""
    return _dev_file("dev-api-key", "esk_dev_" + secrets.token_urlsafe(24))


def dev_secret_key() -> str:
    return _dev_file("secret-key", base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())


@dataclass(frozen=True)
class Settings:
    """Everything a service reads from the environment."""

    dev: bool = False
    database_url: str = DEFAULT_DATABASE_URL
    mqtt_url: str = DEFAULT_MQTT_URL
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    api_keys: Mapping[str, str] = field(default_factory=dict)
    secret_key: bytes | None = None
    internal_token: str | None = None
    registry_addr: str = "127.0.0.1:50051"
    delivery_addr: str = "127.0.0.1:50052"
    bridge_addr: str = "127.0.0.1:50053"
    http_addr: str = "127.0.0.1:8080"
    allow_insecure_urls: bool = False
    allow_private_networks: bool = False
    ca_bundle: str | None = None
    delivery_timeout_seconds: float = 3.0
    max_retries: int = 5
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    held_retention_seconds: float = 7 * 24 * 3600.0
    # Ended deliveries, their attempts and their events are deleted this long
    # after they ended (record/maintenance.py).
    retention_seconds: float = 30 * 86400.0
    metrics_addrs: Mapping[str, str] = field(default_factory=dict)
    lease_seconds: float = 30.0
    delivery_concurrency: int = 256
    delivery_per_target: int = 64
    delivery_per_project: int = 192
    # SENDERS_BY_DEFAULT: default_senders(database_url), resolved on construction.
    delivery_senders: int = SENDERS_BY_DEFAULT
    outbox_limit: int = 1_000_000
    grpc_tls: GrpcTls = field(default_factory=GrpcTls)
    grpc_reflection: bool = False
    http_header_timeout_seconds: float = 10.0
    http_body_timeout_seconds: float = 30.0
    http_max_connections: int = 0  # 0: from the open-file limit
    # 0: no limit. See README Configuration for why 100.
    max_webhooks_per_project: int = 100

    def __post_init__(self) -> None:
        if self.delivery_senders == SENDERS_BY_DEFAULT:
            senders = default_senders(self.database_url)
            object.__setattr__(self, "delivery_senders", senders)  # frozen

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, dev: bool | None = None) -> Settings:
        env = os.environ if env is None else env
        dev = env_flag(env, "EDGESENSE_DEV") if dev is None else dev
        raw_keys = env.get("EDGESENSE_API_KEYS", "")
        api_keys = parse_api_keys(raw_keys)
        if not api_keys and dev:
            api_keys = {dev_api_key(): "dev"}
        raw_secret = env.get("EDGESENSE_SECRET_KEY", "")
        if not raw_secret and dev:
            raw_secret = dev_secret_key()
        secret_key = parse_secret_key(raw_secret) if raw_secret else None
        concurrency = env_int(env, "EDGESENSE_DELIVERY_CONCURRENCY", 256, 1)
        held_hours = env_number(env, "EDGESENSE_HELD_RETENTION_HOURS", 168.0)
        per_target = env_int(env, "EDGESENSE_DELIVERY_PER_TARGET", 64, 1)
        return cls(
            dev=dev,
            database_url=env_text(env, "EDGESENSE_DATABASE_URL", DEFAULT_DATABASE_URL),
            mqtt_url=env_text(env, "EDGESENSE_MQTT_URL", DEFAULT_MQTT_URL),
            topic_prefix=env_text(env, "EDGESENSE_MQTT_TOPIC_PREFIX", DEFAULT_TOPIC_PREFIX),
            api_keys=api_keys,
            secret_key=secret_key,
            internal_token=env_optional(env, "EDGESENSE_INTERNAL_TOKEN"),
            registry_addr=env_text(env, "EDGESENSE_REGISTRY_ADDR", "127.0.0.1:50051"),
            delivery_addr=env_text(env, "EDGESENSE_DELIVERY_ADDR", "127.0.0.1:50052"),
            bridge_addr=env_text(env, "EDGESENSE_BRIDGE_ADDR", "127.0.0.1:50053"),
            http_addr=env_text(env, "EDGESENSE_HTTP_ADDR", "127.0.0.1:8080"),
            allow_insecure_urls=env_flag(env, "EDGESENSE_ALLOW_INSECURE_URLS", dev),
            allow_private_networks=env_flag(env, "EDGESENSE_ALLOW_PRIVATE_NETWORKS", dev),
            ca_bundle=env_optional(env, "EDGESENSE_CA_BUNDLE"),
            delivery_timeout_seconds=env_number(
                env, "EDGESENSE_DELIVERY_TIMEOUT_SECONDS", 3.0, 0.001
            ),
            max_retries=env_int(env, "EDGESENSE_MAX_RETRIES", 5),
            retry_base_seconds=env_number(env, "EDGESENSE_RETRY_BASE_SECONDS", 30.0),
            retry_max_seconds=env_number(env, "EDGESENSE_RETRY_MAX_SECONDS", 3600.0),
            held_retention_seconds=held_hours * 3600.0,
            # Fractions of a day are allowed (0.001 = 86.4 s: tests, the benchmark).
            retention_seconds=env_number(env, "EDGESENSE_RETENTION_DAYS", 30.0, 0.00001) * 86400.0,
            lease_seconds=env_number(env, "EDGESENSE_DELIVERY_LEASE_SECONDS", 30.0, 1.0),
            delivery_concurrency=concurrency,
            delivery_per_target=per_target,
            delivery_per_project=per_project(env, concurrency, per_target),
            outbox_limit=env_int(env, "EDGESENSE_OUTBOX_LIMIT", 1_000_000, 1),
            http_header_timeout_seconds=env_number(
                env, "EDGESENSE_HTTP_HEADER_TIMEOUT_SECONDS", 10.0, 0.001
            ),
            http_body_timeout_seconds=env_number(
                env, "EDGESENSE_HTTP_BODY_TIMEOUT_SECONDS", 30.0, 0.001
            ),
            http_max_connections=env_int(env, "EDGESENSE_HTTP_MAX_CONNECTIONS", 0, 0),
            max_webhooks_per_project=env_int(env, "EDGESENSE_MAX_WEBHOOKS_PER_PROJECT", 100, 0),
            delivery_senders=env_int(
                env, "EDGESENSE_DELIVERY_SENDERS", SENDERS_BY_DEFAULT, 0, MAX_SENDERS
            ),
            grpc_tls=GrpcTls.from_env(env),
            # Reflection lists every method, the internal ones too: on in dev only.
            grpc_reflection=env_flag(env, "EDGESENSE_GRPC_REFLECTION", dev),
            metrics_addrs={
                name: env_text(env, f"EDGESENSE_{name.upper()}_METRICS_ADDR", default)
                for name, default in DEFAULT_METRICS_ADDRS.items()
            },
        )

    def require_api_keys(self) -> Mapping[str, str]:
        if not self.api_keys:
            raise ConfigurationError(
                "EDGESENSE_API_KEYS is not set: give key=projectId pairs, "
                "or run with --dev for a development key"
            )
        return self.api_keys

    def require_secret_key(self) -> bytes:
        if self.secret_key is None:
            raise ConfigurationError(
                "EDGESENSE_SECRET_KEY is not set: it encrypts signing secrets at rest "
                "(32 random bytes, URL-safe base64), or run with --dev"
            )
        return self.secret_key

    def metrics_addr(self, service: str) -> str:
        return self.metrics_addrs.get(service) or DEFAULT_METRICS_ADDRS[service]

    def service_token(self) -> str:
        """The internal token: EDGESENSE_INTERNAL_TOKEN, else derived from the secret key."""
        if self.internal_token:
            return self.internal_token
        from edgesense.common.auth import derive_internal_token

        return derive_internal_token(self.require_secret_key())
