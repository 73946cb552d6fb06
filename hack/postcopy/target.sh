#!/bin/bash
# Target side of one migration, run inside pcB (started before the source dumps).
# MODE=lazy: receive the small images over TCP, start `criu lazy-pages`, `runc restore --lazy-pages`,
#            wait until the lazy-pages daemon exits (every page is here).
# MODE=pageserver: `criu page-server` receives the pages during the dump, then the small images
#            arrive the same way, then a plain `runc restore`.
# Writes "name epoch" lines to /var/lib/pc/target.times.
set -u
MODE=$1 SRC=$2 PORT=$3 IMGPORT=$4
P=/var/lib/pc; mkdir -p $P; rm -rf $P/img $P/rwork $P/target.times $P/target.done; mkdir -p $P/img $P/rwork
t() { echo "$1 $(date +%s.%N)" >>$P/target.times; }
# The target's own bundle: the shared rootfs (as if moved), its own cgroup (the simulated nodes
# share the host's cgroup v1 hierarchies, so the same cgroupsPath would be one cgroup for both).
mkdir -p $P/bundle
python3 -c 'import json; c=json.load(open("/shared/bundle/config.json")); c["root"]["path"]="/shared/bundle/rootfs"; c["linux"]["cgroupsPath"]="/postcopy/hog-target"; json.dump(c,open("/var/lib/pc/bundle/config.json","w"))'

if [ "$MODE" = pageserver ]; then
  criu page-server -D $P/img -W $P/rwork --address 0.0.0.0 --port $PORT -d -o ps.log -v4 >/dev/null 2>&1
fi
python3 - $IMGPORT $P/img <<'PY'
import io, socket, sys, tarfile
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1)
open("/var/lib/pc/target.listening", "w").close()
c, _ = s.accept(); data = bytearray()
while chunk := c.recv(1 << 20): data += chunk
tarfile.open(fileobj=io.BytesIO(bytes(data))).extractall(sys.argv[2])
PY
t images-received
LAZY=
if [ "$MODE" = lazy ]; then
  criu lazy-pages --page-server --address $SRC --port $PORT -D $P/img -W $P/rwork -o lazy.log -v4 -d \
    >/dev/null 2>$P/lazy.err
  t lazy-daemon-up
  LAZY=--lazy-pages
fi
runc --root /run/pc restore -d $LAZY --image-path $P/img --work-path $P/rwork --bundle $P/bundle hog \
  </dev/null >$P/restore.out 2>&1
echo "restore-rc $?" >>$P/target.times
t restored
if [ "$MODE" = lazy ]; then
  while pgrep -f 'criu lazy-pages' >/dev/null; do sleep 0.02; done
fi
t all-memory-here
touch $P/target.done
