#!/usr/bin/env bash
# `scripts/testnet.sh --with-run`: the demo run on a running local testnet, its participants
# spread over the nodes. Usage: scripts/testnet-run.sh DIR N
#   * //Ferdie registers the 4-stage fortunes run through node 0;
#   * the four genesis validators audit (each is drawn as an auditor, and one that does not
#     attest is slashed), //Alice through node 0 … //Dave through node 3;
#   * four funded trainers //Trainer0..3 train, trainer k through node k mod N;
#   * every process logs to DIR/<name>.log and writes DIR/<name>.pid, so
#     `scripts/testnet.sh stop` stops them with the nodes.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
dir="$1"
n="$2"
steps="${WEFT_TESTNET_STEPS:-40}"
corpus="$WEFT_ROOT/data/fortunes"
url() { echo "ws://127.0.0.1:$((9944 + $1 % n))"; }
weft() { "$WEFT_BIN/weft" --url "$(url 0)" "$@"; }
start() { # name, command...
  local name="$1"; shift
  nohup "$@" >"$dir/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
  echo "$name: pid $!, log $dir/$name.log"
}

cat >"$dir/model.json" <<JSON
{"d_model": 64, "n_layers": 4, "n_heads": 4, "seq_len": 64}
JSON
cat >"$dir/hyper.json" <<JSON
{"micro_batch_size": 8, "micro_batches": 4, "lr": 0.003, "warmup_steps": 5, "total_steps": $steps}
JSON
dataset_hash="$("$WEFT_BIN/weft-trainer" manifest --data "$corpus")"
weft run register --from //Ferdie --config "$dir/model.json" --hyper-params "$dir/hyper.json" \
  --stages 4 --dataset-hash "$dataset_hash" --audit-probability 0.25 \
  --reveal-window 40 --attest-window 60 --auditors-per-stage 1 --max-stages-per-auditor 2 \
  --wait finalized | grep -E 'Run|Result|Block:'
run=0
for k in 0 1 2 3; do
  weft transfer --from //Alice --to "//Trainer$k" --amount 20000 --wait finalized | grep -E 'Result'
done
validators=(Alice Bob Charlie Dave)
for k in 0 1 2 3; do
  who="${validators[$k]}"
  start "auditor-$who" "$WEFT_BIN/weft-trainer" audit --url "$(url "$k")" --key "//$who" \
    --data "$corpus" --run "$run" --data-dir "$dir/auditor-$who" --listen /ip4/127.0.0.1/tcp/0
done
for k in 0 1 2 3; do
  start "trainer$k" "$WEFT_BIN/weft-trainer" train --url "$(url "$k")" --key "//Trainer$k" \
    --run "$run" --register --data "$corpus" --data-dir "$dir/trainer$k" \
    --listen "/ip4/127.0.0.1/tcp/$((30555 + k))" --steps "$steps" --threads 1 \
    --prometheus-port $((9716 + k)) --serve
done
echo "run $run: follow with \`weft --url $(url 0) run show $run\` and tail -f $dir/trainer3.log"
