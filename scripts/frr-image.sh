#!/usr/bin/env bash
# Build a local FRR image from Debian's packages (nothing is pulled from a registry):
#   debootstrap --variant=minbase --include=frr,iproute2 bookworm, then docker import.
# Used by the FRR tests (tests/integration/test_frr.py; .ci/run builds it first). Idempotent: an image already
# there is kept; three to four minutes here the first time.
#   bash scripts/frr-image.sh [IMAGE]        (default composens-frr:bookworm)
set -euo pipefail
image=${1:-${COMPOSENS_FRR_IMAGE:-composens-frr:bookworm}}
if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=frr,frr-pythontools,iproute2,iputils-ping,procps bookworm "$root" http://deb.debian.org/debian >/dev/null
# FRR's daemons file: zebra, ospfd and staticd on; the lab's own frr.conf is mounted over /etc/frr/frr.conf.
sed -i -e 's/^ospfd=no/ospfd=yes/' -e 's/^ospf6d=no/ospf6d=yes/' "$root/etc/frr/daemons"
tar -C "$root" -cf - . | docker import \
  -c 'CMD ["/bin/sh", "-c", "/usr/lib/frr/frrinit.sh start && exec sleep infinity"]' \
  -c 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' - "$image" >/dev/null
echo "built $image"
