"""
Benchmark geora.py against PEFT on a model with Qwen2.5-1.5B's layer shapes (random weights, built from a config).

    python bench.py                       # init time, step time, peak step memory; prints ratios
    python bench.py --layers 1 --parts init
    python bench.py --device cuda --dtype bfloat16   # on a GPU

What is measured, side by side in one run (machines are noisy: read the ratios, not the seconds):
  init  seconds to adapt every q,k,v,o,gate,up,down projection: GeoRA svd=full and svd=lowrank (niter 4) vs PEFT
        init_lora_weights="pissa" and "pissa_niter_4" (one SVD per matrix where GeoRA needs two plus two quantiles).
  step  seconds per forward+backward+AdamW step of GeoRA vs PEFT LoRA (same rank, default init) vs full fine-tuning,
        interleaved round-robin in one process so background load hits all three alike; the median is kept.
  mem   peak extra memory of a training step (activations, gradients, optimizer state), each method in a fresh
        subprocess: on CPU the kernel's peak RSS is reset just before the step (/proc/self/clear_refs) and read after;
        on CUDA torch.cuda.max_memory_allocated. glibc's mmap threshold is pinned in the subprocess so that memory freed
        by the initialisation goes back to the kernel and cannot hide the step's own allocations.
Deliberate simplifications: the vocabulary is cut to --vocab (8192) so the embedding does not dwarf the layers
(adapter cost is per layer); --layers (2) layers instead of 28, so per-layer costs are what the numbers show.
Test-only dependency: peft (never imported by the core files).
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import geora

p = argparse.ArgumentParser(description=__doc__.split("\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--layers", type=int, default=2)
p.add_argument("--vocab", type=int, default=8192)
p.add_argument("--rank", type=int, default=16)
p.add_argument("--batch", type=int, default=2)
p.add_argument("--seq", type=int, default=128)
p.add_argument("--steps", type=int, default=3, help="timed rounds of the step benchmark")
p.add_argument("--repeats", type=int, default=3, help="rounds of the fast (lowrank) init timings; min kept")
p.add_argument("--parts", default="init,step,mem")
p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one memory measurement
args = p.parse_args()
dtype = getattr(torch, args.dtype)
METHODS = ("geora", "peft-lora", "full")


def build():
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=args.vocab, hidden_size=1536, intermediate_size=8960, num_hidden_layers=args.layers,
                      num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=True)
    return Qwen2ForCausalLM(cfg).to(device=args.device, dtype=dtype)


def sync():
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def peft_adapt(model, init):
    import peft
    cfg = peft.LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=list(geora.TARGETS), lora_dropout=0.0,
                          init_lora_weights=init)
    return peft.get_peft_model(model, cfg)


def adapt(model, method):
    if method == "geora":
        geora.apply_geora(model, rank=args.rank, svd="lowrank")
    elif method == "peft-lora":
        model = peft_adapt(model, True)
    return model


def make_step(model):
    batch = torch.randint(0, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    batch = batch.to(args.device)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-5)

    def step():
        with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
    return step


def rss_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


if args.worker:  # one method, fresh process: peak extra memory of two training steps
    model = adapt(build(), args.worker)
    step = make_step(model)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(), step()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = rss_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS to the current RSS
        step(), step()
        peak = (rss_kib("VmHWM") - base) * 1024
    print(json.dumps(dict(method=args.worker, peak_bytes=peak)))
    sys.exit(0)

print(f"bench: {args.layers} layers of Qwen2.5-1.5B shape (hidden 1536, intermediate 8960), vocab {args.vocab}, "
      f"rank {args.rank}, {args.device} {args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads")
parts = args.parts.split(",")
base = build()

if "init" in parts:
    runs = [  # the two fast ones alternate --repeats times (min kept); the full SVDs run once
        ("peft pissa_niter_4", args.repeats, lambda m: peft_adapt(m, "pissa_niter_4")),
        ("geora lowrank", args.repeats, lambda m: geora.apply_geora(m, rank=args.rank, svd="lowrank")),
        ("peft pissa (full SVD)", 1, lambda m: peft_adapt(m, "pissa")),
        ("geora full", 1, lambda m: geora.apply_geora(m, rank=args.rank, svd="full")),
    ]
    init = {name: float("inf") for name, _, _ in runs}
    for rep in range(args.repeats):
        for name, n, fn in runs:
            if rep >= n:
                continue
            model = copy.deepcopy(base)
            sync()
            t0 = time.perf_counter()
            fn(model)
            sync()
            init[name] = min(init[name], time.perf_counter() - t0)
            del model
    print("\n| init (all 7 projections per layer) | seconds | per layer | vs PEFT pissa_niter_4 |\n|---|---|---|---|")
    for name, sec in init.items():
        print(f"| {name} | {sec:.2f} | {sec / args.layers:.2f} | {sec / init['peft pissa_niter_4']:.2f}x |")

if "step" in parts:
    models = {m: adapt(copy.deepcopy(base), m) for m in METHODS}
    steps = {m: make_step(models[m]) for m in METHODS}
    times = {m: [] for m in METHODS}
    for m in METHODS:
        steps[m]()  # warm-up (allocates the optimizer state)
    for _ in range(args.steps):
        for m in METHODS:
            t0 = time.perf_counter()
            steps[m]()
            times[m].append(time.perf_counter() - t0)
    med = {m: statistics.median(t) for m, t in times.items()}
    trainable = {m: sum(q.numel() for q in models[m].parameters() if q.requires_grad) for m in METHODS}
    print(f"\n| training step (batch {args.batch} x {args.seq}) | trainable params | median s/step | vs PEFT LoRA |"
          "\n|---|---|---|---|")
    for m in METHODS:
        print(f"| {m} | {trainable[m]:,} | {med[m]:.3f} | {med[m] / med['peft-lora']:.3f}x |")
    del models, steps

if "mem" in parts:
    peak = {}
    for m in METHODS:
        cmd = [sys.executable, __file__, "--worker", m] + [a for a in sys.argv[1:]]
        # a fixed mmap threshold makes glibc return every large freed block at once, so RSS tracks live tensors
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        peak[m] = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]
    print(f"\n| peak extra memory of a training step | MiB | vs PEFT LoRA |\n|---|---|---|")
    for m in METHODS:
        print(f"| {m} | {peak[m] / 2**20:.0f} | {peak[m] / peak['peft-lora']:.3f}x |")
