#!/usr/bin/env bash
# atoll's RSS with the five built-in plugins loaded and N small Databases
# (default 1000: partitions 1, clusters 1, replicas 1) on the local control
# plane. Prints RSS at start (ready) and once every Database is Ready.
#
#   cargo build --release -p atoll
#   KUBECONFIG=/tmp/atoll-testenv-0/kubeconfig scripts/bench-memory.sh [N]
set -euo pipefail
N=${1:-1000}
ATOLL=${ATOLL:-${CARGO_TARGET_DIR:-target}/release/atoll}
NS=bench-memory-$$
rss() { awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' /proc/$1/status; }
kubectl create namespace $NS >/dev/null
trap 'kill $PID 2>/dev/null; kubectl delete namespace $NS --wait=false >/dev/null' EXIT
PORT=${PORT:-18080}
$ATOLL run --namespace $NS --metrics-addr 127.0.0.1:$PORT --grpc-addr 127.0.0.1:$((PORT + 1)) \
  --plugin-namespace $NS >/tmp/$NS.log 2>&1 &
PID=$!
until curl -fs -o /dev/null "http://127.0.0.1:$PORT/readyz"; do sleep 0.2; done
sleep 1
echo "ready, no Databases: RSS $(rss $PID)"
for i in $(seq 1 $N); do
  printf -- '---\napiVersion: atoll.dev/v1alpha1\nkind: Database\nmetadata: {name: m-%04d}\nspec: {partitions: 1, storage: {plugin: raft, config: {clusters: 1, replicas: 1}}}\n' $i
done | kubectl apply -n $NS -f - >/dev/null
start=$(date +%s)
while :; do
  ready=$(kubectl get databases -n $NS -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)
  [ "$ready" -ge "$N" ] && break
  [ $(( $(date +%s) - start )) -gt 900 ] && { echo "only $ready of $N Ready after 900s"; break; }
  sleep 5
done
sleep 5
echo "$N Databases Ready after $(( $(date +%s) - start ))s: RSS $(rss $PID) (peak $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$PID/status))"
