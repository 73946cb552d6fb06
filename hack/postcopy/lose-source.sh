#!/usr/bin/env bash
# Post-copy's risk window, observed: migrate pchog (MIB MiB, K reads/ms) lazily from pcA to pcB
# and SIGKILL the source's CRIU (the page server) AFTER_S seconds after the target resumed.
# Then show what the target's lazy-pages daemon logged, whether the restored process still
# runs, and whether its memory still checksums (SIGUSR1).
set -euo pipefail
MIB=${1:-1024} K=${2:-0} AFTER_S=${3:-2}
PC=${PC:-/work/scratch/postcopy}; HERE=$(cd "$(dirname "$0")" && pwd)
X() { "$HERE/nodes.sh" exec "$@"; }
B=$PC/shared/bundle; T=$B/rootfs/tmp
python3 -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); c["process"]["args"]=["/bin/pchog",sys.argv[2],sys.argv[3]]; json.dump(c,open(p,"w"),indent=1)' "$B/config.json" "$MIB" "$K"
for n in pcA pcB; do
  X $n sh -c 'pkill -x criu 2>/dev/null; for m in $(awk "\$2 ~ \"^/run/pc/.*/criu-root\$\" {print \$2}" /proc/mounts); do umount $m; done
    runc --root /run/pc delete -f hog 2>/dev/null; rm -f /var/lib/pc/target.listening /var/lib/pc/target.done; mkdir -p /var/lib/pc; true'
done
rm -f "$T"/{sum0,sum,gap,series}*
X pcA runc --root /run/pc run -d --bundle /shared/bundle hog </dev/null >/dev/null 2>&1
until [ -s "$T/sum0" ]; do sleep 0.2; done; sleep 2
X pcB bash /shared/target.sh lazy 10.231.77.1 27000 27001 >/dev/null 2>&1 & TPID=$!
until X pcB test -e /var/lib/pc/target.listening; do sleep 0.1; done
X pcA bash /shared/source.sh lazy 10.231.77.1 10.231.77.2 27000 27001 >/dev/null 2>&1 & SPID=$!
until X pcB grep -q '^restored' /var/lib/pc/target.times 2>/dev/null; do sleep 0.05; done
sleep "$AFTER_S"
echo "== killing the source's criu (page server) at $(date +%T.%N)"
X pcA pkill -9 -x criu || true
sleep 3
echo "== target lazy-pages daemon: $(X pcB pgrep -f 'criu lazy-pages' >/dev/null && echo running || echo exited)"
X pcB sh -c 'grep -E "Error|transferred|Disconnect" /var/lib/pc/rwork/lazy.log | tail -5'
echo "== target container:"; X pcB runc --root /run/pc list
echo "== target process state:"; X pcB sh -c 'p=$(runc --root /run/pc state hog | sed -n "s/.*\"pid\": \([0-9]*\).*/\1/p"); grep -E "^State" /proc/$p/status; cat /proc/$p/wchan; echo'
echo "== workload still counting? windows in the last 2 s:"; sleep 2; tail -3 "$T/series"
echo "== checksum (SIGUSR1, 20 s max):"
X pcB runc --root /run/pc kill hog USR1 || true
for i in $(seq 100); do [ -s "$T/sum" ] && break; sleep 0.2; done
echo "sum0 $(cat "$T/sum0") sum $(cat "$T/sum" 2>/dev/null || echo none)"
echo "== source side:"; X pcA sh -c 'runc --root /run/pc list; tail -3 /var/lib/pc/ckpt.out | cut -c1-200; cat /var/lib/pc/source.times'
kill $TPID $SPID 2>/dev/null || true
