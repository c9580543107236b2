#!/usr/bin/env bash
# Bring up the seed's lab (docker-compose.yml), show its netns entries, run its checks (node1 -> node2
# over IPv4 through router1 and IPv6 through router2), and ping the same by hand. Tear it down with:
#   .venv/bin/composens down
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
composens=.venv/bin/composens
"$composens" up -d
"$composens" ps --netns
"$composens" test
echo "--- ip netns exec node1 ping 20.0.0.2 (IPv4 via router1)"
ip netns exec node1 busybox ping -c 2 -W 2 20.0.0.2
echo "--- ip netns exec node1 ping 2001:2222:2222::2 (IPv6 via router2)"
ip netns exec node1 busybox ping -c 2 -W 2 2001:2222:2222::2
