#!/usr/bin/env bash
# The main job. Sets up what is missing, then on one machine:
#   1. starts a dev chain (validator //Alice, a block every 500 ms, 10-block epochs);
#   2. //Ferdie registers a run: a 4-stage GPT-style model on the Debian fortunes corpus,
#      each step audited with probability 25 %;
#   3. //Alice and //Ferdie bond as validators, register their BLS keys and run auditors
#      (`weft-trainer audit`); each audits at most 2 of the 4 stages, so no auditor sees the
#      whole model;
#   4. //Bob, //Charlie, //Dave and //Eve each run `weft-trainer train`, which bonds, declares
#      its libp2p peer id, joins the run, waits for its stage assignment, trains its stage
#      with its neighbours over libp2p and commits every step on chain;
#   5. shows the loss falling and commitments landing; when the last step is settled the run
#      is Finished and the auditors exit; the trainers keep serving their stages (--serve);
#   6. //Bob hands credentials to //Holder, who buys a completion from the trained model with
#      `weft infer` (escrowed on chain, served through the four stage holders, settled by the
#      last one); then a summary (status, steps, final loss, tokens/s, audits, ownership
#      shares, the completion and the holder's credentials before and after).
# Environment: WEFT_DEMO_STEPS (default 60), WEFT_DEMO_RPC_PORT (9944),
# WEFT_DEMO_PROMETHEUS_PORT (9615), WEFT_DEMO_KEEP=1 keeps the working directory.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/setup.sh"
source "$here/env.sh"

steps="${WEFT_DEMO_STEPS:-60}"
rpc_port="${WEFT_DEMO_RPC_PORT:-9944}"
prom_port="${WEFT_DEMO_PROMETHEUS_PORT:-9615}"
url="ws://127.0.0.1:$rpc_port"
corpus="$WEFT_ROOT/data/fortunes"
work="$(mktemp -d -t weft-demo.XXXXXX)"
pids=()
auditor_pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${WEFT_DEMO_KEEP:-0}" = "1" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM
weft() { "$WEFT_BIN/weft" --url "$url" "$@"; }
say() { printf '\n\033[1;32m== %s\033[0m\n' "$*"; }

say "starting a dev chain (log: $work/node.log)"
"$WEFT_BIN/weft-node" --dev --base-path "$work/node" --rpc-port "$rpc_port" \
  --prometheus-port "$prom_port" --block-time 500ms >"$work/node.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  weft block best >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { tail -n 20 "$work/node.log"; exit 1; }
  sleep 0.1
done

echo "dashboard: http://127.0.0.1:$rpc_port/ (open it in a browser to watch the chain)"

say "//Ferdie registers a 4-stage run on the fortunes corpus"
cat >"$work/model.json" <<JSON
{"d_model": 64, "n_layers": 4, "n_heads": 4, "seq_len": 64}
JSON
cat >"$work/hyper.json" <<JSON
{"micro_batch_size": 8, "micro_batches": 4, "lr": 0.003, "warmup_steps": 5, "total_steps": $steps}
JSON
dataset_hash="$("$WEFT_BIN/weft-trainer" manifest --data "$corpus")"
weft run register --from //Ferdie --config "$work/model.json" --hyper-params "$work/hyper.json" \
  --stages 4 --dataset-hash "$dataset_hash" --audit-probability 0.25 \
  --reveal-window 40 --attest-window 60 --auditors-per-stage 1 --max-stages-per-auditor 2 \
  --wait in-block | grep -E 'Run|Result|Block:'
run=0
echo "the run on the dashboard (stage map, loss curve, audits, ownership): http://127.0.0.1:$rpc_port/#/run/$run"

say "//Alice and //Ferdie bond as validators, register their BLS keys and start auditing"
for who in Alice Ferdie; do
  weft stake bond --from "//$who" --amount 10000 --wait in-block | grep -E 'Result'
  weft stake validate --from "//$who" --wait in-block | grep -E 'Result'
  "$WEFT_BIN/weft-trainer" audit --url "$url" --key "//$who" --data "$corpus" --run "$run" \
    --data-dir "$work/auditor-$who" --listen /ip4/127.0.0.1/tcp/0 >"$work/auditor-$who.log" 2>&1 &
  pids+=($!)
  auditor_pids+=($!)
done

say "four trainers join (logs: $work/<name>.log; metrics: http://127.0.0.1:9616..9619/metrics)"
port=30555
trainer_pids=()
for who in Bob Charlie Dave Eve; do
  "$WEFT_BIN/weft-trainer" train --url "$url" --key "//$who" --run "$run" --register \
    --data "$corpus" --data-dir "$work/$who" --listen "/ip4/127.0.0.1/tcp/$port" \
    --steps "$steps" --threads 1 --prometheus-port $((port - 30555 + 9616)) --serve \
    >"$work/$who.log" 2>&1 &
  pids+=($!)
  trainer_pids+=($!)
  port=$((port + 1))
done

say "training: the last stage's loss, and commitments landing on chain"
last_shown=""
finished() { weft run show "$run" 2>/dev/null | grep -q -E '^Status: +Finished'; }
while :; do
  running=0
  for p in "${trainer_pids[@]}"; do kill -0 "$p" 2>/dev/null && running=$((running + 1)); done
  line="$(grep -h -E '^stage 3 step [0-9]+ ' "$work"/{Bob,Charlie,Dave,Eve}.log 2>/dev/null | tail -n 1 || true)"
  if [ -n "$line" ] && [ "$line" != "$last_shown" ]; then
    audits="$(weft --json work audits "$run" 2>/dev/null | grep -c '"id"' || true)"
    echo "$line   | audits so far: $audits"
    last_shown="$line"
  fi
  # The run is Finished once its last step is settled (its audits closed).
  finished && break
  if [ "$running" -lt 4 ]; then
    echo "a trainer exited early; see $work/*.log"
    exit 1
  fi
  sleep 1
done
# The auditors (--run) exit once nothing of the finished run is pending.
for p in "${auditor_pids[@]}"; do wait "$p" || echo "an auditor exited with an error; see $work/auditor-*.log"; done

say "//Holder buys a completion from the trained model (weft infer)"
prompt="${WEFT_DEMO_PROMPT:-The }"
weft transfer --from //Alice --to //Holder --amount 10 --wait in-block | grep -E 'Result'
weft credentials transfer --from //Bob --run "$run" --to //Holder --amount 200000 --wait in-block \
  | grep -E 'Result'
holder_credentials() {
  weft credentials show //Holder --run "$run" | awk '/^  run / {print $3; exit}'
}
before="$(holder_credentials)"
# `weft infer` refuses before paying while no step is served by every stage (the last steps'
# audit windows may still be open): try again until it serves.
served=0
for _ in $(seq 1 60); do
  if weft infer --run "$run" --from //Holder --prompt "$prompt" --max-tokens 48 \
    --temperature 0.8 --seed 7 >"$work/completion.txt" 2>"$work/infer.err"; then
    served=1
    break
  fi
  sleep 1
done
if [ "$served" = 1 ]; then cat "$work/completion.txt"; echo; else cat "$work/infer.err"; fi
# The last stage settles the escrow once it has delivered: wait for the charge to land.
after="$before"
for _ in $(seq 1 40); do
  after="$(holder_credentials)"
  [ "$after" != "$before" ] && break
  sleep 0.5
done

say "summary"
first="$(grep -h -E '^stage 3 step 0 ' "$work"/{Bob,Charlie,Dave,Eve}.log | head -n 1 || true)"
last="$(grep -h -E '^stage 3 step [0-9]+ ' "$work"/{Bob,Charlie,Dave,Eve}.log | tail -n 1 || true)"
echo "first step: $first"
echo "last step:  $last"
weft run show "$run" | grep -E -i 'status|stages|steps' || true
echo "audits:"
weft work audits "$run" | tail -n +1 | grep -E -i -c 'pass' | sed 's/^/  passed: /' || true
weft work audits "$run" | grep -E -i -c 'fail' | sed 's/^/  failed: /' || true
grep -h -E '^audit [0-9]+: ' "$work"/auditor-*.log | tail -n 6 || true
tps="$(grep -h -E '^stage 3 step [0-9]+ ' "$work"/{Bob,Charlie,Dave,Eve}.log | awk '{s+=$8; n++} END {if (n) printf "%.0f", s/n}')"
echo "steps: $steps, mean tokens/s of the pipeline: $tps"
echo "ownership:"
weft ownership show "$run" || true
echo "slashes:"
weft gov slashes || true
echo "completion: $prompt$(tr '\n' ' ' <"$work/completion.txt")"
echo "credentials of //Holder: $before -> $after"

