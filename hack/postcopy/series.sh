#!/usr/bin/env bash
# N runs of run-one.sh MODE MIB K, one after another; the summaries (plus the load average at
# the start of each run: the machine is shared) go to $PC/results.jsonl.
set -euo pipefail
MODE=$1 MIB=$2 K=$3 N=${4:-3}
PC=${PC:-/work/scratch/postcopy}; HERE=$(cd "$(dirname "$0")" && pwd)
for i in $(seq "$N"); do
  load=$(cut -d' ' -f1 /proc/loadavg)
  line=$("$HERE/run-one.sh" "$MODE" "$MIB" "$K" | tail -1)
  echo "${line%\}}, \"load1\": $load}" | tee -a "$PC/results.jsonl"
done
