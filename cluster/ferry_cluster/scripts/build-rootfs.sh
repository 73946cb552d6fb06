#!/usr/bin/env bash
# Builds the simulated nodes' root filesystem: Debian trixie (debootstrap) with
# podman, crun, Docker Engine (docker.io, its CLI, containerd and runc),
# CRIU >= 4.2.1 from sid (older CRIU fails on this kernel, see DESIGN.md),
# networking tools, busybox-static and Python for the node-helper.
# Cached outside the repo, keyed by this script's package set: a second run is free.
set -euo pipefail

CACHE="${FERRY_CACHE:-/var/cache/ferry}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=trixie
PACKAGES=(podman crun conmon catatonit netavark aardvark-dns containers-storage uidmap fuse-overlayfs
  iproute2 iputils-ping nftables iptables busybox-static procps psmisc zstd gzip tar ca-certificates
  python3 python3-venv python3-pip util-linux dbus-user-session
  openssh-client openssh-server
  docker.io docker-cli containerd runc)
SID_PACKAGES=(criu libcriu2 libcompel1)
KEY="$(printf '%s\n' "$SUITE" "${PACKAGES[@]}" -- "${SID_PACKAGES[@]}" rev2 | sha256sum | cut -c1-12)"
OUT="$CACHE/rootfs-$SUITE-$KEY"

log() { printf '[build-rootfs] %s\n' "$*" >&2; }

if [[ -f "$OUT/.complete" ]]; then
  echo "$OUT"
  exit 0
fi

command -v debootstrap >/dev/null || { log "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
TMP="$OUT.tmp"
cleanup_mounts() {
  for m in dev/pts dev proc sys; do umount -l "$TMP/$m" 2>/dev/null || true; done
}
trap cleanup_mounts EXIT
cleanup_mounts
rm -rf "$TMP"
mkdir -p "$TMP"
log "debootstrap $SUITE into $TMP"
debootstrap --variant=minbase "$SUITE" "$TMP" "$MIRROR" >"$CACHE/debootstrap-$KEY.log" 2>&1 ||
  { tail -20 "$CACHE/debootstrap-$KEY.log" >&2; exit 1; }

mount -t proc proc "$TMP/proc"
mount -t sysfs sys "$TMP/sys"
mount --bind /dev "$TMP/dev"
mount --bind /dev/pts "$TMP/dev/pts"
cat >"$TMP/etc/apt/sources.list" <<SRC
deb $MIRROR $SUITE main
deb $MIRROR sid main
SRC
cat >"$TMP/etc/apt/preferences.d/sid" <<'PIN'
Package: *
Pin: release n=sid
Pin-Priority: 100
PIN
# The registry's copy of sid can lag its Valid-Until date; it is still signed.
echo 'Acquire::Check-Valid-Until "false";' >"$TMP/etc/apt/apt.conf.d/99no-valid-until"
cp /etc/resolv.conf "$TMP/etc/resolv.conf" 2>/dev/null || true
# Nothing starts services inside the build chroot.
printf '#!/bin/sh\nexit 101\n' >"$TMP/usr/sbin/policy-rc.d"
chmod +x "$TMP/usr/sbin/policy-rc.d"
in_root() { chroot "$TMP" env DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
log "installing ${PACKAGES[*]}"
in_root apt-get update -q >/dev/null
in_root apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >"$CACHE/apt-$KEY.log" 2>&1 ||
  { tail -20 "$CACHE/apt-$KEY.log" >&2; exit 1; }
log "installing ${SID_PACKAGES[*]} from sid"
in_root apt-get install -y -q --no-install-recommends -t sid "${SID_PACKAGES[@]}" >>"$CACHE/apt-$KEY.log" 2>&1 ||
  { tail -20 "$CACHE/apt-$KEY.log" >&2; exit 1; }
in_root apt-get clean
rm -f "$TMP/usr/sbin/policy-rc.d"
# Host keys are made per node at first use (ssh-keygen -A), not shared by all nodes.
rm -f "$TMP"/etc/ssh/ssh_host_*
# Containers in the nodes run with cgroupfs (no systemd in a node) and host networking
# by default; images come from local tarballs only.
mkdir -p "$TMP/etc/containers"
cat >"$TMP/etc/containers/containers.conf" <<'CONF'
[containers]
cgroupns = "private"
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "crun"
CONF
cat >"$TMP/etc/containers/registries.conf" <<'CONF'
unqualified-search-registries = []
CONF
cat >"$TMP/etc/containers/storage.conf" <<'CONF'
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
CONF
cleanup_mounts
trap - EXIT
touch "$TMP/.complete"
rm -rf "$OUT" && mv "$TMP" "$OUT"
echo "$OUT"
