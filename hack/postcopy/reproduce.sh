#!/usr/bin/env bash
# Everything in postcopy-notes.md, in order (about 10 minutes on an idle machine; heavy: run alone).
# Needs root, the cached node rootfs (/var/cache/ferry/rootfs-trixie-*) and runc 1.3.6 from sid:
#   apt-get download runc  (sid, in a chroot of the node rootfs: it has sid in its sources)
#   dpkg -x runc_1.3.6*.deb X && cp X/usr/sbin/runc $PC/layer/opt/pc/bin/runc
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); PC=${PC:-/work/scratch/postcopy}; export PC
[ -x "$PC/layer/opt/pc/bin/runc" ] || { echo "put runc 1.3.6 at $PC/layer/opt/pc/bin/runc first" >&2; exit 1; }
trap '"$HERE/nodes.sh" down' EXIT
"$HERE/nodes.sh" up
"$HERE/bundle.sh"
"$HERE/series.sh" lazy 1024 0 5         # post-copy, workload that touches almost no heap
"$HERE/series.sh" pageserver 1024 0 3   # baseline: all memory crosses during the freeze
"$HERE/series.sh" lazy 1024 1 2         # 1 random page read per ms
"$HERE/series.sh" lazy 1024 16 1        # 16 random page reads per ms
"$HERE/series.sh" lazy 256 0 2
"$HERE/lose-source.sh" 1024 0 1         # the risk window: source CRIU killed mid-transfer
