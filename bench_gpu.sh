#!/usr/bin/env bash
# The GPU suite, one command on a CUDA machine with no hub access (designed for 8 minutes on one H200, parts side
# by side; an 80 GB card runs them in turn and needs SUITE_BUDGET=1800):
#
#   bash bench_gpu.sh [DATA_DIR] [PARTS]    # DATA_DIR holds gsm8k/train.jsonl (default ../shared/data)
#
# PARTS (default all, comma-separated): rollout (bench.py --parts rollout: eager vs compiled sampling, no adapter /
# LoRA / GeoRA, 28 layers of Qwen2.5-1.5B, batches 64 and 256, 1,024 new tokens; 128 for eager), update (bench.py
# --parts update: one GRPO update, padded against packed micro-batches, GSM8K-like lengths), r7 and r15 (the rehearsal at Qwen2.5-7B and Qwen2.5-1.5B shapes, geora and
# lora, bf16, 8 prompts x 8 rollouts x 1,024 new tokens; all four processes side by side), tests (pytest -k cuda:
# geora exactness, a train.py run, FSDP on one GPU for geora and full; beside the rehearsals), fsdp (2 steps of
# torchrun --nproc_per_node=1 train.py --fsdp at Qwen2.5-1.5B shapes), layers (bench.py: init and step vs PEFT, peak
# step memory), head (the chunked LM head on one 8 x 1,024-token micro-batch). Each part has its own time limit
# and the suite a total budget (SUITE_BUDGET, 480 s), so one failure or a slow machine does not stop the rest. Logs
# and JSON go to out/gpu/; the table at the end is what the README's GPU column quotes.
set -uo pipefail
cd "$(dirname "$0")"
DATA=${1:-../shared/data}
PARTS=${2:-rollout,update,r7,tests,layers,r15,fsdp,head}
DEVICE=${DEVICE:-cuda}        # DEVICE=cpu only to rehearse this script's plumbing on a CPU
LOG=out/gpu
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"; } \
    | tee "$LOG/gpu.txt"
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$LOG/gpu.txt"
: > "$LOG/parts.txt"
# nothing of an earlier run may reach this run's table
rm -rf out/rollout.json out/update.json out/rehearsal.json out/rehearsal-*-cuda.json "$LOG"/*.log "$LOG"/rehearsal-*.json "$LOG"/fsdp-geora

BUDGET=${SUITE_BUDGET:-480}   # seconds for all parts together; each part also has its own limit
# Measured on an H200 (README): the tests 72 s; a 1.5B rehearsal step 120 s of sampling + 13 s of training.

part() {  # part NAME SECONDS COMMAND...: run it under a time limit, log it, record its exit code and seconds
    local name=$1 limit=$2 t0=$SECONDS
    shift 2
    [[ ",$PARTS," == *",$name,"* ]] || return 0
    local left=$((BUDGET - SECONDS))
    if ((left < 20)); then
        echo "$name skipped: suite budget spent" | tee -a "$LOG/parts.txt" > "$LOG/$name.log"
        return 0
    fi
    ((limit > left)) && limit=$left
    timeout "$limit" "$@" > "$LOG/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$LOG/parts.txt"
    tail -n 3 "$LOG/$name.log"
}

# The rehearsals are long (2 x 1,024 decoding steps each; the H200 measured 0.12 s per step with the eager engine,
# bound by Python; they now sample with the compiled engine, train.py's CUDA default, not yet timed on a GPU), so
# on a card with room for all of them (~100 GB) everything runs side by side: both configs with their methods in
# parallel, the tests and the benchmarks beside them. On a smaller card (or SERIAL=1) the parts run in turn,
# shortest first, and 480 s does not cover the rehearsals: give SUITE_BUDGET=1800 there.
GIB=$(python -c "import torch; print(torch.cuda.get_device_properties(0).total_memory >> 30 if torch.cuda.is_available() else 0)")
SERIAL=${SERIAL:-$((GIB < 120))}
DT=bfloat16
[[ $DEVICE == cpu ]] && DT=float32
PAR=--parallel
((SERIAL)) && PAR=
BG=()
side() { if ((SERIAL)); then "$@"; else "$@" & BG+=($!); fi; }   # a part beside the rest, or in turn
fsdp_smoke() {  # the model the 1.5B rehearsal uses (built here if that part has not run), 2 sharded steps
    python -c "import sys; sys.argv = ['bench.py', '--device', '$DEVICE']; import bench; bench.rehearsal_model(bench.parse())" &&
    torchrun --nproc_per_node=1 --master_port=29517 train.py --model out/rehearsal/qwen2.5-1.5b --fsdp \
        --method geora --dataset gsm8k --data-dir "$DATA" --steps 2 --prompts-per-step 4 --group-size 4 \
        --max-new-tokens 256 --beta 0.001 --eval-size 0 --svd lowrank --lr 1e-6 --out "$LOG/fsdp-geora" \
        --device "$DEVICE"
}
export DATA LOG DEVICE
export -f fsdp_smoke   # `timeout` runs programs, not shell functions: the part runs `bash -c fsdp_smoke`
if ((SERIAL)); then
    part tests 100 python -m pytest -q -p no:cacheprovider -k cuda
    part rollout 400 python bench.py --device "$DEVICE" --dtype $DT --parts rollout
    part update 120 python bench.py --device "$DEVICE" --dtype $DT --parts update --repeats 2
    part head 60 python bench.py --device "$DEVICE" --dtype $DT --parts head --batch 8 --seq 1024
    part layers 90 python bench.py --device "$DEVICE" --dtype $DT --parts init,step,mem
    part r15 700 python bench.py --rehearsal --device "$DEVICE" --data-dir "$DATA"
    part fsdp 120 bash -c fsdp_smoke
    part r7 900 python bench.py --rehearsal --device "$DEVICE" --config qwen2.5-7b --data-dir "$DATA"
else
    side part r7 440 python bench.py --rehearsal $PAR --device "$DEVICE" --config qwen2.5-7b --data-dir "$DATA"
    side part tests 100 python -m pytest -q -p no:cacheprovider -k cuda
    side part rollout 400 python bench.py --device "$DEVICE" --dtype $DT --parts rollout
    side part update 120 python bench.py --device "$DEVICE" --dtype $DT --parts update --repeats 2
    side part layers 90 python bench.py --device "$DEVICE" --dtype $DT --parts init,step,mem
    side part head 90 python bench.py --device "$DEVICE" --dtype $DT --parts head --batch 8 --seq 1024
    part r15 360 python bench.py --rehearsal $PAR --device "$DEVICE" --data-dir "$DATA"
    part fsdp 100 bash -c fsdp_smoke
fi
((${#BG[@]})) && wait "${BG[@]}"
cp out/rehearsal-*-cuda.json out/rollout.json out/update.json "$LOG/" 2>/dev/null

python - "$LOG" <<'EOF'
import glob, json, os, sys
log = sys.argv[1]
print("\n== GPU suite:", open(os.path.join(log, "gpu.txt")).read().replace("\n", "; "))
print("parts:", "; ".join(open(os.path.join(log, "parts.txt")).read().split("\n")))
print("\n| config | method | init s | est. GB | peak GB | est/peak | gen s/step | gen tok/s | train s/step |")
print("|---|---|---|---|---|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(log, "rehearsal-*-cuda.json"))):
    r = json.load(open(path))
    for m in ("geora", "lora"):
        if m in r:
            x = r[m]
            print(f"| {r['config']['name']} | {m} | {x['init_s']:.1f} | {x['est_mem_gb']:.1f} | {x['peak_mem_gb']:.1f} | "
                  f"{x['est_mem_gb'] / max(x['peak_mem_gb'], 1e-9):.2f} | {x['gen_s']:.1f} | {x['gen_tokens_per_s']:.0f} | "
                  f"{x['train_s']:.1f} |")
for m in ("geora",):
    p = os.path.join(log, f"fsdp-{m}", "metrics.jsonl")
    if os.path.exists(p):
        steps = [json.loads(l) for l in open(p) if '"reward"' in l]
        print(f"fsdp smoke {m}: {len(steps)} steps, mem_gb {[s.get('mem_gb') for s in steps]}, "
              f"s/step {[round(s['gen_s'] + s['train_s'], 1) for s in steps]}")
p = os.path.join(log, "rollout.json")
if os.path.exists(p):
    r = json.load(open(p))
    print(f"\nrollout ({r['device']}, {r['layers']} layers, {r['new_tokens']} new tokens, eager {r['eager_new_tokens']}; "
          f"identical_tokens {r['identical_tokens']}):")
    print("| engine/method/batch | tok/s | ms/step | compile s | roofline | speedup | identical | max logp gap | vs scored |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, x in r["runs"].items():
        print(f"| {k} | {x['tokens_per_s']:.0f} | {x['s_per_decode_step'] * 1e3:.2f} | {x['compile_s']:.1f} | "
              f"{x.get('roofline_frac', '')} | {x.get('speedup', '')} | {x.get('identical_frac', '')} | {x.get('max_logp_gap', '')} | {x.get('scored_logp_gap', '')} |")
p = os.path.join(log, "update.json")
if os.path.exists(p):
    r = json.load(open(p))
    print(f"\nupdate ({r['device']}, {r['layers']} layers, {r['completions']} completions, {r['lengths']}): "
          f"packed / padded {r['speedup']}x")
    for k in ("padded", "packed"):
        print(f"  {k}: {r[k]}")
for name in ("tests", "layers", "head"):
    p = os.path.join(log, f"{name}.log")
    if os.path.exists(p):
        keep = [l.rstrip() for l in open(p) if l.startswith("|") or " passed" in l or " failed" in l or "deselected" in l or "bench:" in l]
        print(f"\n{name}:\n" + "\n".join(keep[-40:]))
EOF
