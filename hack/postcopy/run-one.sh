#!/usr/bin/env bash
# One migration of pchog (MIB MiB, K random page reads per ~1 ms iteration) from pcA to pcB.
# usage: run-one.sh lazy|pageserver MIB [K]     (after nodes.sh up and bundle.sh)
# Prints one JSON line: phase times (s after the freeze began), the workload's longest pause
# (from its own 100 ms windows), its iteration rate before/during/after fault-in, checksum check.
set -euo pipefail
MODE=$1 MIB=$2 K=${3:-16} PORT=${PORT:-27000} IMGPORT=${IMGPORT:-27001}
PC=${PC:-/work/scratch/postcopy}; HERE=$(cd "$(dirname "$0")" && pwd)
X() { "$HERE/nodes.sh" exec "$@"; }
B=$PC/shared/bundle; T=$B/rootfs/tmp; START=$(date +%s)
deadline() { [ "$(date +%s)" -lt $((START + 900)) ] || { echo "timed out" >&2; exit 1; }; }
python3 -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); c["process"]["args"]=["/bin/pchog",sys.argv[2],sys.argv[3]]; json.dump(c,open(p,"w"),indent=1)' "$B/config.json" "$MIB" "$K"
# Leftovers of an earlier run. Never remove a runc state dir while its criu-root bind mount
# (the container's rootfs) is there: `runc delete`/`rm -rf` would wipe the rootfs through it.
for n in pcA pcB; do
  X $n sh -c 'pkill -x criu 2>/dev/null; for m in $(awk "\$2 ~ \"^/run/pc/.*/criu-root\$\" {print \$2}" /proc/mounts); do umount $m; done
    runc --root /run/pc delete -f hog 2>/dev/null; [ -d /run/pc/hog ] && rmdir /run/pc/hog/criu-root /run/pc/hog 2>/dev/null
    rm -f /var/lib/pc/target.listening /var/lib/pc/target.done; mkdir -p /var/lib/pc; true'
done
rm -f "$T"/{sum0,sum,gap,series}*
X pcA runc --root /run/pc run -d --bundle /shared/bundle hog </dev/null >/dev/null 2>&1
until [ -s "$T/sum0" ]; do deadline; sleep 0.2; done
sleep 4
X pcB bash /shared/target.sh "$MODE" 10.231.77.1 "$PORT" "$IMGPORT" >/dev/null 2>&1 &
TPID=$!
until X pcB test -e /var/lib/pc/target.listening; do deadline; sleep 0.1; done
[ "$MODE" = pageserver ] && sleep 0.3   # criu page-server -d listens by then
X pcA bash /shared/source.sh "$MODE" 10.231.77.1 10.231.77.2 "$PORT" "$IMGPORT" >/dev/null 2>&1 &
SPID=$!
wait $TPID; wait $SPID
sleep 2
X pcB runc --root /run/pc kill hog USR1
until [ -s "$T/sum" ]; do deadline; sleep 0.2; done
OUT=$PC/out/$MODE-$MIB-$(date +%H%M%S); mkdir -p "$OUT"
cp "$T/series" "$T/sum0" "$T/sum" "$OUT/"
X pcA cat /var/lib/pc/source.times >"$OUT/source.times"; X pcB cat /var/lib/pc/target.times >"$OUT/target.times"
X pcA cat /var/lib/pc/dwork/dump.log >"$OUT/dump.log" 2>/dev/null || true
X pcB cat /var/lib/pc/rwork/restore.log >"$OUT/restore.log" 2>/dev/null || true
X pcB cat /var/lib/pc/rwork/lazy.log >"$OUT/lazy.log" 2>/dev/null || true
X pcA cat /var/lib/pc/ckpt.out >"$OUT/ckpt.out" 2>/dev/null || true
X pcB cat /var/lib/pc/restore.out >"$OUT/restore.out" 2>/dev/null || true
X pcB runc --root /run/pc delete -f hog
python3 "$HERE/summarize.py" "$OUT" "$MODE" "$MIB" "$K" | tee "$OUT/summary.json"
