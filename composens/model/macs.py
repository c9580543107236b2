"""Stable MAC addresses for every interface composens makes, so that a lab behaves like hardware.

Pure. A real switch port whose host rebooted keeps its MAC; a veth made again after a container restart
would get a random one, and its neighbours' ARP and ND entries (and any route through its EUI-64 link-local
address) would point at the old one for half a minute. So each end gets a MAC derived from the project, its
node and its interface name: the same on every run and after every restart, unicast and locally
administered. A file may declare its own per interface (`x-composens.macs`); derived ones that would collide
with another end's in the project are derived again, deterministically.

Real hardware also differs from machine to machine: two copies of a project `lab` on two machines whose
host ends share a physical LAN must not repeat each other's MACs. So each derived MAC is salted with the
machine its end is on (`salt_for`): in a lab over several hosts, that host's underlay address, which the
file gives every host alike; on one machine, its machine id. A file may declare the salt (`mac_salt`) for
MACs that stay when the lab moves; an empty one derives them from the project alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from composens.model.errors import ConfigError

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


class MacError(ValueError):
    pass


def parse_mac(value: object) -> str:
    """A declared MAC, six octets as `ip` writes them (lowercased); unicast and not all zeros."""
    if not isinstance(value, str):
        raise MacError(f"{value!r} is not a MAC address (six octets such as 02:00:5e:10:00:03)")
    mac = value.strip().lower().replace("-", ":")
    if not _MAC.fullmatch(mac):
        raise MacError(f"{value!r} is not a MAC address (six octets such as 02:00:5e:10:00:03)")
    if int(mac[:2], 16) & 1:
        raise MacError(f"{value!r} is a multicast MAC (the first octet's lowest bit is set); give a unicast one")
    if mac == "00:00:00:00:00:00":
        raise MacError(f"{value!r} is not a usable MAC address")
    return mac


def derive(project: str, node: str, ifname: str, attempt: int = 0, salt: str = "") -> str:
    """A MAC from the project, node, interface and salt (the machine's): locally administered (bit 1 set),
    unicast (bit 0 clear). Without a salt, the MAC the project alone gives (the same on every machine)."""
    from _blake2 import blake2s  # hashlib's finder costs start-up; the builtin module is the same digest

    again = f"\0{attempt}" if attempt else ""
    salted = f"\0salt\0{salt}" if salt else ""
    octets = bytearray(blake2s(f"{project}\0{node}\0{ifname}{again}{salted}".encode(), digest_size=6).digest())
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{octet:02x}" for octet in octets)


def salt_for(declared: str | None, underlay: str | None, machine: str | None) -> str:
    """The salt of an end's derived MAC: the file's `mac_salt`; else its host's underlay address (a lab over
    several hosts: every host derives every end alike); else this machine's id; else none."""
    if declared is not None:
        return declared
    if underlay is not None:
        return f"underlay {underlay}"
    return f"machine {machine}" if machine else ""


def parse_salt(value: object) -> str:
    """A declared `mac_salt`: a string (or a number, as YAML may read one); empty: no salt."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MacError(f"{value!r} is not a salt (a string; empty for MACs from the project alone)")
    return str(value)


def assign(
    project: str,
    ends: Iterable[tuple[str, str]],
    declared: Mapping[tuple[str, str], str],
    *,
    source: str,
    salts: Mapping[tuple[str, str], str] | None = None,
) -> dict[tuple[str, str], str]:
    """A distinct MAC for every (node, ifname) end: the declared one, or else derived (with the end's salt).

    Two ends declaring one MAC is an error; a derived one that meets another end's is derived again (in the
    order of the ends' names, so every run and every host computes the same).
    """
    owners: dict[str, tuple[str, str]] = {}
    for end, mac in sorted(declared.items()):
        if mac in owners:
            first, second = (":".join(e) for e in (owners[mac], end))
            raise ConfigError(f"{source}: {first} and {second} both declare the MAC {mac}; give one of them another")
        owners[mac] = end
    macs = dict(declared)
    for end in sorted(set(ends) - set(declared)):
        salt = (salts or {}).get(end, "")
        attempt = 0
        mac = derive(project, *end, salt=salt)
        while mac in owners:
            attempt += 1
            mac = derive(project, *end, attempt, salt)
        owners[mac] = end
        macs[end] = mac
    return macs
