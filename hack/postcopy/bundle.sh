#!/usr/bin/env bash
# The runc bundle both nodes see at /shared/bundle: busybox + pchog, config.json from `runc spec`.
set -euo pipefail
PC=${PC:-/work/scratch/postcopy}; HERE=$(cd "$(dirname "$0")" && pwd)
ROOTFS=${ROOTFS:-$(ls -d /var/cache/ferry/rootfs-trixie-* | grep -v '\.tmp$' | head -1)}
B=$PC/shared/bundle
cp "$HERE/source.sh" "$HERE/target.sh" "$PC/shared/"
mkdir -p "$PC/layer/opt/pc/bin"
cc -static -O2 -o "$PC/layer/opt/pc/bin/pchog" "$HERE/pchog.c"
rm -rf "$B/rootfs"; mkdir -p "$B"/rootfs/{bin,etc,tmp,proc,sys,dev,run}; chmod 1777 "$B/rootfs/tmp"
cp "$ROOTFS/usr/bin/busybox" "$PC/layer/opt/pc/bin/pchog" "$B/rootfs/bin/"
for a in sh ls cat sleep; do ln -sf busybox "$B/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$B/rootfs/etc/passwd"
"$HERE/nodes.sh" exec pcA sh -c 'cd /shared/bundle && rm -f config.json && runc spec'
python3 - "$B/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c['process'].update(terminal=False, args=['/bin/pchog', '1024', '16'], cwd='/tmp')
c['root']['readonly'] = False
c['linux']['cgroupsPath'] = '/postcopy/hog'
json.dump(c, open(p, 'w'), indent=1)
PY
