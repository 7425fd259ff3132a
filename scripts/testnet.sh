#!/usr/bin/env bash
# A local Tendermint testnet on one machine, from chain-spec/local.json.
#
#   scripts/testnet.sh [start] [-n N] [--dir DIR] [--with-run]
#       Starts N nodes (default 4). Nodes 0..3 are the genesis validators //Alice, //Bob,
#       //Charlie and //Dave; further nodes are full nodes (a staker can make one a validator,
#       see the README). Node i keeps its database, node key and log under DIR/node<i>
#       (default DIR: $WEFT_TESTNET_DIR or /tmp/weft-testnet) and listens on
#         p2p        127.0.0.1:$((30333 + i))
#         JSON-RPC   ws://127.0.0.1:$((9944 + i))
#         metrics    http://127.0.0.1:$((9615 + i))/metrics
#       Every node bootstraps from node 0 and finds the others through Kademlia.
#       --with-run also registers the demo run (4 stages) and starts four auditors (the
#       validators) and four trainers, each against a different node.
#   scripts/testnet.sh stop [--dir DIR]     stops every process started here (SIGTERM, then
#                                           SIGKILL after 15 s)
#   scripts/testnet.sh status [--dir DIR]   best/finalized height and peers of each node
#
# Environment: WEFT_TESTNET_BLOCK_TIME (default 1s), WEFT_TESTNET_STEPS (demo run steps, 40).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

cmd=start
case "${1:-}" in start|stop|status) cmd="$1"; shift ;; esac
n=4
dir="${WEFT_TESTNET_DIR:-/tmp/weft-testnet}"
with_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    -n) n="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --with-run) with_run=1; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
validators=(//Alice //Bob //Charlie //Dave)

# The number of the best or finalized block of the node on RPC port $1 (empty if it does not answer).
height() {
  python3 - "$1" "$2" <<'PY' 2>/dev/null || true
import json, sys, urllib.request
port, which = sys.argv[1], sys.argv[2]
def call(method, params):
    req = urllib.request.Request(f"http://127.0.0.1:{port}", json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode(),
        {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=2))["result"]
at = [call("chain_getFinalizedHead", [])] if which == "finalized" else []
print(call("chain_getHeader", at)["number"])
PY
}

stop_all() {
  [ -d "$dir" ] || { echo "no testnet in $dir"; return 0; }
  local pids=()
  for f in "$dir"/*.pid; do
    [ -e "$f" ] || continue
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
    rm -f "$f"
  done
  for _ in $(seq 1 150); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  echo "stopped ${#pids[@]} processes in $dir"
}

status_all() {
  for i in $(seq 0 $((n - 1))); do
    [ -e "$dir/node$i.pid" ] || continue
    port=$((9944 + i))
    echo "node$i ws://127.0.0.1:$port best #$(height $port best) finalized #$(height $port finalized)"
  done
}

case "$cmd" in
  stop) stop_all; exit 0 ;;
  status) status_all; exit 0 ;;
esac

"$here/setup.sh"
source "$here/env.sh"
node_bin="$WEFT_BIN/weft-node"
mkdir -p "$dir"
if ls "$dir"/*.pid >/dev/null 2>&1; then
  echo "a testnet is already running in $dir (scripts/testnet.sh stop --dir $dir)" >&2
  exit 1
fi
block_time="${WEFT_TESTNET_BLOCK_TIME:-1s}"

peer_of() {
  local key="$dir/node$1/node-key"
  mkdir -p "$dir/node$1"
  if [ ! -e "$key" ]; then
    "$node_bin" key generate-node-key --file "$key" >"$dir/node$1/peer-id" 2>/dev/null
  fi
  cat "$dir/node$1/peer-id"
}

boot="/ip4/127.0.0.1/tcp/30333/p2p/$(peer_of 0)"
for i in $(seq 0 $((n - 1))); do
  peer_of "$i" >/dev/null
  args=(--chain local --base-path "$dir/node$i" --name "node$i"
        --node-key-file "$dir/node$i/node-key"
        --listen-addr "/ip4/127.0.0.1/tcp/$((30333 + i))"
        --rpc-port $((9944 + i)) --prometheus-port $((9615 + i))
        --block-time "$block_time" --max-peers-per-ip 64)
  if [ "$i" -lt 4 ]; then args+=(--validator --key "${validators[$i]}"); fi
  if [ "$i" -gt 0 ]; then args+=(--bootnodes "$boot"); fi
  nohup "$node_bin" "${args[@]}" >"$dir/node$i.log" 2>&1 </dev/null &
  echo $! >"$dir/node$i.pid"
  echo "node$i: pid $!, ws://127.0.0.1:$((9944 + i)), log $dir/node$i.log"
done

# Ready when every node answers and node 0 has finalized a block.
h=0
for _ in $(seq 1 600); do
  h="$(height 9944 finalized)"
  [ "${h:-0}" -ge 1 ] && break
  kill -0 "$(cat "$dir/node0.pid")" 2>/dev/null || { tail -n 20 "$dir/node0.log"; exit 1; }
  sleep 0.2
done
echo "testnet up in $dir: $n nodes, finalized #${h:-0} (scripts/testnet.sh status | stop)"

if [ "$with_run" = 1 ]; then
  exec "$here/testnet-run.sh" "$dir" "$n"
fi
