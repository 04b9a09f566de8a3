#!/bin/bash
# A/B of two wsloop binaries in the echo cells #26 names: 1 KiB and 16 KiB,
# x1 and x16 in flight, 10 and 100 connections; servers alternate per cell,
# 3 rounds; server pinned to CPU 0, load generator to CPU 1.
# usage: echo-ab.sh OUT.jsonl NAME=BIN NAME=BIN
set -u
out=$1; shift
BINS=("$@")
bench=${BENCH:-benches/load/target/release/wsloop-bench}   # run from the repository root
ulimit -n 65536
port=19400
for round in 1 2 3; do
 for cell in "10 1024 1" "10 1024 16" "10 16384 1" "10 16384 16" "100 1024 1" "100 1024 16" "100 16384 1" "100 16384 16"; do
  set -- $cell; c=$1; p=$2; f=$3
  for pair in "${BINS[@]}"; do
   name=${pair%%=*}; bin=${pair#*=}
   port=$((port+1))
   taskset -c 0 $bin --echo --listen 127.0.0.1:$port --log-level error --config "$(dirname "$0")/wsloop.toml" & pid=$!
   for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
   line=$(taskset -c 1 $bench load --addr 127.0.0.1:$port --connections $c --payload $p --in-flight $f --seconds 3 --warmup 1 --server-pid $pid)
   kill $pid; wait $pid 2>/dev/null
   echo "{\"round\":$round,\"server\":\"$name\",\"report\":$line}" >> $out
   echo "round $round $name ${c}x${p}x${f}: $(echo "$line" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["msgs_per_sec"]), "msgs/s, server cpu", d.get("server_cpu_percent"), "user", d.get("server_user_percent"))')"
  done
 done
done
