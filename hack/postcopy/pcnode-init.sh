#!/bin/sh
# PID 1 of a post-copy test node (a trimmed copy of cluster/ferry_cluster/scripts/node-init.sh):
# run by `ip netns exec NS unshare --mount --uts --ipc --pid --fork`, it mounts an overlay of
# the cached node rootfs, the host's cgroup hierarchies, a private /dev, and SHARED at /shared
# (the bundle both nodes see, as if the rootfs had been moved), then pivots and waits.
# usage: pcnode-init.sh LOWER UPPER WORK ROOT SHARED NAME
set -eu
LOWER=$1 UPPER=$2 WORK=$3 ROOT=$4 SHARED=$5 NAME=$6
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$UPPER,workdir=$WORK" "$ROOT"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount -t tmpfs -o mode=755 cgroup "$ROOT/sys/fs/cgroup"
for h in $(awk '$3 == "cgroup" && $2 ~ "^/sys/fs/cgroup/" {print $2 ":" $4}' /proc/1/mounts); do
  dir=${h%%:*}; dir=${dir#/sys/fs/cgroup/}; opts=${h#*:}
  want=$(echo "$opts" | tr , '\n' | grep -v -e '^rw$' -e '^relatime$' | paste -sd, -)
  mkdir -p "$ROOT/sys/fs/cgroup/$dir"
  mount -t cgroup -o "$want" cgroup "$ROOT/sys/fs/cgroup/$dir"
done
if grep -q ' /sys/fs/cgroup/unified cgroup2' /proc/1/mounts; then
  mkdir -p "$ROOT/sys/fs/cgroup/unified"; mount -t cgroup2 cgroup2 "$ROOT/sys/fs/cgroup/unified"
fi
mount -t tmpfs -o mode=755,nosuid tmpfs "$ROOT/dev"
for dev in null zero full random urandom tty fuse net/tun kmsg; do
  [ -e "/dev/$dev" ] || continue
  mkdir -p "$(dirname "$ROOT/dev/$dev")"; touch "$ROOT/dev/$dev"; mount --bind "/dev/$dev" "$ROOT/dev/$dev"
done
mkdir -p "$ROOT/dev/pts" "$ROOT/dev/shm" "$ROOT/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$ROOT/dev/pts"
ln -s pts/ptmx "$ROOT/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$ROOT/dev/shm"
mount -t mqueue mqueue "$ROOT/dev/mqueue"
ln -s /proc/self/fd "$ROOT/dev/fd"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$ROOT/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$ROOT/tmp"
mkdir -p "$ROOT/shared"; mount --bind "$SHARED" "$ROOT/shared"
hostname "$NAME"
cd "$ROOT"; mkdir -p .oldroot; pivot_root . .oldroot; cd /; umount -l /.oldroot; rmdir /.oldroot
mount --make-rshared /
ip link set lo up
echo "node $NAME ready"
exec /usr/bin/catatonit -P
