"""GRPO fine-tuning with a GeoRA adapter (or LoRA / PiSSA / MiLoRA / full fine-tuning), one flat script.

    python train.py                                   # offline tiny world, GeoRA, CPU (~2 + ~1.5 min)
    python train.py --model Qwen/Qwen2.5-1.5B --dataset gsm8k --rank 16 --rho 0.2
    python train.py --model Qwen/Qwen2.5-Math-1.5B --dataset math --max-new-tokens 1024 --micro-batch 8
    torchrun --nproc_per_node=4 train.py --model Qwen/Qwen2.5-1.5B --dataset gsm8k   # several GPUs
    python train.py --method pissa                     # a baseline, in out/tiny-pissa, at its own lr
    python train.py --resume                           # continue exactly from the last checkpoint in --out

The loop, once per step: take the next --prompts-per-step prompts -> sample --group-size completions
each (grpo.generate) -> reward.grade -> group advantages -> GRPO loss over micro-batches -> clip the
gradient norm -> one AdamW step on the trainable parameters only. Every --eval-every steps (and
before the first and after the last) greedy accuracy on a fixed held-out set and geora.py's geometry
report (mean S_head, relative update norm) go to OUT/metrics.jsonl.

Outputs in --out: metrics.jsonl (one line per step, plus eval lines), ckpt-STEP/ (the latest
checkpoint: adapter or weights, optimizer, RNG states, data cursor; OUT/latest names it),
and at the end the final adapter (geora_adapter.safetensors, what eval.py --adapter OUT reads), a
standard PEFT LoRA in OUT/peft/, and with --merge a merged model in OUT/merged/ (save_pretrained).

Choices and simplifications:
- Defaults are the tiny world's (tiny.py: a 0.8M-parameter Qwen2 on word problems, built once into
  out/tiny-base): the whole script runs offline on a laptop CPU in minutes. With --model the
  defaults switch to LLM-sized values (see DEFAULTS / LLM_DEFAULTS below); every flag overrides.
- Learning rate: per method when --lr is not given (DEFAULT_LR, from sweeps on the tiny world at
  rank 16, alpha = rank: GeoRA was stable from 3e-4 to 1e-3 and collapsed at 3e-3; PiSSA, whose
  adapter holds the top singular directions, collapsed at 5e-4 and needs 1e-4; full fine-tuning
  needs ~10x less than the adapters). The rate is constant (no schedule): RL runs are short.
- One optimizer step per batch of rollouts, so the policy that sampled is the policy being
  updated: old log-probs are the current ones, detached (importance ratio exactly 1). Completions
  of groups whose rewards are all equal have advantage 0 and, when beta = 0, are skipped in the
  backward pass; the loss normaliser still counts them, so the gradient is unchanged.
- The loss is normalised over the whole step (all micro-batches, all ranks), so gradient
  accumulation and data parallelism give the same gradient as one big batch.
- Reference policy (KL penalty and the logged KL): for adapter methods the same model under
  geora.adapters_disabled (exactly the initial weights, no copy). For full fine-tuning a frozen
  copy is kept only when --beta > 0 or --log-kl; otherwise its KL is not logged (null).
- dr-grpo aggregation also drops the std scaling of the advantages (Dr. GRPO's two changes).
- Truncated completions (no EOS within --max-new-tokens) are graded no_answer (reward 0), so
  the policy cannot earn reward by rambling past the budget.
- Several processes (torchrun): each rank takes its share of the step's prompts, gradients are
  summed with one all-reduce per step (a flat buffer of the trainable tensors, after local
  accumulation: what DistributedDataParallel with no_sync does, but ranks may skip different
  numbers of zero-advantage micro-batches), metrics are summed across ranks, rank 0 writes
  logs and checkpoints. nccl on CUDA, gloo on CPU. Every rank builds the same adapter (seeded).
- Resume is exact: the checkpoint holds the trainable weights, AdamW state, every rank's RNG
  states and the data cursor; the data order is a seeded permutation per epoch.
- bf16 autocast on CUDA: frozen weights stored in bf16 for adapter methods (GeoRA's adapter
  branch stays fp32, as geora.py designs it), fp32 master weights for full fine-tuning; fp32 on
  CPU. --gradient-checkpointing trades compute for activation memory on long answers.
"""

import argparse
import functools
import json
import math
import os
import random
import shutil
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import geora
import grpo
from data import format_prompt, load_rows, load_tokenizer
from reward import grade

METHODS = ("geora", "lora", "pissa", "milora", "full")
# Tiny world, rank 16, 16 prompts x 8 samples, beta 0, 100 steps: each rate reached 74-76%
# held-out accuracy from 48% (see the module docstring and the README's sweep).
DEFAULT_LR = {"geora": 5e-4, "lora": 2e-3, "pissa": 1e-4, "milora": 5e-4, "full": 5e-5}
TINY_OUT = "out/tiny-{method}"
DEFAULTS = dict(steps=100, prompts_per_step=16, max_new_tokens=48, micro_batch=128, eval_every=25,
                eval_size=200, save_every=25)
LLM_DEFAULTS = dict(steps=500, prompts_per_step=32, max_new_tokens=1024, micro_batch=8, eval_every=50,
                    eval_size=500, save_every=50)
EVAL_SETS = {"gsm8k": ("gsm8k", "test"), "math": ("math500", "test"), "deepmath": ("math500", "test")}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = ap.add_argument
    a("--model", default=None, help="hub id or local path (default: the offline tiny world)")
    a("--method", default="geora", choices=METHODS)
    a("--init", default=None, help="GeoRA ablation: geora-random | geora-tail (default: --method)")
    a("--mask", default="union", choices=geora.MASKS, help="GeoRA mask ablation")
    a("--rank", type=int, default=16)
    a("--rho", type=float, default=0.2)
    a("--alpha", type=float, default=None, help="adapter scale alpha / rank (default alpha = rank)")
    a("--svd", default="full", choices=geora.SVDS, help="full, or lowrank (randomized, seeded) for big models")
    a("--dataset", default="tiny", help="gsm8k | math | deepmath | tiny | PATH.jsonl")
    a("--data-dir", default=None, help="local DIR/<name>/<split>.jsonl copies instead of the hub")
    a("--question-key", default=None)
    a("--answer-key", default=None)
    a("--eval-dataset", default=None, help="held-out set (default: tiny test / gsm8k test / math500)")
    a("--steps", type=int, default=None)
    a("--prompts-per-step", type=int, default=None)
    a("--group-size", type=int, default=8)
    a("--lr", type=float, default=None, help=f"default per method: {DEFAULT_LR}")
    a("--weight-decay", type=float, default=0.0)
    a("--beta", type=float, default=0.0, help="KL penalty to the initial policy (k3)")
    a("--log-kl", action="store_true", help="full fine-tuning: keep a frozen copy of the initial "
      "model to log the KL at --beta 0 too (adapter methods always log it, with no copy)")
    a("--clip-low", type=float, default=0.2)
    a("--clip-high", type=float, default=0.2)
    a("--agg", default="token-mean", choices=("token-mean", "seq-mean", "dr-grpo"))
    a("--temperature", type=float, default=1.0)
    a("--max-new-tokens", type=int, default=None)
    a("--micro-batch", type=int, default=None, help="completions per forward/backward")
    a("--grad-clip", type=float, default=1.0)
    a("--eval-every", type=int, default=None)
    a("--eval-size", type=int, default=None)
    a("--save-every", type=int, default=None)
    a("--out", default=None, help="output dir (default out/tiny-METHOD, or out/run-METHOD with --model)")
    a("--resume", action="store_true", help="continue from OUT/latest")
    a("--seed", type=int, default=0)
    a("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    a("--dtype", default="auto", choices=("auto", "bf16", "fp32"))
    a("--gradient-checkpointing", action="store_true")
    a("--merge", action="store_true", help="also save the merged model to OUT/merged")
    a("--wandb", default=None, metavar="PROJECT", help="log to Weights & Biases (optional)")
    args = ap.parse_args(argv)

    defaults = DEFAULTS if args.model is None or args.dataset == "tiny" else LLM_DEFAULTS
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.lr is None:
        args.lr = DEFAULT_LR[args.method]
    if args.init is None:
        args.init = args.method
    if args.method == "full" and args.init != "full":
        raise ValueError("--init applies to adapter methods; drop it with --method full")
    if args.method != "full" and args.init not in geora.INITS:
        raise ValueError(f"--init must be one of {geora.INITS}")
    if args.out is None:
        name = args.method if args.init == args.method else args.init
        args.out = TINY_OUT.format(method=name) if args.model is None else f"out/run-{name}"
    if args.group_size < 2:
        raise ValueError("--group-size must be >= 2: GRPO compares completions of the same prompt")
    for k in ("steps", "prompts_per_step", "max_new_tokens", "micro_batch", "eval_every", "eval_size",
              "save_every"):
        if getattr(args, k) < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be >= 1")
    if not args.lr > 0 or args.temperature <= 0:
        raise ValueError("--lr and --temperature must be > 0")
    return args


# ----------------------------------------------------------------------------- setup

def setup_distributed(args):
    """(rank, world, device). torchrun sets RANK/WORLD_SIZE; a plain run is rank 0 of 1."""
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = torch.device(args.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def load_model(args, device, rank, world):
    from transformers import AutoModelForCausalLM, GenerationConfig
    path = args.model
    if path is None:
        import tiny
        if rank == 0:
            tiny.build_tiny()
        if world > 1:
            dist.barrier()
        path = "out/tiny-base"
    dtype = args.dtype
    if dtype == "auto":  # full fine-tuning keeps fp32 master weights (and trains under autocast)
        dtype = "bf16" if device.type == "cuda" and args.method != "full" else "fp32"
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    try:
        tokenizer = load_tokenizer(path)  # as eval.py: guards a transformers 5 tokenizer swap
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as e:
        raise ValueError(f"could not load --model {path!r} ({e}); pass a local directory "
                         f"(save_pretrained layout) or a reachable hub id") from e
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    g = model.generation_config  # keep its token ids only: sampling is set by our flags
    model.generation_config = GenerationConfig(eos_token_id=g.eos_token_id, pad_token_id=g.pad_token_id,
                                               bos_token_id=g.bos_token_id)
    model.config.use_cache = True
    return model.to(device), tokenizer


def load_data(args, rank):
    """(train rows, {name: held-out rows}). The tiny world adds its two out-of-domain families."""
    quiet = rank != 0
    if args.dataset == "tiny":
        import tiny
        train = tiny.tiny_rows("train", seed=args.seed)
        evals = {"eval": tiny.tiny_rows("test", args.eval_size)}
        for fam in tiny.FAMILIES[1:]:
            evals[f"tiny-{fam}"] = tiny.tiny_rows("test", args.eval_size, family=fam)
        return train, evals
    train = _quietly(quiet, load_rows, args.dataset, "train", data_dir=args.data_dir,
                     question_key=args.question_key, answer_key=args.answer_key)
    name, split = (args.eval_dataset, "test") if args.eval_dataset else EVAL_SETS.get(args.dataset, (None, None))
    if name is None:
        print("no held-out set for this dataset: pass --eval-dataset NAME|PATH.jsonl to get eval_acc")
        return train, {}
    ev = _quietly(quiet, load_rows, name, split, data_dir=args.data_dir, limit=args.eval_size)
    return train, {"eval": ev}


def _quietly(quiet, fn, *a, **kw):
    if not quiet:
        return fn(*a, **kw)
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*a, **kw)


def prompt_indices(step, n_rows, per_step, seed):
    """The dataset rows of a step: a seeded permutation per epoch, read in order (a data cursor)."""
    out = []
    for cursor in range(step * per_step, (step + 1) * per_step):
        epoch, i = divmod(cursor, n_rows)
        out.append(int(_permutation(n_rows, seed, epoch)[i]))
    return out


@functools.lru_cache(maxsize=2)
def _permutation(n_rows, seed, epoch):
    return torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


# ----------------------------------------------------------------------------- checkpoints

def rng_state():
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s):
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    if s["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save_checkpoint(args, model, opt, state, rngs):
    """OUT/ckpt-STEP written in a temp dir and renamed; then OUT/latest (renamed too) points at it;
    then older checkpoints go. A crash at any point leaves the previous checkpoint loadable."""
    name = f"ckpt-{state['step']:06d}"
    tmp = os.path.join(args.out, f".tmp-{name}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    if args.method == "full":
        from safetensors.torch import save_file
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                   if not k.endswith("lm_head.weight") or not model.config.tie_word_embeddings},
                  os.path.join(tmp, "model.safetensors"))
    else:
        geora.save_adapter(model, os.path.join(tmp, "adapter"))
    torch.save({"optimizer": opt.state_dict(), "rng": rngs}, os.path.join(tmp, "trainer.pt"))
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(state, f, indent=1)
    final = os.path.join(args.out, name)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    with open(os.path.join(args.out, ".latest.tmp"), "w") as f:
        f.write(name)
    os.replace(os.path.join(args.out, ".latest.tmp"), os.path.join(args.out, "latest"))
    for old in os.listdir(args.out):
        if old.startswith("ckpt-") and old != name:
            shutil.rmtree(os.path.join(args.out, old), ignore_errors=True)


def latest_checkpoint(out):
    path = os.path.join(out, "latest")
    if not os.path.exists(path):
        raise ValueError(f"--resume: no checkpoint in {out!r} (no {path}); drop --resume or fix --out")
    with open(path) as f:
        return os.path.join(out, f.read().strip())


# ----------------------------------------------------------------------------- evaluation

def evaluate(model, tokenizer, evals, args, rank, world):
    """Greedy accuracy on each held-out set, prompts sharded over ranks. {name: accuracy}."""
    out = {}
    for name, rows in evals.items():
        mine = rows[rank::world]
        prompts = [format_prompt(tokenizer, r["question"]) for r in mine]
        acc, _ = grpo.evaluate(model, tokenizer, prompts, [r["gold"] for r in mine], grade,
                               max_new_tokens=args.max_new_tokens,
                               batch_size=256 if args.dataset == "tiny" else 32)
        counts = torch.tensor([acc * len(mine), len(mine)], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(counts)
        out[name] = float(counts[0] / counts[1])
    return out


# ----------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    rank, world, device = setup_distributed(args)
    master = rank == 0
    log = print if master else (lambda *a, **k: None)
    if args.prompts_per_step % world:
        raise ValueError(f"--prompts-per-step {args.prompts_per_step} must be divisible by the "
                         f"{world} processes")
    if args.resume:
        ckpt = latest_checkpoint(args.out)
        with open(os.path.join(ckpt, "state.json")) as f:
            state = json.load(f)
        for k in ("model", "method", "init", "mask", "rank", "rho", "alpha", "dataset", "seed",
                  "prompts_per_step", "group_size"):
            if state["args"][k] != getattr(args, k):
                raise ValueError(f"--resume: --{k.replace('_', '-')} was {state['args'][k]!r} in the "
                                 f"checkpoint, now {getattr(args, k)!r}; resume with the same settings")
    log("train.py " + " ".join(f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()))
    os.makedirs(args.out, exist_ok=True)

    torch.manual_seed(args.seed)
    train_rows, evals = load_data(args, rank)        # first: a bad --dataset fails fast
    if len(train_rows) < args.prompts_per_step:
        raise ValueError(f"{len(train_rows)} usable training rows, fewer than --prompts-per-step")
    model, tokenizer = load_model(args, device, rank, world)

    # adapters (or all weights) trainable; everything else frozen
    ref_model = None
    if args.method == "full":
        if args.beta > 0 or args.log_kl:  # the initial policy, copied before a resume loads weights
            import copy
            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        if args.resume:
            from safetensors.torch import load_file
            model.load_state_dict(load_file(os.path.join(ckpt, "model.safetensors"), device=str(device)),
                                  strict=False)
        model.requires_grad_(True)
        log(f"full fine-tuning: {sum(p.numel() for p in model.parameters()):,} trainable parameters")
    elif args.resume:
        geora.load_adapter(model, os.path.join(ckpt, "adapter"))
    else:
        rep = geora.apply_geora(model, rank=args.rank, rho=args.rho, alpha=args.alpha, init=args.init,
                                mask=args.mask, svd=args.svd, seed=args.seed)
        log(f"{args.init} adapters: {rep['modules']} modules, {rep['trainable']:,} trainable parameters, "
            f"{rep['seconds']:.1f} s init")
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    # every rank samples its own completions: its own generator stream
    torch.manual_seed(args.seed * 1000 + rank)
    random.seed(args.seed * 1000 + rank)
    np.random.seed(args.seed * 1000 + rank)
    start, before = 0, None
    if args.resume:
        trainer = torch.load(os.path.join(ckpt, "trainer.pt"), weights_only=False)
        opt.load_state_dict(trainer["optimizer"])
        set_rng_state(trainer["rng"][rank])
        start, before = state["step"], state["before"]
        log(f"resumed from {ckpt} at step {start}")

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and \
        args.dtype != "fp32" else torch.autocast("cpu", enabled=False)
    wandb = None
    if args.wandb and master:
        import wandb as _wandb
        wandb = _wandb
        wandb.init(project=args.wandb, config=vars(args))
    metrics_path = os.path.join(args.out, "metrics.jsonl")
    if master and os.path.exists(metrics_path):
        # a fresh run starts a fresh log; a resumed one drops lines written after its checkpoint
        with open(metrics_path) as f:
            keep = [l for l in f if args.resume and json.loads(l)["step"] <= start]
        with open(metrics_path + ".tmp", "w") as f:
            f.writelines(keep)
        os.replace(metrics_path + ".tmp", metrics_path)

    def write(line):
        if master:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(line) + "\n")
            if wandb:
                wandb.log(line, step=line["step"])

    def eval_line(step):
        accs = evaluate(model, tokenizer, evals, args, rank, world)
        line = {"step": step, "eval_acc": accs.get("eval")}
        line.update({f"eval_acc_{k}": v for k, v in accs.items() if k != "eval"})
        if args.method != "full" and master:
            g = geora.geometry_report(model)
            line.update(s_head=g["s_head"], rel_update=g["rel_update"])
        write(line)
        if master:  # tqdm.write keeps the progress bar intact
            tqdm.write("eval " + " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in line.items()))
        return line["eval_acc"]

    t_start, after = time.time(), None
    if start == 0 and evals:
        before = eval_line(0)
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, disable=not master,
               desc="grpo", dynamic_ncols=True)
    G = args.group_size
    for step in bar:
        # ---- rollouts: this rank's prompts, G samples each
        t0, c0 = time.time(), time.process_time()
        idx = prompt_indices(step, len(train_rows), args.prompts_per_step, args.seed)[rank::world]
        rows = [train_rows[i] for i in idx]
        prompts = [format_prompt(tokenizer, r["question"]) for r in rows]
        with autocast:
            roll = grpo.generate(model, tokenizer, prompts, n=G, temperature=args.temperature,
                                 max_new_tokens=args.max_new_tokens)
        gen_s = time.time() - t0
        results = [grade(text, rows[i // G]["gold"]) for i, text in enumerate(roll["texts"])]
        trunc = roll["truncated"].cpu()
        rewards = torch.tensor([0.0 if t else r.reward for r, t in zip(results, trunc.tolist())])
        no_answer = torch.tensor([1.0 if t or r.status == "no_answer" else 0.0
                                  for r, t in zip(results, trunc.tolist())])
        adv = grpo.group_advantages(rewards, G, scale=args.agg != "dr-grpo")       # (B,) B = prompts x G
        mask = roll["mask"]                                                          # (B, L)
        zero_std = (rewards.view(-1, G).std(1) == 0).float()

        # ---- normalisers of the whole step (all ranks), so micro-batching changes nothing
        sums = torch.tensor([mask.sum().item(), float(len(rewards))], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(sums)
        denom = {"token-mean": sums[0].item(), "seq-mean": sums[1].item(),
                 "dr-grpo": sums[1].item() * args.max_new_tokens}[args.agg]

        # ---- loss and gradient over micro-batches of the completions that carry signal
        t1 = time.time()
        need_ref = args.beta > 0 or args.method != "full" or args.log_kl
        rows_used = torch.arange(len(rewards)) if args.beta > 0 else torch.nonzero(adv != 0).flatten()
        acc = {"loss": 0.0, "kl": 0.0, "kl_max": 0.0, "entropy": 0.0, "clip": 0.0, "tok": 0.0}
        ids_all, attn_all, L_all = roll["input_ids"], roll["attention_mask"], roll["n_completion"]
        for i in range(0, len(rows_used), args.micro_batch):
            sel = rows_used[i:i + args.micro_batch].to(ids_all.device)
            m = mask[sel]                                                            # (b, L)
            L = int(m.sum(1).max())                      # drop completion columns past every EOS
            ids = ids_all[sel][:, :ids_all.shape[1] - L_all + L]
            attn = attn_all[sel][:, :ids.shape[1]]
            first = int(attn.any(0).nonzero()[0])        # drop left-padding columns shared by all rows
            ids, attn, m = ids[:, first:], attn[:, first:], m[:, :L]
            with autocast:
                logp, ent = grpo.token_logprobs(model, ids, attn, L, args.temperature)
                ref = None
                if need_ref:
                    with torch.no_grad():
                        if ref_model is not None:
                            ref = grpo.token_logprobs(ref_model, ids, attn, L, args.temperature)[0]
                        else:
                            with geora.adapters_disabled(model):
                                ref = grpo.token_logprobs(model, ids, attn, L, args.temperature)[0]
            loss, mt = grpo.grpo_loss(logp, logp.detach(), ref, adv[sel.cpu()].to(logp.device), m,
                                      args.clip_low, args.clip_high, args.beta, args.agg, denom)
            loss.backward()
            acc["loss"] += loss.item()
            acc["tok"] += mt["tokens"]
            acc["clip"] += mt["clip_frac"] * mt["tokens"]
            acc["entropy"] += float((ent * m).sum())
            if "kl" in mt:
                acc["kl"] += mt["kl"] * mt["tokens"]
                acc["kl_max"] = max(acc["kl_max"], mt["kl_max"])

        # ---- all-reduce gradients (sum: the loss is already normalised over all ranks)
        if world > 1:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            for p, g in zip(params, flat.split([p.numel() for p in params])):
                p.grad = g.view_as(p).clone()
        stats = torch.tensor([rewards.sum(), no_answer.sum(), float(len(rewards)), zero_std.sum(),
                              float(len(zero_std)), mask.sum().item(), float(trunc.sum()), acc["loss"],
                              acc["tok"], acc["clip"], acc["entropy"], acc["kl"]], dtype=torch.float64)
        kl_max = torch.tensor([acc["kl_max"]], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(stats)
            dist.all_reduce(kl_max, op=dist.ReduceOp.MAX)
        (r_sum, na_sum, n, zs, n_groups, n_tok, n_trunc, loss_sum, tok_used, clip_sum, ent_sum,
         kl_sum) = stats.tolist()
        if any(p.grad is not None for p in params):
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, args.grad_clip))
        else:
            grad_norm = 0.0
        if not (math.isfinite(loss_sum) and math.isfinite(grad_norm)):
            bar.close()
            msg = (f"stopping: non-finite loss/gradient at step {step + 1} (loss {loss_sum}, grad norm "
                   f"{grad_norm}); the last good checkpoint is "
                   f"{latest_checkpoint(args.out) if os.path.exists(os.path.join(args.out, 'latest')) else 'none'}"
                   f"; lower --lr or raise --grad-clip")
            log(msg)
            if world > 1:
                dist.destroy_process_group()
            raise SystemExit(msg)
        opt.step()
        opt.zero_grad(set_to_none=True)
        train_s = time.time() - t1

        line = {"step": step + 1, "reward": r_sum / n, "no_answer": na_sum / n,
                "kl": kl_sum / tok_used if tok_used and need_ref else None,
                "kl_max": kl_max.item() if tok_used and need_ref else None,
                "entropy": ent_sum / tok_used if tok_used else None, "response_len": n_tok / n,
                "truncated": n_trunc / n, "frac_zero_std": zs / n_groups, "grad_norm": grad_norm,
                "clip_frac": clip_sum / tok_used if tok_used else 0.0, "loss": loss_sum,
                "lr": args.lr, "gen_s": round(gen_s, 3), "train_s": round(train_s, 3),
                "cpu_s": round(time.process_time() - c0, 3),
                "tokens_per_s": round(n_tok / max(gen_s + train_s, 1e-9), 1)}
        write(line)
        bar.set_postfix(reward=f"{line['reward']:.3f}", zero_std=f"{line['frac_zero_std']:.2f}",
                        len=f"{line['response_len']:.1f}")

        done = step + 1
        if evals and (done % args.eval_every == 0 or done == args.steps):
            after = eval_line(done)
        if done % args.save_every == 0 or done == args.steps:
            rngs = [None] * world
            if world > 1:
                dist.all_gather_object(rngs, rng_state())
            else:
                rngs = [rng_state()]
            if master:
                save_checkpoint(args, model, opt, {"step": done, "cursor": done * args.prompts_per_step,
                                                   "before": before, "args": vars(args)}, rngs)
            if world > 1:
                dist.barrier()
    bar.close()

    # ---- final artefacts
    if master:
        if args.method != "full":
            geora.save_adapter(model, args.out)
            geora.export_peft(model, os.path.join(args.out, "peft"))
        if args.merge:
            merged = geora.merge(model) if args.method != "full" else model
            merged.save_pretrained(os.path.join(args.out, "merged"))
            tokenizer.save_pretrained(os.path.join(args.out, "merged"))
        minutes = (time.time() - t_start) / 60
        if before is not None and after is not None:
            log(f"held-out greedy accuracy: before {before:.1%} -> after {after:.1%} "
                f"({100 * (after - before):+.1f} points) in {minutes:.1f} min of GRPO, "
                f"{args.steps} steps; outputs in {args.out}")
    if wandb:
        wandb.finish()
    if world > 1:
        dist.destroy_process_group()
    return {"before": before, "after": after, "out": args.out, "model": model}


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:  # user errors: one clear line, no traceback
        sys.exit(f"error: {e}")
