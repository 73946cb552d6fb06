#!/usr/bin/env bash
# Two post-copy test nodes, pcA (10.231.77.1) and pcB (10.231.77.2): network namespaces
# joined by a veth pair, each running pcnode-init.sh over an overlay of the cached node
# rootfs plus $PC/layer (runc 1.3.6, pchog). usage: nodes.sh up|down|exec NODE CMD...
set -euo pipefail
PC=${PC:-/work/scratch/postcopy}
ROOTFS=${ROOTFS:-$(ls -d /var/cache/ferry/rootfs-trixie-* | grep -v '\.tmp$' | head -1)}
HERE=$(cd "$(dirname "$0")" && pwd)
init_pid() { pgrep -P "$(cat "$PC/nodes/$1/unshare.pid")" -x catatonit 2>/dev/null ||
             pgrep -P "$(cat "$PC/nodes/$1/unshare.pid")" 2>/dev/null; }
case $1 in
up)
  mkdir -p "$PC/shared"
  # CRIU's lazy page server sizes a pipe to 3.2 MiB (PIPE_MAX_SIZE); without CAP_SYS_RESOURCE
  # (this environment lacks it) that fails above fs.pipe-max-size (1 MiB), silently, and the
  # first page request dies: "page-pipe: splice: -1: Bad file descriptor". Host-wide: restored by down.
  cat /proc/sys/fs/pipe-max-size >"$PC/pipe-max-size.orig"
  echo 4194304 >/proc/sys/fs/pipe-max-size
  ip netns add pcA; ip netns add pcB
  ip link add pcA-v type veth peer name pcB-v
  ip link set pcA-v netns pcA; ip link set pcB-v netns pcB
  ip -n pcA addr add 10.231.77.1/24 dev pcA-v; ip -n pcA link set pcA-v up; ip -n pcA link set lo up
  ip -n pcB addr add 10.231.77.2/24 dev pcB-v; ip -n pcB link set pcB-v up; ip -n pcB link set lo up
  for n in pcA pcB; do
    d=$PC/nodes/$n; mkdir -p "$d"/{upper,work,root}
    ip netns exec $n unshare --mount --uts --ipc --pid --fork --kill-child --propagation private \
      sh "$HERE/pcnode-init.sh" "$PC/layer:$ROOTFS" "$d/upper" "$d/work" "$d/root" "$PC/shared" $n \
      >"$d/init.log" 2>&1 &
    echo $! >"$d/unshare.pid"
  done
  sleep 1; for n in pcA pcB; do cat "$PC/nodes/$n/init.log"; done ;;
exec)
  n=$2; shift 2
  exec nsenter --target="$(init_pid $n)" --mount --uts --ipc --net --pid --root --wd \
    env -i PATH=/opt/pc/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@" ;;
down)
  for n in pcA pcB; do
    f=$PC/nodes/$n/unshare.pid
    [ -f "$f" ] && { p=$(init_pid $n || true); [ -n "$p" ] && kill -9 $p; kill "$(cat $f)" 2>/dev/null || true; rm -f "$f"; }
  done
  sleep 1
  ip netns del pcA 2>/dev/null || true; ip netns del pcB 2>/dev/null || true
  # runc's cgroups (the nodes share the host's cgroup v1 hierarchies)
  for d in /sys/fs/cgroup/*/postcopy; do [ -d "$d" ] && { rmdir "$d"/*/ "$d" 2>/dev/null || true; }; done
  if [ -f "$PC/pipe-max-size.orig" ]; then cat "$PC/pipe-max-size.orig" >/proc/sys/fs/pipe-max-size; rm "$PC/pipe-max-size.orig"; fi
  true ;;
esac
