#!/usr/bin/env bash
# atoll's RSS with the five built-in plugins loaded and N small Databases
# (default 1000: partitions 1, clusters 1, replicas 1) on the local control
# plane.
#
# 1. Starts the first binary, prints its RSS when ready, creates N Databases
#    and prints RSS and peak once every one is Ready (or after 15 minutes).
# 2. With everything converged, restarts each binary in turn, ROUNDS times,
#    interleaved, and prints its RSS 30 s after ready (caches full,
#    reconciles done): a side-by-side comparison from one run.
#
#   cargo build --release -p atoll
#   KUBECONFIG=/tmp/atoll-testenv-0/kubeconfig scripts/bench-memory.sh [N] [BINARY...]
#
# BINARY defaults to target/release/atoll ($CARGO_TARGET_DIR honoured). What
# ships is built with `cargo build --profile dist -p atoll` (target/dist/atoll):
# pass both to compare them.
# CONFS="default narenas:1,tcache:false ..." also restarts each binary with
# each of these jemalloc options (`_RJEM_MALLOC_CONF`; `default` sets none),
# interleaved. Every RSS is printed with its anonymous and file-backed parts
# (the binary's own code is most of the latter).
# Every start compiles the plugins (a pod's first start, the worst case);
# WARM_CACHE=1 keeps compiled plugins in one cache directory for the run,
# as the Deployment's emptyDir does across container restarts.
set -euo pipefail
N=${1:-1000}
shift || true
BINARIES=("$@")
[ ${#BINARIES[@]} -gt 0 ] || BINARIES=("${CARGO_TARGET_DIR:-target}/release/atoll")
ROUNDS=${ROUNDS:-2}
NS=bench-memory-$$
PORT=${PORT:-18080}
PID=
CACHE=(--no-plugin-cache)
if [ "${WARM_CACHE:-0}" = 1 ]; then
  CACHE=(--plugin-cache-dir "$(mktemp -d)")
fi
rss() { awk '/VmRSS/ {r=$2} /RssAnon/ {a=$2} /RssFile/ {f=$2} END {printf "%.1f MiB (anon %.1f, file %.1f)", r/1024, a/1024, f/1024}' /proc/$1/status; }
read -r -a CONF_LIST <<< "${CONFS:-default}"
peak() { awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$1/status; }
stop() { [ -z "$PID" ] || { kill $PID 2>/dev/null; wait $PID 2>/dev/null || true; PID=; }; }
start() {
  local conf=${2:-default}
  [ "$conf" = default ] && conf=
  _RJEM_MALLOC_CONF=$conf "$1" run --namespace $NS --metrics-addr 127.0.0.1:$PORT --grpc-addr 127.0.0.1:$((PORT + 1)) \
    --plugin-namespace $NS "${CACHE[@]}" >>/tmp/$NS.log 2>&1 &
  PID=$!
  until curl -fs -o /dev/null "http://127.0.0.1:$PORT/readyz"; do
    kill -0 $PID 2>/dev/null || { echo "$1 exited; see /tmp/$NS.log" >&2; exit 1; }
    sleep 0.2
  done
}
"${BINARIES[0]}" crds | kubectl apply --server-side -f - >/dev/null
kubectl create namespace $NS >/dev/null
trap 'stop; kubectl delete namespace $NS --wait=false >/dev/null' EXIT

start "${BINARIES[0]}"
sleep 1
echo "${BINARIES[0]}: ready, no Databases: RSS $(rss $PID)"
for i in $(seq 1 $N); do
  printf -- '---\napiVersion: atoll.dev/v1alpha1\nkind: Database\nmetadata: {name: m-%04d}\nspec: {partitions: 1, storage: {plugin: raft, config: {clusters: 1, replicas: 1}}}\n' $i
done | kubectl apply -n $NS -f - >/dev/null
began=$(date +%s)
while :; do
  ready=$(kubectl get databases -n $NS -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)
  [ "$ready" -ge "$N" ] && break
  [ $(( $(date +%s) - began )) -gt 900 ] && { echo "only $ready of $N Ready after 900s"; break; }
  sleep 5
done
sleep 5
children=$(kubectl get configmaps,services,statefulsets,poddisruptionbudgets,partitions -n $NS \
  -l app.kubernetes.io/managed-by=atoll -o name | wc -l)
echo "${BINARIES[0]}: $N Databases Ready after $(( $(date +%s) - began ))s ($children children): RSS $(rss $PID) (peak $(peak $PID))"
stop

for round in $(seq 1 "$ROUNDS"); do
  for bin in "${BINARIES[@]}"; do
    for conf in "${CONF_LIST[@]}"; do
      start "$bin" "$conf"
      sleep 30
      echo "round $round: $bin [$conf] restarted over $N converged Databases: RSS $(rss $PID) (peak $(peak $PID))"
      stop
    done
  done
done
