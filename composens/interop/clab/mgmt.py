"""containerlab's management network, as a compose network of the project, and back.

containerlab (core/config.go, core/clab.go initMgmtNetwork, runtime/docker/docker.go) puts every node whose
`network-mode` is not none, host or container:X on one docker bridge network: `mgmt.network` (default `clab`)
with `ipv4-subnet` 172.20.20.0/24 and `ipv6-subnet` 3fff:172:20:20::/64 when the topology gives neither (one
alone means that family only; `""` is the same as absent), IPv6 enabled when it has an IPv6 subnet, a gateway
only where `ipv4-gw`/`ipv6-gw` says (docker then takes the subnet's first address: 172.20.20.1,
3fff:172:20:20::1), `mtu`, `bridge` (the Linux bridge's name) and `driver-opts` as the driver's options.
`network: bridge` is docker's own default bridge, which containerlab joins as it is. `ipv4-subnet: auto` lets
docker pick the pool; `ipv6-subnet: auto` is a random ULA /64 (here one derived from the lab's name, so that an
import is the same every time).

The import keeps the network the project's own (compose names it `<project>_clab`), so that `down` removes it and
two labs do not share it by accident. Docker refuses two networks with overlapping subnets: two labs that both
take the default 172.20.20.0/24 (or one and a running containerlab lab) cannot run at once.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from composens.model.errors import ConfigError

DEFAULT_NETWORK = "clab"
DEFAULT_IPV4 = "172.20.20.0/24"
DEFAULT_IPV6 = "3fff:172:20:20::/64"
DOCKER_BRIDGE = "bridge"  # docker's own default network
MTU_OPTION = "com.docker.network.driver.mtu"
BRIDGE_OPTION = "com.docker.network.bridge.name"
AUTO = "auto"
_COMPOSE_NAME = re.compile(r"[a-zA-Z0-9._-]+")
_KEYS = (
    "network",
    "bridge",
    "ipv4-subnet",
    "ipv4-gw",
    "ipv4-range",
    "ipv6-subnet",
    "ipv6-gw",
    "ipv6-range",
    "mtu",
    "external-access",
    "skip-when-unused",
    "driver-opts",
    "ipv4_subnet",
    "ipv6_subnet",
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Mgmt:
    """The management network as the import writes it."""

    network: str  # the compose network's key; DOCKER_BRIDGE: the nodes join docker's default bridge
    spec: Mapping[str, Any] = field(default_factory=dict)  # the compose network's definition
    subnets: tuple[Network, ...] = ()  # the subnets it has for certain (not docker's pick)
    families: frozenset[int] = frozenset({4})  # the families docker gives a node a default route of, through it

    @property
    def docker_bridge(self) -> bool:
        return self.network == DOCKER_BRIDGE


def import_mgmt(section: Any, lab: str, source: str, warnings: list[str]) -> Mgmt:
    """Read the topology's `mgmt` section (None when it has none)."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: mgmt: must be a mapping")
    name = section.get("network") or DEFAULT_NETWORK
    if not isinstance(name, str) or not _COMPOSE_NAME.fullmatch(name):
        raise ConfigError(f"{source}: mgmt.network: {name!r} is not a network name (letters, digits, '._-')")
    for key in section:
        if key not in _KEYS:
            warnings.append(f"mgmt: {key}: not a containerlab management network key; not carried")
    if "external-access" in section:
        warnings.append("mgmt: external-access: composens leaves docker's own firewall rules as they are; not carried")
    if name == DOCKER_BRIDGE:
        # containerlab joins the existing network as it is: nothing of the section applies to it.
        for key in sorted(set(section) & {*_KEYS} - {"network", "external-access", "skip-when-unused"}):
            warnings.append(f"mgmt: {key}: docker's default bridge network is used as it is; not carried")
        return Mgmt(DOCKER_BRIDGE)
    subnets = {4: _text(section, "ipv4-subnet", source), 6: _text(section, "ipv6-subnet", source)}
    if not subnets[4] and not subnets[6]:
        subnets = {4: DEFAULT_IPV4, 6: DEFAULT_IPV6}
    if subnets[6] == AUTO:
        subnets[6] = _ula(lab)
    pools = []
    known: list[Network] = []
    for family in (4, 6):
        subnet = subnets[family]
        if not subnet or subnet == AUTO:
            continue
        try:
            network = ipaddress.ip_network(subnet)
        except ValueError:
            raise ConfigError(f"{source}: mgmt.ipv{family}-subnet: {subnet!r} is not a subnet") from None
        if network.version != family:
            raise ConfigError(f"{source}: mgmt.ipv{family}-subnet: {subnet!r} is not an IPv{family} subnet")
        known.append(network)
        pool = {"subnet": str(network)}
        for key, compose_key in (("gw", "gateway"), ("range", "ip_range")):
            value = _text(section, f"ipv{family}-{key}", source)
            if value:
                pool[compose_key] = value
        pools.append(pool)
    spec: dict[str, Any] = {}
    if subnets[6]:
        spec["enable_ipv6"] = True
    if pools:
        spec["ipam"] = {"config": pools}
    options = {}
    if section.get("mtu"):
        options[MTU_OPTION] = str(section["mtu"])
    if section.get("bridge"):
        options[BRIDGE_OPTION] = str(section["bridge"])
    driver_opts = section.get("driver-opts") or {}
    if not isinstance(driver_opts, dict):
        raise ConfigError(f"{source}: mgmt.driver-opts: must be a mapping")
    options.update({str(k): str(v) for k, v in driver_opts.items()})  # last, as containerlab merges them
    if options:
        spec["driver_opts"] = options
    families = frozenset({4} | ({6} if subnets[6] else set()))  # docker always gives a bridge network IPv4
    return Mgmt(name, spec, tuple(known), families)


def _text(section: Mapping[str, Any], key: str, source: str) -> str:
    value = section.get(key)
    if not value and key.endswith("-subnet"):
        value = section.get(key.replace("-", "_"))  # containerlab still reads the old spelling
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{source}: mgmt.{key}: must be a string")
    return value.strip()


def _ula(lab: str) -> str:
    """A unique local /64 for `ipv6-subnet: auto`: containerlab draws one at random, this one is the lab's own."""
    digest = hashlib.blake2s(f"containerlab mgmt {lab}".encode(), digest_size=7).digest()
    return str(ipaddress.IPv6Network((b"\xfd" + digest + bytes(8), 64)))


# ----- export


@dataclass
class Exported:
    """The management network of a compose project, for containerlab."""

    section: dict[str, Any] = field(default_factory=dict)  # the topology's `mgmt` (empty: containerlab's defaults)
    network: str | None = None  # the compose network it stands for; None: no service is on a network
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # mgmt-ipv4, mgmt-ipv6, aliases per service


def export_mgmt(config: Mapping[str, Any], warnings: list[str]) -> Exported:
    """The project's management network: the network most of its services are on (docker's default bridge when
    they say `network_mode: bridge`)."""
    services = config.get("services") or {}
    networks = config.get("networks") or {}
    users: dict[str, list[str]] = {}
    for name, spec in services.items():
        mode = spec.get("network_mode")
        if mode == DOCKER_BRIDGE:
            users.setdefault(DOCKER_BRIDGE, []).append(name)
        elif not mode:
            for network in spec.get("networks") or {}:
                users.setdefault(network, []).append(name)
    if not users:
        return Exported()
    chosen = max(users, key=lambda n: len(users[n]))  # the first of the most used, in the file's order
    exported = Exported(network=chosen)
    for network, names in users.items():
        if network != chosen:
            for name in names:
                key = "network_mode: bridge" if network == DOCKER_BRIDGE else f"networks: {network}"
                warnings.append(f"{name}: {key}: containerlab has one management network ({chosen}); not carried")
    if chosen == DOCKER_BRIDGE:
        exported.section = {"network": DOCKER_BRIDGE}
        return exported
    if chosen != DEFAULT_NETWORK:
        exported.section["network"] = chosen
    spec = networks.get(chosen) or {}
    families: dict[int, dict[str, str]] = {4: {}, 6: {}}
    for pool in (spec.get("ipam") or {}).get("config") or []:
        subnet = pool.get("subnet")
        if not subnet:
            continue
        family = ipaddress.ip_network(subnet, strict=False).version
        families[family] = {"subnet": subnet, "gw": pool.get("gateway") or "", "range": pool.get("ip_range") or ""}
    if not families[4] and not families[6]:
        # No pool: docker picks one, which containerlab's `auto` asks of it too.
        exported.section["ipv4-subnet"] = AUTO
        if spec.get("enable_ipv6"):
            exported.section["ipv6-subnet"] = AUTO
    for family in (4, 6):
        for key in ("subnet", "gw", "range"):
            if families[family].get(key):
                exported.section[f"ipv{family}-{key}"] = families[family][key]
    if spec.get("enable_ipv6") and families[4] and not families[6]:
        exported.section["ipv6-subnet"] = AUTO
    options = dict(spec.get("driver_opts") or {})
    if MTU_OPTION in options:
        exported.section["mtu"] = int(options.pop(MTU_OPTION))
    if BRIDGE_OPTION in options:
        exported.section["bridge"] = options.pop(BRIDGE_OPTION)
    if options:
        exported.section["driver-opts"] = {str(k): str(v) for k, v in options.items()}
    if spec.get("driver") not in (None, "bridge"):
        warnings.append(f"networks.{chosen}: driver {spec['driver']}: containerlab makes a bridge; not carried")
    for key in ("external", "internal", "attachable", "labels"):
        if spec.get(key):
            warnings.append(f"networks.{chosen}: {key}: has no containerlab equivalent; not carried")
    for name in users[chosen]:
        attached = (services[name].get("networks") or {}).get(chosen) or {}
        node: dict[str, Any] = {}
        for family in (4, 6):
            if attached.get(f"ipv{family}_address"):
                node[f"mgmt-ipv{family}"] = attached[f"ipv{family}_address"]
        # compose lists the service's own name among its aliases on some versions: not an alias of the user's.
        aliases = [a for a in attached.get("aliases") or [] if a != name]
        if aliases:
            node["aliases"] = list(aliases)
        if node:
            exported.nodes[name] = node
    return exported
