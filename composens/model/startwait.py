"""Services that start only once wired: `x-composens: {start_after_wiring: true}`.

Pure. composens wires a container after it has started; a command that looks at its interfaces once, at
start (a VM-based router attaching one tap per interface, `dnsmasq --interface`, a harness reading `ip addr`),
would see none. So such a service's entrypoint becomes a short POSIX shell wait in front of its own command
(the entrypoint and command compose and the image give it): the wait ends when a file named after this very
start of the container appears in a folder composens binds into it read-only, and then `exec`s the command.

The file's name is the container's namespace inode and its first process's start time (field 22 of
/proc/1/stat, clock ticks since boot): the kernel reuses a freed namespace's inode at once, but never within
the same tick of two starts, so a file left from a previous start never matches the next one. composens writes
the file once the namespace is wired (its interfaces with their addresses, routes, conditions and link states),
after `up`, `netns link` or a `watch` repair, and removes the ones no container has any more.

A wait that never ends (composens not run again, watch not running) gives up after its limit with a line on the
container's log saying why, and starts the command anyway.

`x-composens: {start_delay: N}` puts the same shell in front of a command to sleep N seconds first, on every start
of the container (containerlab's `startup-delay`, which compose has no key for); with start_after_wiring as well,
the wiring is waited for after the delay.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Mapping
from typing import Any

DEFAULT_LIMIT = 300  # seconds a wait lasts before the command starts anyway
WIRED_MOUNT = "/run/composens-wired"  # where the folder of wired-flags appears in the container
SHELL = "/bin/sh"
GATED_LABEL = "composens.start-after-wiring"  # on every container made with the wait in front of its command


def wait_script(limit: int | None, delay: int = 0) -> str:
    """The shell that runs as the container's entrypoint: sleep `delay` seconds, wait for this start's flag (up to
    `limit` seconds; None: no wait), then exec the command."""
    if delay:
        # The sleep runs in the background so that a stop's TERM ends it at once (a trap runs once `wait` returns),
        # and the trap ends the sleep too.
        stop = '[ -z "$pause" ] || kill "$pause" 2>/dev/null; '
        lines = [f"trap '{stop}exit 143' TERM", f"trap '{stop}exit 130' INT"]
        lines += [f"sleep {delay} & pause=$!", 'wait "$pause"', "pause="]
    else:
        lines = ["trap 'exit 143' TERM", "trap 'exit 130' INT"]
    if limit is not None:
        lines.append(f"""field22() {{ shift 19; echo "$1"; }}
read -r stat < /proc/1/stat
rest=${{stat##*)}}
started=$(field22 $rest)
ns=$(readlink /proc/self/ns/net 2>/dev/null || ls -l /proc/self/ns/net)
ns=${{ns##*[}}
ns=${{ns%]*}}
waited=0
while [ ! -e "{WIRED_MOUNT}/$ns-$started" ]; do
  if sleep 0.1 2>/dev/null; then waited=$((waited + 1)); else sleep 1; waited=$((waited + 10)); fi
  if [ "$waited" -ge {limit * 10} ]; then
    echo "composens: not wired after {limit} s (composens up -d, netns link or watch wires it); starting anyway" >&2
    break
  fi
done""")
    lines.append('exec "$@"')
    return "\n".join(lines) + "\n"


def flag_name(netns_inode: int, started: int) -> str:
    """The file that says one start of a container is wired: its namespace's inode and its start time."""
    return f"{netns_inode}-{started}"


def command_of(service: Mapping[str, Any], image: Mapping[str, Any]) -> list[str]:
    """The argv a container of the service runs: its entrypoint and command, as the engine merges them with
    the image's (an entrypoint the service sets drops the image's CMD). The service's words come as compose
    config printed them (a literal `$` already `$$`); the image's are escaped the same way."""
    entrypoint = service.get("entrypoint")
    command = service.get("command")
    image_entry = [escape(word) for word in _words(image.get("Entrypoint"))]
    image_cmd = [escape(word) for word in _words(image.get("Cmd"))]
    if entrypoint is not None:
        entry = _words(entrypoint)
        rest = _words(command) if command is not None else ([] if entry else image_cmd)
        return entry + rest
    return image_entry + (_words(command) if command is not None else image_cmd)


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(word) for word in value]


def escape(text: str) -> str:
    """Write a literal for compose, which reads `$` as the start of a variable: `$$` is one `$`."""
    return text.replace("$", "$$")


def wrap(
    config: Mapping[str, Any],
    limits: Mapping[str, int],
    commands: Mapping[str, list[str]],
    wired: str,
    delays: Mapping[str, int] | None = None,
) -> Any:
    """The resolved config with each waiting or delayed service's command behind the wait and, for a waiting one,
    the wired folder bound in.

    `commands` holds each service's argv, escaped for compose (command_of).
    """
    delays = delays or {}
    wrapped = copy.deepcopy(dict(config))
    for name in [*limits, *(name for name in delays if name not in limits)]:
        service = wrapped["services"][name]
        limit = limits.get(name)
        script = wait_script(limit, delays.get(name, 0))
        service["entrypoint"] = [SHELL, "-c", escape(script), "composens-wait"]
        service["command"] = commands[name]
        if limit is None:
            continue  # a delay alone: nothing to wait for, no gate to open
        # create_host_path: the engine makes the folder again when it restarts the container after a reboot
        # (/run is a tmpfs), rather than refusing to start it.
        volume = {
            "type": "bind",
            "source": wired,
            "target": WIRED_MOUNT,
            "read_only": True,
            "bind": {"create_host_path": True},
        }
        service["volumes"] = [*(service.get("volumes") or []), volume]
        # Known by its own label too: its gate must open even once the file stops asking for it.
        service["labels"] = {**(service.get("labels") or {}), GATED_LABEL: str(limit)}
    return wrapped
