"""
Benchmarks: geora.py against PEFT on real layer shapes, the chunked LM head, and a real-shape GRPO rehearsal.

    python bench.py                       # init time, step time, peak step memory vs PEFT; prints ratios
    python bench.py --layers 1 --parts init
    python bench.py --parts head          # peak memory of one scoring micro-batch: chunked head vs whole logits
    python bench.py --device cuda --dtype bfloat16   # on a GPU
    python bench.py --rehearsal           # train.py's real loop, 2 GRPO steps at Qwen2.5-1.5B's exact shapes
    python bench.py --rehearsal --config qwen2.5-7b --device cuda

What is measured, side by side in one run (machines are noisy: read the ratios, not the seconds):
  init  seconds to adapt every q,k,v,o,gate,up,down projection: GeoRA svd=full and svd=lowrank (niter 4) vs PEFT
        init_lora_weights="pissa" and "pissa_niter_4" (one SVD per matrix where GeoRA needs two plus two quantiles).
  step  seconds per forward+backward+AdamW step of GeoRA vs PEFT LoRA (same rank, default init) vs full fine-tuning,
        interleaved round-robin in one process so background load hits all three alike; the median is kept.
  mem   peak extra memory of a training step (activations, gradients, optimizer state), each method in a fresh
        subprocess: on CPU the kernel's peak RSS is reset just before the step (/proc/self/clear_refs) and read after;
        on CUDA torch.cuda.max_memory_allocated. glibc's mmap threshold is pinned in the subprocess so that memory freed
        by the initialisation goes back to the kernel and cannot hide the step's own allocations.
  head  peak extra memory of grpo.token_logprobs forward + backward on one micro-batch (--batch x --seq completion
        tokens) with Qwen2.5's 151,936-token vocabulary: the LM head applied chunk by chunk inside checkpoints (what
        grpo.py does) against the whole (tokens, V) logits materialised first (what it did before), fresh processes.
Deliberate simplifications: the vocabulary is cut to --vocab (8192) for init/step/mem so the embedding does not dwarf
the layers (adapter cost is per layer); --layers (2) layers instead of 28, so per-layer costs are what the numbers show.

--rehearsal: a model with the exact configuration of --config (memory.CONFIGS: Qwen2.5-1.5B by default: 28 layers,
hidden 1536, MLP 8960, 12/2 heads, vocab 151,936, tied embeddings), random weights, saved once to
out/rehearsal/<config>/ with a byte-level BPE tokenizer trained on the GSM8K questions and answers (so prompts have
realistic lengths) and Qwen's ChatML template. Then `python train.py` itself, in a fresh process per method, on the
local GSM8K copy for 2 GRPO steps: on CPU 2 prompts x 4 rollouts, 128 new tokens, fp32; on CUDA 8 x 8, 1,024 new
tokens, bf16. A random model never says EOS, so every completion runs to the token limit (the worst case the estimate
plans for) and no reward is ever earned: --beta 0.001 (the paper's KL coefficient) keeps every completion in the
backward pass. GeoRA uses svd=lowrank (the full SVD of 196 matrices takes minutes on a CPU: bench.py --parts init
times both). --parallel starts the methods side by side (the GPU suite does: on one GPU each process is bound by
Python's per-token overhead, so they barely slow each other); their seconds are then upper bounds. Results: out/rehearsal.json (and out/rehearsal-<config>-<device>.json) with, per method, init_s,
est_mem_gb (memory.estimate, what train.py prints), peak_mem_gb (the largest step peak: RSS on CPU, max allocated on
CUDA; on CPU glibc's mmap threshold is pinned for the steps, as for --parts mem, so that RSS follows the live tensors;
the load and the adapter init before them run with glibc's defaults, as any run does: pinned from the start, GeoRA's
init took 41 s instead of 27-32 s on a 2-core CPU, page faults for every large buffer), gen_s, gen_tokens_per_s,
train_s (means over the 2 steps), plus device and config.
Test-only dependency: peft (never imported by the core files).
"""

import argparse
import contextlib
import copy
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

import torch

import geora
import memory

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("geora", "peft-lora", "full")


def parse(argv=None):
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
    p.add_argument("--rehearsal", action="store_true", help="2 GRPO steps of train.py at a real model's shapes")
    p.add_argument("--config", default="qwen2.5-1.5b", choices=sorted(memory.CONFIGS))
    p.add_argument("--methods", default="geora,lora", help="rehearsal methods")
    p.add_argument("--parallel", action="store_true", help="rehearsal: run the methods side by side (one GPU is "
                                                             "bound by Python's per-token overhead, not compute)")
    p.add_argument("--data-dir", default=os.path.join(HERE, "..", "shared", "data"), help="holds gsm8k/train.jsonl")
    p.add_argument("--rollout-methods", default="none,lora,geora", help="rollout: adapters to sample with")
    p.add_argument("--rollout-batches", default="64,256", help="rollout: completions per call (= slots)")
    p.add_argument("--rollout-layers", type=int, default=None, help="rollout: layers (default 2 on CPU, 28 on CUDA)")
    p.add_argument("--prompt-tokens", type=int, default=128, help="rollout: prompt length (prefill is in the timing)")
    p.add_argument("--new-tokens", type=int, default=None, help="rollout: new tokens (default 256 on CPU, 1,024 on CUDA)")
    p.add_argument("--eager-tokens", type=int, default=None,
                   help="rollout: new tokens of the eager runs (default --new-tokens on CPU, 128 on CUDA: its step time "
                        "is flat in the context, and 1,024 eager steps x 6 runs would not fit the GPU suite)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one memory measurement
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- rollout engines

class _IdTokenizer:  # a random model's tokens decode to nothing useful: ids only
    pad_token_id, eos_token_id = 0, None

    def batch_decode(self, ids, skip_special_tokens=True):
        return [""] * len(ids)


def _bandwidth(args):
    """Measured device-to-device copy bandwidth, bytes/s (read + write of a 1 GiB buffer, best of 5)."""
    x = torch.empty(1 << 28, dtype=torch.float32, device=args.device)
    y = torch.empty_like(x)
    best = float("inf")
    for _ in range(5):
        sync(args)
        t0 = time.perf_counter()
        y.copy_(x)
        sync(args)
        best = min(best, time.perf_counter() - t0)
    return 2 * x.numel() * 4 / best


def bench_rollout(args):
    """grpo.generate (eager: model.generate) against rollout.generate (compiled), same keys, same model, one run.
    Writes out/rollout.json: per "engine/method/batch" tokens_per_s, s_per_decode_step, compile_s (and on CUDA
    roofline_frac), identical_frac and max_logp_gap (against the eager sampler) and scored_logp_gap (against
    grpo.token_logprobs, the scored policy) for the compiled runs, plus identical_tokens (fp32: every token equal) and device."""
    import grpo
    import rollout
    cuda = args.device.startswith("cuda")
    layers = args.rollout_layers or (28 if cuda else 2)
    new = args.new_tokens or (1024 if cuda else 256)
    eager_new = min(new, args.eager_tokens or (128 if cuda else new))
    prompt_len = args.prompt_tokens
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    print(f"rollout bench: {layers} layers of Qwen2.5-1.5B (vocab 151,936), prompts {prompt_len} tokens, {new} new "
          f"tokens ({eager_new} for eager), {args.device} {args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    bw = _bandwidth(args) if cuda else None
    res = {"device": torch.cuda.get_device_name() if cuda else f"cpu ({os.cpu_count()} cores)", "layers": layers,
           "new_tokens": new, "eager_new_tokens": eager_new, "prompt_tokens": prompt_len, "dtype": args.dtype,
           "bandwidth_gb_s": bw and round(bw / 1e9, 1), "runs": {}}
    tok = _IdTokenizer()
    all_same = True
    for method in args.rollout_methods.split(","):
        model = build(args, vocab=151936, layers=layers)              # --dtype; adapters stay fp32 (geora.py)
        if method != "none":
            geora.apply_geora(model, rank=args.rank, init=method, svd="lowrank")
        model.generation_config.eos_token_id, model.generation_config.pad_token_id = [0], 0   # a random model: no EOS
        model.eval()
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        for batch in map(int, args.rollout_batches.split(",")):
            g = torch.Generator().manual_seed(batch)
            prompts = [torch.randint(1, 151936, (prompt_len,), generator=g).tolist() for _ in range(batch)]
            keys = [grpo.sample_key(0, i) for i in range(batch)]
            outs = {}
            for engine in ("eager", "compiled"):
                stats = {}
                kw = dict(n=1, max_new_tokens=new if engine == "compiled" else eager_new, keys=keys, batch_size=batch)
                fn = grpo.generate if engine == "eager" else \
                    lambda *a, **k: rollout.generate(*a, **k, stats=stats)
                with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=dtype != torch.float32), \
                        geora.frozen_factors(model):
                    # warm-up outside the timed run: the compile (and capture), model.generate's first call
                    fn(model, tok, prompts, **dict(kw, max_new_tokens=min(new, 16)))
                    compile_s = stats.get("compile_s", 0.0)
                    stats.clear()
                    sync(args)
                    t0 = time.perf_counter()
                    out = fn(model, tok, prompts, **kw)
                    sync(args)
                    dt = time.perf_counter() - t0
                compile_s = compile_s + stats.get("compile_s", 0.0) if engine == "compiled" else 0.0
                dt -= stats.get("compile_s", 0.0)              # a span bucket first met in the timed run
                steps = out["n_completion"]
                r = {"tokens_per_s": round(batch * steps / dt, 1), "s_per_decode_step": round(dt / steps, 5),
                     "compile_s": round(compile_s, 2)}
                if cuda:   # bytes a decode step must read: the weights once, each row's K/V of its mean context
                    kv = 2 * layers * model.config.num_key_value_heads * 128 * 2 * batch * (prompt_len + steps / 2)
                    r["roofline_frac"] = round((weights + kv) / bw / r["s_per_decode_step"], 4)
                r["padding_frac"] = round(1 - stats["useful"] / stats["slot_steps"], 4) if stats else 0.0
                outs[engine] = out
                res["runs"][f"{engine}/{method}/{batch}"] = r
                print(f"  {engine:8s} {method:5s} batch {batch:4d}: {r['tokens_per_s']:9.1f} tok/s, "
                      f"{r['s_per_decode_step'] * 1e3:8.2f} ms/step, compile {r['compile_s']:.1f} s"
                      + (f", roofline {r['roofline_frac']:.1%}" if cuda else ""), flush=True)
            # keyed draws depend on (key, position) only, so the eager run's tokens are a prefix of the compiled run's
            # (a random model never samples EOS: every row runs to the budget)
            a, b = outs["eager"], outs["compiled"]
            ia, ib = a["input_ids"], b["input_ids"][:, :a["input_ids"].shape[1]]
            same = ia.shape == ib.shape and torch.equal(ia, ib)
            all_same &= same
            frac = float((ia[:, -eager_new:] == ib[:, -eager_new:]).float().mean()) if ia.shape == ib.shape else 0.0
            gap = float((a["logprobs"] - b["logprobs"][:, :eager_new]).abs().max()) if same else None
            # the scored policy is grpo.token_logprobs: how far the compiled sampler's log-probs are from it
            with torch.no_grad(), torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16,
                                                 enabled=dtype != torch.float32), geora.frozen_factors(model):
                scored = grpo.token_logprobs(model, b["input_ids"], b["attention_mask"], b["n_completion"])[0]
            scored_gap = float(((scored - b["logprobs"]).abs() * b["mask"]).max())
            e, c = res["runs"][f"eager/{method}/{batch}"], res["runs"][f"compiled/{method}/{batch}"]
            c.update(identical_frac=round(frac, 5), max_logp_gap=gap, scored_logp_gap=scored_gap,
                     speedup=round(c["tokens_per_s"] / e["tokens_per_s"], 2))
            print(f"  {method} batch {batch}: compiled / eager {c['speedup']:.2f}x, identical tokens {frac:.2%}, "
                  f"max log-prob gap {gap}, vs the scored policy (token_logprobs) {scored_gap:.2e}", flush=True)
        del model
    res["identical_tokens"] = bool(all_same)
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "rollout.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote out/rollout.json (identical_tokens {all_same})")


def schedule(lengths, S, k, refill=True):
    """Decode slot-steps of a rollout whose completions have `lengths` tokens (the first drawn by the prefill),
    with S slots: refill=False is grpo.generate's chunks of S rows, each running until its longest row ends;
    refill=True replays rollout.py's policy (checks every k steps, refill while rows are pending, then compact
    to a power of two >= 8 once a quarter of the slots or fewer are live). -> (slot_steps, useful steps)."""
    useful = sum(n - 1 for n in lengths)
    if not refill:
        return sum(S * (max(lengths[i:i + S]) - 1) for i in range(0, len(lengths), S)), useful
    pending, left, slot_steps, S_cur = list(lengths)[::-1], [], 0, S
    slots = [None] * S                                      # tokens still to draw by decode steps, None: idle
    for s in range(min(S, len(pending))):
        slots[s] = pending.pop() - 1
    while True:
        for s in range(S_cur):                              # ended on the first token: refill before decoding
            while slots[s] == 0 and pending:
                slots[s] = pending.pop() - 1
            if slots[s] == 0:
                slots[s] = None
        if not any(x is not None for x in slots[:S_cur]):
            return slot_steps, useful
        slot_steps += k * S_cur
        slots[:S_cur] = [None if x is None or x <= k else x - k for x in slots[:S_cur]]
        if pending:
            for s in range(S_cur):
                if slots[s] is None and pending:
                    slots[s] = pending.pop() - 1
        else:
            live = [x for x in slots[:S_cur] if x is not None]
            if live and len(live) <= S_cur // 4 and S_cur > 8:
                S_cur = max(8, 1 << (len(live) - 1).bit_length())
                slots = live + [None] * (S - len(live))


def bench_waste(args):
    """How much of the decode work goes to rows that already ended: the tiny world's real rollouts (both engines,
    and the scheduler model checked against the loop's own counters), then GSM8K-like lengths (log-normal,
    median 250, capped at 1,024) through the same scheduler model. Writes out/waste.json."""
    import random
    import grpo
    import rollout
    import tiny
    from data import format_prompt, load_tokenizer
    from transformers import AutoModelForCausalLM
    res = {"device": f"cpu ({os.cpu_count()} cores)" if not args.device.startswith("cuda") else torch.cuda.get_device_name()}
    tok = load_tokenizer(tiny.TINY_BASE)
    model = AutoModelForCausalLM.from_pretrained(tiny.TINY_BASE, dtype=torch.float32).eval()
    rows = tiny.tiny_rows("train", 16)
    prompts = [format_prompt(tok, r["question"]) for r in rows]
    keys = [grpo.sample_key(0, 0, i) for i in range(128)]
    for S in (128, 32):
        stats = {}
        out = rollout.generate(model, tok, prompts, n=8, max_new_tokens=48, keys=keys, batch_size=S, compile=False,
                               check_every=8, stats=stats)
        lengths = out["mask"].sum(1).long().tolist()
        chunked, useful = schedule(lengths, S, 8, refill=False)
        model_steps, _ = schedule(lengths, S, 8)
        assert model_steps == stats["slot_steps"] and useful == stats["useful"], (model_steps, stats)
        res[f"tiny/{S}"] = {"eager_padding_frac": round(1 - useful / chunked, 3),
                            "refill_padding_frac": round(1 - useful / stats["slot_steps"], 3),
                            "slot_steps_ratio": round(stats["slot_steps"] / chunked, 3)}
    rng = random.Random(0)
    lengths = [min(1024, max(8, round(250 * math.exp(0.5 * rng.gauss(0, 1))))) for _ in range(512)]
    for S in (64, 256, 512):
        chunked, useful = schedule(lengths, S, 8, refill=False)
        slot_steps, _ = schedule(lengths, S, 8)
        res[f"gsm8k-like/{S}"] = {"eager_padding_frac": round(1 - useful / chunked, 3),
                                  "refill_padding_frac": round(1 - useful / slot_steps, 3),
                                  "slot_steps_ratio": round(slot_steps / chunked, 3)}
    for k, v in res.items():
        print(f"  {k}: {v}")
    with open(os.path.join(HERE, "out", "waste.json"), "w") as f:
        json.dump(res, f, indent=1)


# ----------------------------------------------------------------------------- layers vs PEFT

# ----------------------------------------------------------------------------- the update pass

def _update_rollouts(n, cuda, seed=0):
    """Synthetic graded rollouts with GSM8K-like long-tailed lengths: completions log-normal (median 250, capped
    at 1,024; on CPU both divided by 4), prompts 40-120 tokens (/4 on CPU), left-padded prompts, completions
    right-padded, advantages of both signs. Returns train.py's roll dict."""
    g = torch.Generator().manual_seed(seed)
    scale = 1 if cuda else 4
    comp = (torch.exp(torch.randn(n, generator=g) * 0.7) * 250 / scale).clamp(4, 1024 // scale).long()
    prompt = torch.randint(40 // scale, 120 // scale + 1, (n,), generator=g)
    P, L = int(prompt.max()), int(comp.max())
    ids = torch.randint(1, 151936, (n, P + L), generator=g)
    attn = torch.zeros(n, P + L, dtype=torch.long)
    for i in range(n):
        attn[i, P - prompt[i]:P + comp[i]] = 1
    ids = ids * attn
    adv = torch.randn(n, generator=g)
    return {"input_ids": ids, "attention_mask": attn, "n_completion": L, "mask": attn[:, P:].float(), "adv": adv}


def bench_update(args):
    """One GRPO update (scoring + backward + the reference pass) on the same rollouts with train.py's own
    accumulate_gradients: padded micro-batches of --micro-batch rows (the old path) against packed token-budget
    micro-batches (--micro-batch-tokens = those rows at the longest length, train.py's default), side by side,
    alternating, best of --repeats. Writes out/update.json: {"padded": {...}, "packed": {...}, "device", ...},
    each with tokens_per_s (completion tokens scored per second), padding_frac (computed slots that are padding),
    peak_mem_gb (CUDA max allocated, or the CPU peak RSS) and on CUDA mfu (6 x params x tokens for policy forward
    + backward, 2 x params x tokens for the reference, over the bf16 dense peak of an H100/H200)."""
    import types
    import grpo
    import train
    cuda = args.device.startswith("cuda")
    layers = args.rollout_layers or (28 if cuda else 2)
    n = 64 if cuda else 16
    mb = 8 if cuda else 4
    model = build(args, vocab=151936, layers=layers)
    geora.apply_geora(model, rank=args.rank, svd="lowrank")
    if cuda:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    roll = {k: v.to(args.device) if torch.is_tensor(v) and k != "adv" else v
            for k, v in _update_rollouts(n, cuda).items()}
    attn = roll["attention_mask"]
    T = attn.shape[1]
    lens = attn.sum(1).tolist()
    comp_tokens = float(roll["mask"].sum())
    real = sum(lens)
    rt = types.SimpleNamespace(world=1, rank=0, device=torch.device(args.device), fsdp=False,
                               autocast=torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext())
    base = dict(beta=0.0, method="geora", log_kl=False, kl_every=1, steps=1, temperature=1.0, clip_low=0.2,
                clip_high=0.2, agg="token-mean", fsdp=False, micro_batch=mb)
    sides = {"padded": dict(base, micro_batch_tokens=0), "packed": dict(base, micro_batch_tokens=mb * T)}
    # computed slots: padded = rows x trimmed width per micro-batch; packed = packed rows x their length
    order = torch.nonzero(roll["adv"] != 0).flatten().tolist()
    slots = {"padded": 0, "packed": 0}
    P = T - roll["n_completion"]
    for i in range(0, n, mb):
        b = order[i:i + mb]
        c = roll["mask"][b].sum(1)
        left = [int((attn[j, :P] == 0).sum()) for j in b]
        slots["padded"] += len(b) * (P - min(left) + int(c.max()))
    for b in grpo.token_batches(lens, mb * T):
        _, rows, R = grpo.pack_rows([lens[j] for j in b], model.config.hidden_size)
        slots["packed"] += rows * R
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"update bench: {layers} layers of Qwen2.5-1.5B (vocab 151,936), GeoRA, {n} completions "
          f"({comp_tokens:.0f} completion tokens, {real} real tokens, longest row {T}), micro-batch {mb} rows "
          f"or {mb * T} tokens, {args.device} {args.dtype}")
    res = {"device": torch.cuda.get_device_name() if cuda else f"cpu ({os.cpu_count()} cores)", "layers": layers,
           "completions": n, "completion_tokens": comp_tokens, "lengths": "log-normal, median 250, cap 1,024" +
           ("" if cuda else ", /4 on CPU")}
    best = {k: float("inf") for k in sides}
    peak = {k: 0.0 for k in sides}
    for rep in range(args.repeats):
        for name, a in sides.items():
            a = types.SimpleNamespace(**a)
            for p in params:
                p.grad = None
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            else:
                train.reset_peak_rss()
            sync(args)
            t0 = time.perf_counter()
            train.accumulate_gradients(model, None, roll, a, comp_tokens, rt)
            sync(args)
            best[name] = min(best[name], time.perf_counter() - t0)
            peak[name] = max(peak[name], torch.cuda.max_memory_allocated() / 1e9 if cuda else train.peak_rss_gb())
    for name in sides:
        r = {"tokens_per_s": round(comp_tokens / best[name], 1), "seconds": round(best[name], 3),
             "padding_frac": round(1 - real / slots[name], 4), "peak_mem_gb": round(peak[name], 3)}
        if cuda:
            name_gpu = torch.cuda.get_device_name()
            peak_flops = 989e12 if ("H100" in name_gpu or "H200" in name_gpu) else None
            if peak_flops:
                r["mfu"] = round(8 * n_params * real / best[name] / peak_flops, 4)
        res[name] = r
        print(f"  {name:7s}: {r['tokens_per_s']:9.1f} completion tok/s, {r['seconds']:.2f} s, padding "
              f"{r['padding_frac']:.1%}, peak {r['peak_mem_gb']:.2f} GB" + (f", MFU {r['mfu']:.1%}" if "mfu" in r else ""))
    res["speedup"] = round(best["padded"] / best["packed"], 2)
    print(f"  packed / padded: {res['speedup']:.2f}x")
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "update.json"), "w") as f:
        json.dump(res, f, indent=1)
    print("wrote out/update.json")


def build(args, vocab=None, layers=None):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=vocab or args.vocab, hidden_size=1536, intermediate_size=8960,
                      num_hidden_layers=layers or args.layers, num_attention_heads=12, num_key_value_heads=2,
                      max_position_embeddings=4096, tie_word_embeddings=True)
    return Qwen2ForCausalLM(cfg).to(device=args.device, dtype=getattr(torch, args.dtype))


def sync(args):
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def peft_adapt(args, model, init):
    import peft
    cfg = peft.LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=list(geora.TARGETS), lora_dropout=0.0,
                          init_lora_weights=init)
    return peft.get_peft_model(model, cfg)


def adapt(args, model, method):
    if method == "geora":
        geora.apply_geora(model, rank=args.rank, svd="lowrank")
    elif method == "peft-lora":
        model = peft_adapt(args, model, True)
    return model


def make_step(args, model):
    batch = torch.randint(0, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    batch = batch.to(args.device)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-5)
    bf16 = args.dtype == "bfloat16"

    def step():
        with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(args)
    return step


def rss_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def measure_peak(args, fn):
    """Peak extra bytes of fn(): CUDA max allocated, or the CPU's peak RSS after a reset."""
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    base = rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS to the current RSS
    fn()
    return (rss_kib("VmHWM") - base) * 1024


def worker(args):
    """One measurement in a fresh process: a training step of one method, or one scoring pass of the head."""
    kind, _, what = args.worker.partition(":")
    if kind == "step":
        step = make_step(args, adapt(args, build(args), what))
        peak = measure_peak(args, lambda: (step(), step()))
    else:  # head: token_logprobs forward + backward on one micro-batch, 151,936-token vocabulary
        import grpo
        model = build(args, vocab=151936, layers=args.layers)
        geora.apply_geora(model, rank=args.rank, svd="lowrank")
        ids = torch.randint(0, 151936, (args.batch, args.seq + 16), generator=torch.Generator().manual_seed(0))
        ids, attn = ids.to(args.device), torch.ones_like(ids).to(args.device)
        fn = grpo.token_logprobs if what == "chunked" else _logprobs_whole_logits

        def run():
            with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.dtype == "bfloat16"):
                logp, _ = fn(model, ids, attn, args.seq)
            logp.sum().backward()
        peak = measure_peak(args, run)
    print(json.dumps(dict(worker=args.worker, peak_bytes=peak)))


def _logprobs_whole_logits(model, input_ids, attention_mask, L, temperature=1.0):
    """The baseline: grpo.token_logprobs before the chunked head. The model returns (B, L+1, V) logits, then the fp32
    log-softmax runs in checkpointed chunks; the whole logits tensor and its gradient exist at once."""
    from torch.utils.checkpoint import checkpoint
    B, T = input_ids.shape
    pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos, logits_to_keep=L + 1,
                   use_cache=False).logits[:, :-1].reshape(B * L, -1)
    targets = input_ids[:, T - L:].reshape(B * L)

    def chunk(lg, tg):
        z = lg.float() / temperature
        return z.gather(-1, tg[:, None]).squeeze(-1) - torch.logsumexp(z, -1)
    out = [checkpoint(chunk, logits[i:i + 4096], targets[i:i + 4096], use_reentrant=False)
           for i in range(0, B * L, 4096)]
    return torch.cat(out).view(B, L), None


def run_worker(args, spec):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", spec] + [a for a in sys.argv[1:]]
    # a fixed mmap threshold makes glibc return every large freed block at once, so RSS tracks live tensors
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env, cwd=HERE)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def bench_layers(args):
    print(f"bench: {args.layers} layers of Qwen2.5-1.5B shape (hidden 1536, intermediate 8960), vocab {args.vocab}, "
          f"rank {args.rank}, {args.device} {args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    parts = args.parts.split(",")
    if "rollout" in parts:
        bench_rollout(args)
    if "waste" in parts:
        bench_waste(args)
    if "update" in parts:
        bench_update(args)
    if "init" in parts or "step" in parts:
        base = build(args)
    if "init" in parts:
        runs = [  # the two fast ones alternate --repeats times (min kept); the full SVDs run once
            ("peft pissa_niter_4", args.repeats, lambda m: peft_adapt(args, m, "pissa_niter_4")),
            ("geora lowrank", args.repeats, lambda m: geora.apply_geora(m, rank=args.rank, svd="lowrank")),
            ("peft pissa (full SVD)", 1, lambda m: peft_adapt(args, m, "pissa")),
            ("geora full", 1, lambda m: geora.apply_geora(m, rank=args.rank, svd="full")),
        ]
        init = {name: float("inf") for name, _, _ in runs}
        for rep in range(args.repeats):
            for name, n, fn in runs:
                if rep >= n:
                    continue
                model = copy.deepcopy(base)
                sync(args)
                t0 = time.perf_counter()
                fn(model)
                sync(args)
                init[name] = min(init[name], time.perf_counter() - t0)
                del model
        print("\n| init (all 7 projections per layer) | seconds | per layer | vs PEFT pissa_niter_4 |\n|---|---|---|---|")
        for name, sec in init.items():
            print(f"| {name} | {sec:.2f} | {sec / args.layers:.2f} | {sec / init['peft pissa_niter_4']:.2f}x |")
    if "step" in parts:
        models = {m: adapt(args, copy.deepcopy(base), m) for m in METHODS}
        steps = {m: make_step(args, models[m]) for m in METHODS}
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
        peak = {m: run_worker(args, f"step:{m}") for m in METHODS}
        print("\n| peak extra memory of a training step | MiB | vs PEFT LoRA |\n|---|---|---|")
        for m in METHODS:
            print(f"| {m} | {peak[m] / 2**20:.0f} | {peak[m] / peak['peft-lora']:.3f}x |")
    if "head" in parts:
        peak = {k: run_worker(args, f"head:{k}") for k in ("whole", "chunked")}
        print(f"\n| scoring pass, {args.batch} x {args.seq} completion tokens, vocab 151,936, {args.layers} layers "
              f"| peak extra MiB | vs whole logits |\n|---|---|---|")
        for k, name in (("whole", "whole (tokens, V) logits, then chunked softmax"),
                        ("chunked", "LM head inside checkpointed chunks (grpo.py)")):
            print(f"| {name} | {peak[k] / 2**20:.0f} | {peak[k] / peak['whole']:.3f}x |")


# ----------------------------------------------------------------------------- rehearsal

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def rehearsal_model(args):
    """out/rehearsal/<config>/: random weights with the config's exact shapes (bf16) and a GSM8K-trained tokenizer."""
    out = os.path.join(HERE, "out", "rehearsal", args.config)
    if os.path.exists(os.path.join(out, "ready")):
        return out
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast
    from data import read_jsonl
    rows = read_jsonl(os.path.join(args.data_dir, "gsm8k", "train.jsonl"))
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk.train_from_iterator((r["question"] + "\n" + r["answer"] for r in rows), trainers.BpeTrainer(
        vocab_size=8192, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  padding_side="left")
    tok.chat_template = CHATML
    spec = dict(memory.CONFIGS[args.config])
    cfg = AutoConfig.for_model(spec.pop("model_type"), **spec, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    device = args.device if args.device.startswith("cuda") else "cpu"
    with torch.device(device):  # random init, in bf16 like a checkpoint (older transformers: torch_dtype)
        try:
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        except TypeError:
            model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    open(os.path.join(tmp, "ready"), "w").close()
    shutil.rmtree(out, ignore_errors=True)   # an interrupted earlier build
    os.replace(tmp, out)
    del model
    return out


# train.py with glibc's mmap threshold pinned for the GRPO steps only (see the docstring): every block above 64 KB is
# then mmapped and returned when freed, and what the load and the init freed is handed back before the first step
PINNED_STEPS = """
import ctypes, sys
import train
libc, step = ctypes.CDLL(None), train.train_step
def pinned(*a, **k):
    if hasattr(libc, "mallopt"):     # glibc only
        libc.mallopt(-3, 65536)       # M_MMAP_THRESHOLD (fixed: glibc's dynamic threshold is off from here)
        libc.malloc_trim(0)
    return step(*a, **k)
train.train_step = pinned
train.main(sys.argv[1:])
"""


def rehearse(args):
    cuda = args.device.startswith("cuda")
    t0 = time.time()
    path = rehearsal_model(args)
    print(f"rehearsal model {args.config} ready in {path} ({time.time() - t0:.0f} s)", flush=True)
    prompts, group, new = (8, 8, 1024) if cuda else (2, 4, 128)
    res = {"device": torch.cuda.get_device_name() if cuda else f"cpu ({os.cpu_count()} cores)",
           "config": dict(name=args.config, **memory.CONFIGS[args.config], prompts=prompts, group=group,
                          new_tokens=new, dtype="bf16" if cuda else "fp32")}
    failed = []

    def collect(method, out, t1, proc):
        """Wait for one method's process; record its numbers and write the JSON (a cut-off suite keeps them)."""
        if proc.wait():
            failed.append(f"{method} (see {out}.log)")
            return
        with open(os.path.join(out, "metrics.jsonl")) as f:
            lines = [json.loads(l) for l in f]
        setup = next(l for l in lines if l.get("setup"))
        steps = [l for l in lines if "reward" in l]
        mean = lambda k: sum(l[k] for l in steps) / len(steps)
        res[method] = r = dict(init_s=setup["init_s"], est_mem_gb=setup["est_mem_gb"],
                               peak_mem_gb=max(l.get("mem_gb", 0.0) for l in steps), gen_s=mean("gen_s"),
                               gen_tokens_per_s=mean("gen_tokens_per_s"), train_s=mean("train_s"),
                               rollout_batch=setup["rollout_batch"], response_len=mean("response_len"),
                               trainable=setup["trainable"], wall_s=round(time.time() - t1, 1), parallel=args.parallel)
        print(f"{method}: init {r['init_s']:.1f} s, memory est {r['est_mem_gb']:.2f} GB vs peak {r['peak_mem_gb']:.2f} GB "
              f"({r['est_mem_gb'] / max(r['peak_mem_gb'], 1e-9):.2f}x), generate {r['gen_s']:.1f} s "
              f"({r['gen_tokens_per_s']:.0f} tok/s), train {r['train_s']:.1f} s, process {r['wall_s']:.0f} s", flush=True)
        os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
        for name in ("rehearsal.json", f"rehearsal-{args.config}-{'cuda' if cuda else 'cpu'}.json"):
            with open(os.path.join(HERE, "out", name), "w") as f:
                json.dump(res, f, indent=1)

    started = []
    for method in args.methods.split(","):
        out = os.path.join(HERE, "out", "rehearsal", f"run-{args.config}-{method}")
        flags = ["--model", path, "--method", method, "--dataset", "gsm8k", "--data-dir", args.data_dir, "--steps", "2",
                 "--prompts-per-step", str(prompts), "--group-size", str(group), "--max-new-tokens", str(new),
                 "--beta", "0.001", "--svd", "lowrank", "--eval-size", "0", "--out", out, "--device", args.device]
        cmd = [sys.executable] + (["-c", PINNED_STEPS] if not cuda else [os.path.join(HERE, "train.py")]) + flags
        env = dict(os.environ)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        log = open(out + ".log", "w")  # the run's own output, kept beside its directory
        run = (method, out, time.time(), subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=HERE, env=env))
        if args.parallel:
            started.append(run)
        else:
            collect(*run)
    for run in started:  # every child is waited for, so none outlives the rehearsal
        collect(*run)
    if failed:
        raise SystemExit("rehearsal failed: " + ", ".join(failed))
    return res


if __name__ == "__main__":
    a = parse()
    if a.worker:
        worker(a)
    elif a.rehearsal:
        rehearse(a)
    else:
        bench_layers(a)
