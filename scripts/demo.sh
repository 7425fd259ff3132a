#!/usr/bin/env bash
# The main job: sets up what is missing, starts a dev chain (one validator, //Alice),
# keeps transfers flowing between the dev accounts with the `weft` CLI, and prints the
# chain's progress. Stops after $WEFT_DEMO_SECONDS (default 60; 0 = until Ctrl-C).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/setup.sh"
source "$here/env.sh"

rpc_port="${WEFT_DEMO_RPC_PORT:-9944}"
prom_port="${WEFT_DEMO_PROMETHEUS_PORT:-9615}"
seconds="${WEFT_DEMO_SECONDS:-60}"
url="ws://127.0.0.1:$rpc_port"
base="$(mktemp -d -t weft-demo.XXXXXX)"
node_pid=""
cleanup() {
  [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
  rm -rf "$base"
}
trap cleanup EXIT INT TERM

echo "== starting a dev chain (logs: $base/node.log)"
"$WEFT_BIN/weft-node" --dev --base-path "$base" --rpc-port "$rpc_port" --prometheus-port "$prom_port" \
  --block-time 1s >"$base/node.log" 2>&1 &
node_pid=$!
for _ in $(seq 1 200); do
  if "$WEFT_BIN/weft" --url "$url" block best >/dev/null 2>&1; then break; fi
  kill -0 "$node_pid" 2>/dev/null || { cat "$base/node.log"; exit 1; }
  sleep 0.1
done

accounts=(//Alice //Bob //Charlie //Dave //Eve //Ferdie)
echo "== balances before"
for a in "${accounts[@]}"; do printf '%-8s ' "$a"; "$WEFT_BIN/weft" --url "$url" account "$a" | grep -i free; done

start=$(date +%s)
sent=0 failed=0 round=0
while :; do
  now=$(date +%s)
  if [ "$seconds" != "0" ] && [ $((now - start)) -ge "$seconds" ]; then break; fi
  from=${accounts[$((round % 6))]}
  to=${accounts[$(((round + 1) % 6))]}
  amount="$((round % 9 + 1)).$((round % 100))"
  if out=$("$WEFT_BIN/weft" --url "$url" transfer --from "$from" --to "$to" --amount "$amount" --wait in-block 2>&1); then
    sent=$((sent + 1))
    block=$(echo "$out" | grep -m1 -E '^Block:' | tr -s ' ' | cut -d' ' -f2 | tr -d '#')
    fee=$(echo "$out" | grep -m1 -E '^Fee:' | tr -s ' ' | cut -d' ' -f2-3)
    printf '%-8s -> %-8s %6s WEFT  in block #%s  fee %s\n' "$from" "$to" "$amount" "$block" "$fee"
  else
    failed=$((failed + 1))
    echo "transfer failed: $out"
  fi
  round=$((round + 1))
done

echo "== balances after"
for a in "${accounts[@]}"; do printf '%-8s ' "$a"; "$WEFT_BIN/weft" --url "$url" account "$a" | grep -i free; done
echo "== summary"
summary=$("$WEFT_BIN/weft" --url "$url" block finalized)
echo "$summary" | grep -E '^(Number|Hash|State root)'
echo "transfers included: $sent, failed: $failed"
curl -s "http://127.0.0.1:$prom_port/metrics" | grep -E '^weft_(block_height|txpool_size)' || true
