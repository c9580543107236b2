#!/usr/bin/env bash
# Run a shell script as root in a throwaway KVM guest on Debian's own kernel, and bring back what it printed.
#
#   sudo bash scripts/netem-vm.sh SCRIPT OUTPUT_DIR
#
# Why: link conditions need sch_netem, and a host kernel may lack it (a Firecracker guest, say) without
# any way to load it. Debian's linux-image-amd64 has it as a module; so this boots that kernel with a
# tiny initramfs (busybox-static, iproute2's ip and tc with their libraries, the modules below) whose
# /init loads the modules, runs SCRIPT with busybox sh and powers off. The guest has no network device:
# whatever SCRIPT sends stays inside its own kernel.
#
# Idempotent: installs what is missing (qemu-system-x86, cpio, busybox-static, iproute2), downloads the
# kernel package with `apt-get download` and builds the initramfs once, cached under
# $COMPOSENS_VM_CACHE (/var/cache/composens-vm) and keyed on the package versions and this file.
#
# OUTPUT_DIR gets: stdout and stderr (SCRIPT's), status (its exit code), kernel.log (the guest's dmesg),
# console.log (the whole serial console) and vm.json (accelerator, kernel, timings).
# Exit code: SCRIPT's own; 3 when the guest brought back no result (read console.log); 2 for usage.
# In SCRIPT, ip and tc are iproute2's (/sbin/ip, /sbin/tc) and everything else is busybox.
# COMPOSENS_VM_ACCEL=tcg forces emulation; COMPOSENS_VM_TIMEOUT sets the guest's limit in seconds.
set -euo pipefail

cache=${COMPOSENS_VM_CACHE:-/var/cache/composens-vm}
modules=(veth sch_netem sch_tbf)
marker="=== composens-vm"
log() { printf 'netem-vm: %s\n' "$*" >&2; }

if [ $# -ne 2 ] || [ ! -f "$1" ]; then
  echo "usage: $0 SCRIPT OUTPUT_DIR (SCRIPT: a file, run by busybox sh as root in the guest)" >&2
  exit 2
fi
if [ "$(id -u)" != 0 ]; then
  echo "netem-vm: run as root (it installs packages and keeps a cache in $cache)" >&2
  exit 2
fi
script=$(realpath "$1")
mkdir -p "$2" "$cache"
out=$(realpath "$2")
rm -f "$out"/{stdout,stderr,status,kernel.log,console.log,vm.json}

updated=
apt_update() {
  [ -n "$updated" ] && return
  log "apt-get update"
  apt-get update -qq
  updated=1
}
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v cpio >/dev/null || missing+=(cpio)
command -v busybox >/dev/null || missing+=(busybox-static)
command -v tc >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# One run builds the cache at a time; the others wait for it.
exec {lock}>"$cache/lock"
flock "$lock"

# The kernel package that linux-image-amd64 stands for today (linux-image-6.1.0-57-amd64, ...).
# (sed reads to the end, where `head` would close the pipe early: SIGPIPE, and pipefail stops the script)
kernel_package() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | sed -n 1p; }
package=$(kernel_package)
if [ -z "$package" ]; then
  apt_update
  package=$(kernel_package)
fi
[ -n "$package" ] || { log "apt knows no linux-image-amd64: is this Debian?"; exit 3; }
version=$(apt-cache show --no-all-versions "$package" | sed -n 's/^Version: //p')
deb="$cache/${package}_${version}_amd64.deb"
if [ ! -s "$deb" ]; then
  log "downloading $package $version"
  tmp=$(mktemp -d "$cache/download.XXXXXX")
  (cd "$tmp" && apt-get -qq -o APT::Sandbox::User=root download "$package=$version")
  mv "$tmp"/*.deb "$deb"
  rm -rf "$tmp"
  find "$cache" -maxdepth 1 -name 'linux-image-*.deb' ! -path "$deb" -delete  # older kernels
fi

tools="$(dpkg-query -W -f '${Version}' iproute2) $(busybox | sed -n 1p)"
key=$(printf '%s\n' "$package $version" "$tools" "${modules[*]}" "$(sha256sum <"$0")" | sha256sum | cut -c1-16)
built="$cache/initrd-$key"
if [ ! -s "$built/initrd.gz" ]; then
  log "building the guest's kernel and initramfs in $built"
  find "$cache" -maxdepth 1 -name 'initrd-*' -exec rm -rf {} +
  work=$(mktemp -d "$cache/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  dpkg-deb -x "$deb" "$work/deb"
  kver=$(basename "$(ls -d "$work"/deb/lib/modules/*/)")
  root="$work/root"
  mkdir -p "$root"/{bin,sbin,dev,proc,sys,run,tmp,etc} "$root/lib/modules/$kver"

  cp "$(command -v busybox)" "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    case $applet in busybox | ip | tc) ;; *) ln -s busybox "$root/bin/$applet" ;; esac
  done
  # iproute2's ip and tc (busybox's know no netns and no netem), with the libraries they load.
  for tool in ip tc; do
    cp "$(command -v $tool)" "$root/sbin/$tool"
    for lib in $(ldd "$(command -v $tool)" | grep -o '/[^ ]*'); do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  done
  tclib=$(dirname "$(dpkg -L iproute2 | grep '/tc/normal.dist$')")  # netem's delay distributions
  mkdir -p "$root$tclib"
  cp "$tclib"/*.dist "$root$tclib/"

  # The modules and everything they depend on, with a modules.dep of just those for busybox modprobe.
  busybox depmod -b "$work/deb" "$kver"
  dep="$work/deb/lib/modules/$kver/modules.dep"
  files=()
  for module in "${modules[@]}"; do
    line=$(grep -E "(^|/)${module//_/[-_]}\.ko(\.[a-z]+)?:" "$dep") || { log "no module $module in $package"; exit 3; }
    read -ra needs <<<"${line/:/}"
    files+=("${needs[@]}")
  done
  for file in $(printf '%s\n' "${files[@]}" | sort -u); do
    mkdir -p "$root/lib/modules/$kver/$(dirname "$file")"
    grep -E "^$file:" "$dep" >>"$root/lib/modules/$kver/modules.dep"
    # Newer Debian kernels compress their modules: unpack them here, for any busybox to load.
    case $file in
      *.ko.xz) busybox xz -dc "$work/deb/lib/modules/$kver/$file" >"$root/lib/modules/$kver/${file%.xz}" ;;
      *.ko.zst) zstd -qdc "$work/deb/lib/modules/$kver/$file" >"$root/lib/modules/$kver/${file%.zst}" ;;
      *.ko.gz) busybox gzip -dc "$work/deb/lib/modules/$kver/$file" >"$root/lib/modules/$kver/${file%.gz}" ;;
      *) cp "$work/deb/lib/modules/$kver/$file" "$root/lib/modules/$kver/$file" ;;
    esac
  done
  sed -i -E 's/\.ko\.(xz|zst|gz)\b/.ko/g' "$root/lib/modules/$kver/modules.dep"

  cat >"$root/init" <<EOF
#!/bin/busybox sh
# PID 1 of the guest: mount, load modules, run /script, print what it said between markers, power off.
export PATH=/sbin:/bin
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
dmesg -n 1  # kernel messages go to kernel.log, not into the middle of the script's output
modprobe -a ${modules[*]} || echo "$marker: modprobe failed ==="
ip link set lo up
section() {
  echo "$marker: \$1 begin ==="
  cat "\$2"
  if [ -s "\$2" ] && tail -c 1 "\$2" | grep -q .; then echo; fi
  echo "$marker: \$1 end ==="
}
echo "$marker: init ==="
read start _ </proc/uptime
# busybox sh runs its own applets before PATH: ip and tc must be iproute2's.
(cd /tmp && sh -c 'ip() { /sbin/ip "\$@"; }; tc() { /sbin/tc "\$@"; }; . /script' </dev/null >/run/stdout 2>/run/stderr)
status=\$?
read end _ </proc/uptime
dmesg >/run/kernel.log
section stdout /run/stdout
section stderr /run/stderr
section kernel.log /run/kernel.log
echo "$marker: uptime \$start \$end ==="
echo "$marker: exit \$status ==="
poweroff -f
sleep 1
reboot -f  # with -no-reboot, qemu ends on a reset too
EOF
  chmod 0755 "$root/init"
  mknod -m 600 "$root/dev/console" c 5 1
  mkdir -p "$work/out"
  cp "$work/deb/boot/vmlinuz-$kver" "$work/out/vmlinuz"
  echo "$kver" >"$work/out/kernel-release"
  (cd "$root" && find . | sort | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$work/out/initrd.gz"
  mv "$work/out" "$built"
  rm -rf "$work"
  trap - EXIT
fi
flock -u "$lock"

# The script rides in a second archive after the cached one: the kernel unpacks both.
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
mkdir "$run/root"
cp "$script" "$run/root/script"
(cd "$run/root" && echo script | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$run/script.gz"
cat "$built/initrd.gz" "$run/script.gz" >"$run/initrd.gz"

kvm_usable() {
  (exec 3<>/dev/kvm) 2>/dev/null || return 1
  # A /dev/kvm without VMX or SVM behind it (PVM, in a Firecracker guest) runs only kernels built for it:
  # a stock kernel crawls there. TCG boots this guest in seconds.
  [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]
}

# boot ACCEL: run the guest to its end; fail if under KVM it has not reached /init within 30 s.
boot() {
  local limit qemu_accel=(-machine accel=tcg)
  limit=${COMPOSENS_VM_TIMEOUT:-600}
  if [ "$1" = kvm ]; then
    qemu_accel=(-enable-kvm -cpu host)
    limit=${COMPOSENS_VM_TIMEOUT:-120}
  fi
  # -nic none: the guest has no network device, so nothing it sends can leave it.
  timeout --kill-after=5 "$limit" qemu-system-x86_64 "${qemu_accel[@]}" -m 512 -nographic -no-reboot -nic none \
    -kernel "$built/vmlinuz" -initrd "$run/initrd.gz" -append "console=ttyS0 quiet panic=-1" \
    </dev/null >"$out/console.log" 2>&1 &
  local pid=$! waited=0
  while [ "$1" = kvm ] && ! grep -q "^$marker: init ===" "$out/console.log" && kill -0 "$pid" 2>/dev/null; do
    if [ $waited -ge 300 ]; then
      kill "$pid"
      wait "$pid" || true
      return 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  wait "$pid" || log "qemu exited $? (limit ${limit}s)"
}

accel=${COMPOSENS_VM_ACCEL:-kvm}
if [ "$accel" = kvm ] && ! kvm_usable; then
  log "/dev/kvm cannot run a stock kernel here: emulating with TCG"
  accel=tcg
fi
began=$(date +%s.%N)
if ! boot "$accel"; then
  log "the guest did not reach /init in 30 s under KVM: emulating with TCG"
  accel=tcg
  began=$(date +%s.%N)
  boot tcg
fi
ended=$(date +%s.%N)

console=$(sed 's/\r$//' "$out/console.log")
for part in stdout stderr kernel.log; do
  awk -v begin="$marker: $part begin ===" -v end="$marker: $part end ===" \
    '$0 == end { inside = 0 } inside { print } $0 == begin { inside = 1 }' <<<"$console" >"$out/$part"
done
status=$(sed -n "s/^$marker: exit \([0-9]*\) ===\$/\1/p" <<<"$console")
read -r start end < <(sed -n "s/^$marker: uptime \([0-9.]*\) \([0-9.]*\) ===\$/\1 \2/p" <<<"$console") || true
printf '{"accel": "%s", "kernel": "%s", "package": "%s %s", "wall_s": %.2f, "script_start_s": %s, "script_end_s": %s}\n' \
  "$accel" "$(cat "$built/kernel-release")" "$package" "$version" "$(awk -v a="$began" -v b="$ended" 'BEGIN { print b - a }')" \
  "${start:-null}" "${end:-null}" >"$out/vm.json"
if [ -z "$status" ]; then
  log "the guest brought back no result: see $out/console.log"
  exit 3
fi
echo "$status" >"$out/status"
exit "$status"
