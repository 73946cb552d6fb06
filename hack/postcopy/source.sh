#!/bin/bash
# Source side of one migration, run inside pcA: dump, then send the small images over TCP.
# MODE=lazy: runc checkpoint --lazy-pages; the images leave once CRIU's page server listens
#            (--status-fd); runc returns only after the last page was served.
# MODE=pageserver: runc checkpoint --page-server to the target's criu page-server (all memory
#            crosses during the freeze), then the images.
set -u
MODE=$1 SELF=$2 DST=$3 PORT=$4 IMGPORT=$5
P=/var/lib/pc; rm -rf $P/img $P/dwork $P/source.times; mkdir -p $P/img $P/dwork
t() { echo "$1 $(date +%s.%N)" >>$P/source.times; }
t freeze-start
if [ "$MODE" = lazy ]; then
  rm -f /tmp/st; mkfifo /tmp/st
  ( runc --root /run/pc checkpoint --lazy-pages --page-server $SELF:$PORT --status-fd 3 \
      --image-path $P/img --work-path $P/dwork hog 3>/tmp/st >$P/ckpt.out 2>&1
    echo "checkpoint-rc $?" >>$P/source.times; t checkpoint-exit ) &
  dd if=/tmp/st bs=1 count=1 status=none >/dev/null
  t page-server-ready
else
  runc --root /run/pc checkpoint --page-server $DST:$PORT --image-path $P/img --work-path $P/dwork hog \
    >$P/ckpt.out 2>&1
  echo "checkpoint-rc $?" >>$P/source.times
  t dumped
fi
exec 3<>/dev/tcp/$DST/$IMGPORT
tar -C $P/img -cf - . >&3
exec 3>&-
t images-sent
wait
