"""containerlab's node keys that have a compose equivalent, by name: the vocabulary import and export share."""

from __future__ import annotations

import re

# containerlab node key -> compose service key, for values carried as they are.
SCALARS = {
    "image": "image",
    "cmd": "command",
    "entrypoint": "entrypoint",
    "user": "user",
    "memory": "mem_limit",
    "cpu": "cpus",
    "cpu-set": "cpuset",
    "shm-size": "shm_size",
    "hostname": "hostname",
    "privileged": "privileged",
    "restart-policy": "restart",
    "pid-mode": "pid",
    "cgroup-parent": "cgroup_parent",
}
MAPS = {"env": "environment", "labels": "labels", "sysctls": "sysctls"}
UNIONS = {"env-files": "env_file", "cap-add": "cap_add", "devices": "devices", "security-opts": "security_opt"}
PLAIN_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")  # what sh leaves as it is: no quotes, globs, $ or ~
