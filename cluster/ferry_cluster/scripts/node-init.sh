#!/bin/sh
# PID 1 of a simulated node, started by `unshare` in new mount, UTS, IPC, PID,
# cgroup and network namespaces (see nodes.py). It builds the node's view of
# the world inside its own mount namespace, so every mount dies with the node
# and nothing leaks to the host, then pivots into the node's root and becomes
# catatonit, a reaping init.
#
# usage: node-init.sh LOWER UPPER WORK ROOT CONTAINERS DOCKER CONTAINERD CRI SRC HOSTNAME CGROUP_SPEC...
#   LOWER is overlayfs' lowerdir (colon-separated layers, top first);
#   CONTAINERS, DOCKER, CONTAINERD and CRI are plain directories for podman's, dockerd's,
#   Docker's containerd's and the kubelet's containerd's storage (their overlay
#   mounts cannot stack on the node's root);
#   SRC is the project's source tree, mounted read-only at /opt/ferry/src;
#   CGROUP_SPEC is DIR:FSTYPE:OPTIONS for each hierarchy to mount under
#   /sys/fs/cgroup ("-" as DIR for a cgroup2-only host: mounted at the top).
set -eu
LOWER=$1 UPPER=$2 WORK=$3 ROOT=$4 CONTAINERS=$5 DOCKER=$6 CONTAINERD=$7 CRI=$8 SRC=$9 NAME=${10}
shift 10

mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$UPPER,workdir=$WORK" "$ROOT"

mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
if [ "${1%%:*}" = "-" ]; then
  mount -t cgroup2 cgroup2 "$ROOT/sys/fs/cgroup"
else
  mount -t tmpfs -o mode=755 cgroup "$ROOT/sys/fs/cgroup"
  for spec in "$@"; do
    dir=${spec%%:*}; rest=${spec#*:}; fstype=${rest%%:*}; opts=${rest#*:}
    mkdir -p "$ROOT/sys/fs/cgroup/$dir"
    if [ "$fstype" = cgroup2 ]; then
      mount -t cgroup2 cgroup2 "$ROOT/sys/fs/cgroup/$dir"
    else
      mount -t cgroup -o "$opts" cgroup "$ROOT/sys/fs/cgroup/$dir"
    fi
  done
fi

# A private /dev with the usual nodes, its own ptys, shm and mqueue.
mount -t tmpfs -o mode=755,nosuid tmpfs "$ROOT/dev"
for dev in null zero full random urandom tty fuse net/tun kmsg; do
  [ -e "/dev/$dev" ] || continue
  mkdir -p "$(dirname "$ROOT/dev/$dev")"
  touch "$ROOT/dev/$dev"
  mount --bind "/dev/$dev" "$ROOT/dev/$dev"
done
mkdir -p "$ROOT/dev/pts" "$ROOT/dev/shm" "$ROOT/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$ROOT/dev/pts"
ln -s pts/ptmx "$ROOT/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$ROOT/dev/shm"
mount -t mqueue mqueue "$ROOT/dev/mqueue"
ln -s /proc/self/fd "$ROOT/dev/fd"
ln -s /proc/self/fd/0 "$ROOT/dev/stdin"
ln -s /proc/self/fd/1 "$ROOT/dev/stdout"
ln -s /proc/self/fd/2 "$ROOT/dev/stderr"

mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$ROOT/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$ROOT/tmp"
for bind in "$CONTAINERS:containers" "$DOCKER:docker" "$CONTAINERD:containerd" "$CRI:containerd-cri"; do
  mkdir -p "$ROOT/var/lib/${bind##*:}"
  mount --bind "${bind%:*}" "$ROOT/var/lib/${bind##*:}"
done
mkdir -p "$ROOT/opt/ferry/src"
mount --bind "$SRC" "$ROOT/opt/ferry/src"
mount -o remount,bind,ro "$ROOT/opt/ferry/src"

hostname "$NAME"

cd "$ROOT"
mkdir -p .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot
rmdir /.oldroot
# Shared, as on a systemd host: a pod's Bidirectional hostPath mount (the
# helper's podman storage) needs its source mount shared.
mount --make-rshared /
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
echo "node $NAME ready"
exec /usr/bin/catatonit -P
