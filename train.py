"""GRPO fine-tuning with a GeoRA adapter (or LoRA / PiSSA / MiLoRA / full fine-tuning), one flat script.

    python train.py                                   # offline tiny world, GeoRA, CPU (minutes)
    python train.py --model Qwen/Qwen2.5-1.5B --rank 16 --rho 0.2          # GSM8K, LLM defaults, one GPU
    python train.py --model Qwen/Qwen2.5-1.5B-Instruct --preset paper      # the paper's setting (second-hand)
    python train.py --model Qwen/Qwen2.5-Math-1.5B --dataset math --max-new-tokens 2048
    torchrun --nproc_per_node=4 train.py --model Qwen/Qwen2.5-1.5B         # several GPUs, model replicated
    torchrun --nproc_per_node=8 train.py --model Qwen/Qwen2.5-32B --fsdp   # several GPUs, model sharded
    python train.py --method pissa                     # a baseline, in out/tiny-pissa, at its own lr
    python train.py --resume                           # continue exactly from the last checkpoint in --out

The loop (main, then train_step): take the next --prompts-per-step prompts -> sample --group-size
completions each (rollout) -> reward -> group advantages -> GRPO loss over micro-batches
(accumulate_gradients) -> clip the gradient norm -> one AdamW step on the trainable parameters. Every
--eval-every steps (and before the first and after the last) greedy accuracy on a fixed held-out set and
geora.py's geometry report go to OUT/metrics.jsonl.

Outputs in --out: metrics.jsonl, ckpt-STEP/ (adapter or weights, optimizer, RNG states, data cursor;
OUT/latest names it), and at the end the adapter (geora_adapter.safetensors: eval.py --adapter OUT), a
PEFT LoRA in OUT/peft/ and, with --merge, a merged model in OUT/merged/.
Also config.json (every resolved setting, readable by --config), with --log-completions N
completions.jsonl, with --save-peft-every K peft-STEP/ exports, with --tensorboard tensorboard/;
--keep-checkpoints N keeps the last N ckpt-STEP/ (docs/training.md: every flag and metrics key).

Defaults: explicit flags > --preset > the world's defaults (DEFAULTS without --model: the tiny world of
tiny.py, shipped in tiny-base/, on one CPU thread; LLM_DEFAULTS with --model: GSM8K) > COMMON. The
learning rates per method and the paper preset's readings are written beside TINY_LR and PRESETS.

Choices, each explained where the code makes it:
- one optimizer step per batch of rollouts: the sampling policy is the updated one (ratio exactly 1);
- sampling is keyed (rollout): the same rollouts whatever the processes, --rollout-batch, engine or resume;
- truncated completions are no_answer (reward 0): no reward for rambling past the budget (rollout);
- zero-advantage completions are scored without autograd, for the metrics (accumulate_gradients);
- the loss is normalised over the whole step, all micro-batches and ranks (train_step);
- a step with no signal anywhere takes no optimizer step (train_step);
- the reference policy is the model under geora.adapters_disabled, exactly W (build_policy);
- weight decay pulls SVD-initialised adapters towards A0, B0, the initial policy (decay_adapters);
- dropout off: the policy scored in train mode must be the policy sampled in eval mode (build_policy);
- dr-grpo drops the std scaling of the advantages too (rollout);
- several processes: each takes its share of the prompts, one all-reduce of the gradients (train_step);
- resume is exact, across process counts too (save_checkpoint, load_trainer_state, RESUME_KEYS);
- memory is estimated before the model loads and picks --rollout-batch (plan_memory, memory.py);
- bf16 autocast on CUDA with the adapter branch in fp32; fp32 on CPU (setup, load_model);
- a fresh run into an --out with another run's checkpoints removes them (metrics_writer);
- rewards go through plugins.Reward (the built-in `math` is reward.grade); a reward function that raises or
  returns something invalid stops the run after checkpointing the completed steps (guarded);
- --config files become flags placed before the command line's, so an explicit flag wins (parse_args);
- scoring is packed into --micro-batch-tokens micro-batches, the reference pass every --kl-every steps at
  --beta 0 (accumulate_gradients, kl_step; docs/update.md);
- --fsdp: FSDP2 per decoder layer, then the root (the "sharding" section below).
"""

import argparse
import contextlib
import functools
import io
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
import memory
import plugins
import rollout as rollout_engine
from data import format_prompt, load_rows, load_tokenizer
from reward import grade

METHODS = ("geora", "lora", "pissa", "milora", "full")
# Learning rates when --lr is not given (constant). Tiny world: from sweeps at rank 16, alpha = rank (GeoRA stable
# from 3e-4 to 1e-3; PiSSA, whose adapter holds the top singular directions, collapsed at 5e-4 and needs 1e-4; full
# fine-tuning ~10x less than the adapters). Real models: GeoRA 1e-5, full fine-tuning 1e-6 (the usual full-RL rate,
# adapters ~10x it), the other methods in the tiny world's ratios to GeoRA: starting points, not tuned on a real
# model (no GPU was lent for that); compare.py sweeps around them.
TINY_LR = {"geora": 5e-4, "lora": 2e-3, "pissa": 1e-4, "milora": 5e-4, "full": 5e-5}
LLM_LR = {"geora": 1e-5, "lora": 4e-5, "pissa": 2e-6, "milora": 1e-5, "full": 1e-6}
DEFAULT_LR = TINY_LR  # the name compare.py's tiny sweep reads
TINY_OUT = "out/tiny-{method}"
DEFAULTS = dict(steps=100, prompts_per_step=16, max_new_tokens=48, micro_batch=128, eval_every=25,
                eval_size=200, save_every=25, gradient_checkpointing=False)
LLM_DEFAULTS = dict(steps=500, prompts_per_step=32, max_new_tokens=1024, micro_batch=8, eval_every=50,
                    eval_size=500, save_every=50, gradient_checkpointing=True)
# Flags that have a value whatever the world (None in the parser so a preset can tell "not given").
COMMON = dict(rank=16, rho=0.2, group_size=8, beta=0.0, clip_low=0.2, clip_high=0.2, temperature=1.0)
# --preset paper: the setting GeoRA's paper reports, as a public reproduction quotes its v4 appendix, i.e. as
# reported second-hand: rank 16, alpha 32 (scale 2), rho 0.2, all seven projections, AdamW, bf16, lr 1e-6, 8 rollouts
# per prompt, a global batch of 128, KL coefficient 0.001, prompts up to 1024 and responses up to 4096 tokens. Our
# readings where it is silent or ambiguous: 128 counts prompts (verl's train_batch_size: 1,024 completions per
# step); the KL term is k3 in the loss (verl's low_var_kl with use_kl_loss); temperature 1.0, clip 0.2 / 0.2,
# constant rate, token-mean aggregation, one update per batch of rollouts (verl's defaults); 200 steps (about 3.4
# epochs of GSM8K: the steps are not reported); gradient checkpointing on. Explicit flags override it.
PRESETS = {
    "paper": dict(rank=16, alpha=32.0, rho=0.2, lr=1e-6, group_size=8, prompts_per_step=128, beta=1e-3,
                  max_prompt_tokens=1024, max_new_tokens=4096, temperature=1.0, clip_low=0.2, clip_high=0.2,
                  steps=200, eval_every=20, save_every=20, gradient_checkpointing=True),
}
EVAL_SETS = {"gsm8k": ("gsm8k", "test"), "math": ("math500", "test"), "deepmath": ("math500", "test")}
HOLDOUT_SEED = 1234  # the --holdout draw is the same for every run


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = ap.add_argument
    a("--model", default=None, help="hub id or local path (default: the offline tiny world)")
    a("--preset", default=None, choices=sorted(PRESETS), help="a named setting; explicit flags override it")
    a("--method", default="geora", choices=METHODS)
    a("--init", default=None, help="GeoRA ablation: geora-random | geora-tail (default: --method)")
    a("--mask", default="union", choices=geora.MASKS, help="GeoRA mask ablation")
    a("--rank", type=int, default=None, help=f"adapter rank (default {COMMON['rank']})")
    a("--rho", type=float, default=None, help=f"GeoRA sparsity (default {COMMON['rho']})")
    a("--alpha", type=float, default=None, help="adapter scale alpha / rank (default alpha = rank)")
    a("--svd", default="full", choices=geora.SVDS, help="full, or lowrank (randomized, seeded) for big models")
    a("--dataset", default=None, help="gsm8k | math | deepmath | tiny | PATH.jsonl (default: tiny without "
                                      "--model, gsm8k with it)")
    a("--data-dir", default=None, help="local DIR/<name>/<split>.jsonl copies instead of the hub")
    a("--question-key", default=None)
    a("--answer-key", default=None)
    a("--eval-dataset", default=None, help="held-out set (default: tiny test / gsm8k test / math500; "
                                           "the --holdout rows when --holdout > 0)")
    a("--holdout", type=int, default=0, help="training rows kept out of training as the eval set")
    a("--max-prompt-tokens", type=int, default=None, help="drop longer prompts (default: the model's "
                                                          "context minus --max-new-tokens)")
    a("--steps", type=int, default=None)
    a("--prompts-per-step", type=int, default=None, help="prompts per step over all processes")
    a("--group-size", type=int, default=None, help=f"completions per prompt (default {COMMON['group_size']})")
    a("--lr", type=float, default=None, help=f"default per method: tiny {TINY_LR}, LLM {LLM_LR}")
    a("--weight-decay", type=float, default=0.0, help="towards the initial adapter for SVD inits")
    a("--beta", type=float, default=None, help="KL penalty to the initial policy (k3; default 0)")
    a("--log-kl", action="store_true", help="full fine-tuning: keep a frozen copy of the initial "
      "model to log the KL at --beta 0 too (adapter methods always log it, with no copy)")
    a("--clip-low", type=float, default=None, help="default 0.2")
    a("--clip-high", type=float, default=None, help="default 0.2")
    a("--agg", default="token-mean", choices=("token-mean", "seq-mean", "dr-grpo"))
    a("--temperature", type=float, default=None, help="sampling temperature (default 1.0)")
    a("--max-new-tokens", type=int, default=None)
    a("--micro-batch", type=int, default=None, help="completions per forward/backward (padded scoring, used "
      "when --micro-batch-tokens is 0)")
    a("--micro-batch-tokens", type=int, default=None, help="packed scoring: micro-batches of up to N real tokens, "
      "no padding computed (default: --micro-batch rows at the longest length, the memory estimate's micro-batch; "
      "0: padded micro-batches of --micro-batch rows)")
    a("--kl-every", type=int, default=None, help="with --beta 0, run the reference pass for the logged kl every K "
      "steps (and on the last); default the eval interval; 1: every step. --beta > 0 needs it every step")
    a("--rollout-engine", choices=("eager", "compiled"), default=None,
      help="compiled: rollout.py's static-cache decode loop, compiled (default on CUDA); eager: grpo.generate, "
           "model.generate underneath (default on CPU, where compiling costs more than it saves)")
    a("--rollout-batch", type=int, default=None, help="completions per generate call (default: the largest "
                                                      "chunk the memory estimate fits)")
    a("--grad-clip", type=float, default=1.0)
    a("--eval-every", type=int, default=None)
    a("--eval-size", type=int, default=None, help="held-out prompts per evaluation (0: no evaluation)")
    a("--save-every", type=int, default=None)
    a("--out", default=None, help="output dir (default out/tiny-METHOD, or out/run-METHOD with --model)")
    a("--resume", action="store_true", help="continue from OUT/latest")
    a("--seed", type=int, default=0)
    a("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    a("--dtype", default="auto", choices=("auto", "bf16", "fp32"))
    a("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
      help="recompute activations in backward (default: on with --model, off in the tiny world)")
    a("--fsdp", action="store_true", help="shard the model over the torchrun processes (FSDP2)")
    a("--merge", action="store_true", help="also save the merged model to OUT/merged")
    a("--wandb", default=None, metavar="PROJECT", help="log to Weights & Biases (optional)")
    a("--wandb-name", default=None, help="W&B run name (default: W&B's own)")
    a("--wandb-entity", default=None, help="W&B entity (team or user)")
    a("--tensorboard", action="store_true", help="also write TensorBoard scalars to OUT/tensorboard")
    # issue 20: rewards, logs, configs, checkpoints, prompts (docs/training.md)
    a("--config", default=None, metavar="FILE", help="YAML or JSON of flags (keys as in --help, - or _); "
                                                     "explicit flags win")
    a("--reward", default=None, metavar="MODULE:FUNCTION",
      help="reward function(s), comma-separated: a dotted module or a .py path, ':', the function; 'math' is "
           "the built-in (default: reward.grade on the gold)")
    a("--reward-weights", default=None, help="comma-separated weights, one per --reward function (default 1 each)")
    a("--log-completions", type=int, default=0, metavar="N", help="N sampled completions per step to "
                                                                  "OUT/completions.jsonl (and a W&B table)")
    a("--keep-checkpoints", type=int, default=1, metavar="N", help="keep the last N ckpt-STEP directories")
    a("--save-peft-every", type=int, default=0, metavar="K",
      help="every K steps write a PEFT export to OUT/peft-STEP (eval.py --adapter reads it; 0: only the final)")
    a("--system-prompt", default=None, help="a system turn before every prompt (default none: the chat "
                                            "template's own default, if any, applies)")
    a("--no-chat-template", dest="chat_template", action="store_false",
      help="plain 'Question: ... Answer:' prompts even when the tokenizer has a chat template (base models)")
    argv = sys.argv[1:] if argv is None else list(argv)
    config = _config_flag(argv)
    if config is not None:  # the file's flags first, so every explicit flag (a later occurrence) wins
        argv = config_argv(ap, read_config(config)) + argv
    args = ap.parse_args(argv)
    resolve_defaults(args)
    check_args(args)
    return args


def _config_flag(argv):
    """The value of --config in argv (None without one); argparse's own parse comes later."""
    for i, t in enumerate(argv):
        if t == "--config":
            if i + 1 >= len(argv):
                raise ValueError("--config needs a FILE (YAML or JSON)")
            return argv[i + 1]
        if t.startswith("--config="):
            return t.split("=", 1)[1]
    return None


def read_config(path):
    """A --config file as {flag_name_with_underscores: value}. YAML (.yaml / .yml) or JSON (anything else)."""
    if not os.path.isfile(path):
        raise ValueError(f"--config {path}: no such file")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml   # PyYAML: a transformers dependency, so always present beside it
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:
        raise ValueError(f"--config {path} could not be parsed: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of flag names to values, got {type(data).__name__}")
    return {str(k).lstrip("-").replace("-", "_"): v for k, v in data.items()}


def config_argv(ap, config, source="--config"):
    """Config values as command-line tokens, so argparse checks types and choices exactly as for flags
    (and a later explicit flag wins, being parsed after). An unknown key is an error naming it."""
    actions = {a.dest: a for a in ap._actions if a.option_strings}
    out = []
    for key, value in config.items():
        act = actions.get(key)
        if act is None or key in ("config", "help"):
            import difflib
            near = difflib.get_close_matches(key, actions, n=1)
            raise ValueError(f"{source}: unknown key {key!r}; it is not a train.py flag"
                             + (f" (did you mean {near[0]!r}?)" if near else "") + "; see train.py --help")
        flag = next((o for o in act.option_strings if o.startswith("--") and not o.startswith("--no-")),
                    act.option_strings[-1])
        if value is None:
            continue
        if isinstance(act, argparse.BooleanOptionalAction):
            out.append(flag if value else "--no-" + flag[2:])
        elif isinstance(act, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                raise ValueError(f"{source}: {key} takes true or false, got {value!r}")
            if value == isinstance(act, argparse._StoreTrueAction):  # store_false (--no-chat-template): false sets it
                out.append(flag)
        else:
            if isinstance(value, (list, tuple)):
                value = ",".join(str(v) for v in value)   # --reward / --reward-weights as YAML lists
            elif isinstance(value, bool):
                raise ValueError(f"{source}: {key} takes a value, got {value!r}")
            out += [flag, str(value)]
    return out


def resolve_defaults(args):
    """Fill every flag left unset: preset, then the world's defaults (tiny or LLM), then COMMON."""
    if args.dataset is None:
        args.dataset = "tiny" if args.model is None else "gsm8k"
    tiny_world = args.model is None or args.dataset == "tiny"
    layers = [PRESETS[args.preset] if args.preset else {}, DEFAULTS if tiny_world else LLM_DEFAULTS, COMMON]
    for layer in layers:
        for k, v in layer.items():
            if getattr(args, k) is None:
                setattr(args, k, v)
    if args.kl_every is None:
        args.kl_every = args.eval_every
    if args.rollout_engine is None:
        args.rollout_engine = "compiled" if torch.cuda.is_available() and args.device != "cpu" else "eager"
    if args.lr is None:
        args.lr = (TINY_LR if tiny_world else LLM_LR)[args.method]
    if args.init is None:
        args.init = args.method
    if args.out is None:
        name = args.method if args.init == args.method else args.init
        args.out = TINY_OUT.format(method=name) if args.model is None else f"out/run-{name}"


def check_args(args):
    if args.method == "full" and args.init != "full":
        raise ValueError("--init applies to adapter methods; drop it with --method full")
    if args.method != "full" and args.init not in geora.INITS:
        raise ValueError(f"--init must be one of {geora.INITS}")
    if args.group_size < 2:
        raise ValueError("--group-size must be >= 2: GRPO compares completions of the same prompt")
    for k in ("steps", "prompts_per_step", "max_new_tokens", "micro_batch", "eval_every", "save_every", "rank"):
        if getattr(args, k) < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be >= 1")
    if args.kl_every < 1 or (args.micro_batch_tokens is not None and args.micro_batch_tokens < 0):
        raise ValueError("--kl-every must be >= 1 and --micro-batch-tokens >= 0")
    for k in ("rollout_batch", "max_prompt_tokens"):
        if getattr(args, k) is not None and getattr(args, k) < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be >= 1")
    if args.holdout and args.dataset == "tiny":
        raise ValueError("--holdout applies to real datasets (the tiny world has its own held-out splits)")
    if args.holdout < 0 or args.weight_decay < 0 or args.beta < 0 or args.eval_size < 0:
        raise ValueError("--holdout, --weight-decay, --beta and --eval-size must be >= 0")
    if not args.lr > 0 or args.temperature <= 0:
        raise ValueError("--lr and --temperature must be > 0")
    if args.log_completions < 0 or args.keep_checkpoints < 1 or args.save_peft_every < 0:
        raise ValueError("--log-completions and --save-peft-every must be >= 0, --keep-checkpoints >= 1")
    if args.save_peft_every and args.method == "full":
        raise ValueError("--save-peft-every exports adapters; full fine-tuning has none (use --merge, or "
                         "--keep-checkpoints N to keep the weights of several steps)")
    reward_of(args)   # a bad --reward / --reward-weights fails here, before any model loads


@functools.lru_cache(maxsize=4)
def _load_reward(specs, weights):
    return plugins.load_reward(specs, weights)


def reward_of(args):
    """The run's reward (plugins.Reward), loaded once per setting."""
    specs, weights = args.reward, args.reward_weights
    return _load_reward(specs if specs is None else ",".join(plugins.split_specs(specs)), weights)


def prompt_of(tokenizer, row, args):
    """The prompt of a row with this run's --system-prompt / --no-chat-template."""
    return format_prompt(tokenizer, row["question"], getattr(args, "system_prompt", None),
                         getattr(args, "chat_template", True))


# ----------------------------------------------------------------------------- setup

def setup_distributed(args):
    """(rank, world, device). torchrun sets RANK/WORLD_SIZE; a plain run is rank 0 of 1."""
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = torch.device(args.device)
    if device.type == "cuda" and (world > 1 or args.fsdp):
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    owned = False
    if (world > 1 or args.fsdp) and not dist.is_initialized():  # a caller's group is reused, not torn down
        if "MASTER_ADDR" not in os.environ:  # `python train.py --fsdp`: a group of one on this machine
            import socket
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(sock.getsockname()[1]))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
        owned = True
    return rank, world, device, owned


def model_path(args, rank, world):
    """--model, or the tiny world's base (built by rank 0 on first use, then cached)."""
    if args.model is not None:
        return args.model
    import tiny
    if rank == 0:
        tiny.build_tiny()
    if world > 1:
        dist.barrier()
    return tiny.TINY_BASE


def load_tokenizer_and_config(path):
    from transformers import AutoConfig
    try:
        tokenizer = load_tokenizer(path)  # as eval.py: guards a transformers 5 tokenizer swap
        config = AutoConfig.from_pretrained(path)
    except OSError as e:
        raise ValueError(f"could not load --model {path!r} ({e}); pass a local directory "
                         f"(save_pretrained layout) or a reachable hub id") from e
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, config


def load_model(path, args, device):
    from transformers import AutoModelForCausalLM
    dtype = args.dtype
    if dtype == "auto":  # full fine-tuning keeps fp32 master weights (and trains under autocast)
        dtype = "bf16" if device.type == "cuda" and args.method != "full" else "fp32"
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.config.use_cache = True
    return model.to(device)


def load_data(args, tokenizer, context, quiet=False):
    """(train rows, {name: held-out rows}). Prompts longer than --max-prompt-tokens (default: the preset's, else
    the context minus --max-new-tokens) are dropped here and counted, never truncated; too few left is an error
    naming the flag. --holdout N keeps a fixed draw of N training rows (the same for every seed and method) out of
    training as the eval set: compare.py's selection split. The tiny world adds its two out-of-domain families."""
    say = (lambda *a: None) if quiet else print
    if args.max_prompt_tokens is None:
        args.max_prompt_tokens = context - args.max_new_tokens
        if args.max_prompt_tokens < 1:
            raise ValueError(f"--max-new-tokens {args.max_new_tokens} leaves no room for a prompt in the "
                             f"model's {context}-token context: lower --max-new-tokens")
    if args.max_prompt_tokens + args.max_new_tokens > context:  # (a preset's or your own): past it RoPE extrapolates
        raise ValueError(f"--max-prompt-tokens {args.max_prompt_tokens} + --max-new-tokens {args.max_new_tokens} "
                         f"exceed the model's {context}-token context"
                         + (f" (--preset {args.preset} sets both unless given)" if args.preset else "")
                         + ": lower --max-prompt-tokens or --max-new-tokens")
    if args.dataset == "tiny":
        import tiny
        train = tiny.tiny_rows("train", seed=args.seed)
        evals = {"eval": tiny.tiny_rows("test", args.eval_size)}
        for fam in tiny.FAMILIES[1:]:
            evals[f"tiny-{fam}"] = tiny.tiny_rows("test", args.eval_size, family=fam)
    else:
        # a plug-in reward reads every column and may need no gold; the built-in one needs the gold only
        plug = dict(keep_columns=True, require_gold=False) if not reward_of(args).is_builtin else {}
        with _quiet(quiet):
            train = load_rows(args.dataset, "train", data_dir=args.data_dir, question_key=args.question_key,
                              answer_key=args.answer_key, **plug)
        evals = {}
        if args.holdout:
            if args.holdout >= len(train):
                raise ValueError(f"--holdout {args.holdout} leaves no training rows (the set has {len(train)})")
            perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(HOLDOUT_SEED)).tolist()
            keep = set(perm[args.holdout:])
            evals["eval"] = [train[i] for i in sorted(perm[:args.holdout])][:args.eval_size]
            train = [r for i, r in enumerate(train) if i in keep]
        name, split = (args.eval_dataset, "test") if args.eval_dataset else EVAL_SETS.get(args.dataset, (None, None))
        if name is not None and args.eval_size and not (args.holdout and not args.eval_dataset):
            with _quiet(quiet):
                evals["eval"] = load_rows(name, split, data_dir=args.data_dir, limit=args.eval_size, **plug)
        if "eval" not in evals and args.eval_size:
            say("no held-out set for this dataset: pass --eval-dataset NAME|PATH.jsonl (or --holdout N) "
                "to get eval_acc")
    if args.eval_size == 0:
        evals = {}
    train, dropped = _fitting(train, tokenizer, args.max_prompt_tokens, args)
    say(f"data: {args.dataset}: {len(train)} training prompts" + (f" ({args.holdout} held out)" if args.holdout else "")
        + f", {dropped} dropped as longer than --max-prompt-tokens {args.max_prompt_tokens}")
    if len(train) < args.prompts_per_step:
        raise ValueError(f"{len(train)} usable training prompts, fewer than --prompts-per-step "
                         f"{args.prompts_per_step}: raise --max-prompt-tokens ({args.max_prompt_tokens}) "
                         f"or lower --prompts-per-step")
    for name in list(evals):
        evals[name], dropped = _fitting(evals[name], tokenizer, args.max_prompt_tokens, args)
        if dropped:
            say(f"data: held-out {name}: {dropped} prompts dropped as longer than --max-prompt-tokens")
        if not evals[name]:
            say(f"data: held-out {name} is empty: not evaluated")
            del evals[name]
    return train, evals


def _fitting(rows, tokenizer, limit, args=None):
    """(rows whose formatted prompt has <= limit tokens, number dropped)."""
    ids = tokenizer([prompt_of(tokenizer, r, args) for r in rows], add_special_tokens=False)["input_ids"]
    keep = [r for r, t in zip(rows, ids) if len(t) <= limit]
    return keep, len(rows) - len(keep)


@contextlib.contextmanager
def _quiet(quiet):
    if not quiet:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


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


def build_policy(args, model, ckpt, device, log):
    """Adapters (or all weights) trainable, everything else frozen; a frozen reference copy for full
    fine-tuning when one is needed. Returns (reference model or None: adapters_disabled serves, init s)."""
    t0 = time.time()
    ref_model = None
    if args.method == "full":
        if args.beta > 0 or args.log_kl:  # the initial policy, copied before a resume loads weights
            import copy
            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        if ckpt and not args.fsdp:        # (a sharded run loads its checkpoint after sharding)
            from safetensors.torch import load_file
            model.load_state_dict(load_file(os.path.join(ckpt, "model.safetensors"), device=str(device)),
                                  strict=False)
        model.requires_grad_(True)
        log(f"full fine-tuning: {sum(p.numel() for p in model.parameters()):,} trainable parameters")
    elif ckpt:
        geora.load_adapter(model, os.path.join(ckpt, "adapter"))
    else:
        rep = geora.apply_geora(model, rank=args.rank, rho=args.rho, alpha=args.alpha, init=args.init,
                                mask=args.mask, svd=args.svd, seed=args.seed)
        log(f"{args.init} adapters: {rep['modules']} modules, {rep['trainable']:,} trainable parameters, "
            f"{rep['seconds']:.1f} s init")
    for m in model.modules():  # the policy scored in train mode must be the one sampled in eval mode: no dropout
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0
    if args.gradient_checkpointing:  # (renamed in transformers 5.2x; the old name still works, with a warning)
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return ref_model, time.time() - t0


def decay_adapters(model, factor):
    """Decoupled weight decay for adapters: A <- A - factor (A - A0) (towards the initial policy) for
    SVD inits, towards zero for LoRA (whose B = 0 is the initial policy)."""
    with torch.no_grad():
        for _, m in geora.adapted(model):
            m.A.sub_(factor * (m.A - m.A0) if m.A0 is not None else factor * m.A)
            m.B.sub_(factor * (m.B - m.B0) if m.B0 is not None else factor * m.B)


# ----------------------------------------------------------------------------- sharding (FSDP2)
# --fsdp: every decoder layer, then the root, is a fully_shard unit. Full fine-tuning: fp32 master
# shards, bf16 compute on CUDA (MixedPrecisionPolicy), gradients reduce-scattered; the loss is scaled
# by the world size because FSDP averages over processes and our loss is already normalised over all
# of them (a sum is wanted). Adapter methods: the frozen base (bf16 on CUDA) is sharded with no
# mixed-precision policy, and A, B are ignored_params: plain fp32 tensors replicated on every process,
# never cast, all-reduced by us as without --fsdp; A0, B0 are buffers, which FSDP leaves alone. So
# geora.py's fp32 adapter branch and adapters_disabled (exactly W) are untouched by sharding.
# Rollouts: when the whole bf16 model fits beside the KV cache (memory.estimate decides) every unit
# keeps its parameters gathered after its first forward (set_reshard_after_forward(False)), so
# decoding pays no all-gather per token and ranks may stop at different lengths; otherwise units
# reshard after each forward and generate runs with synced_gpus (ranks step together to the end).
# reshard() before every optimizer step and after every rollout: a unit left gathered would compute
# with its pre-step weights.

def fsdp_modules(model):
    from torch.distributed.fsdp import FSDPModule
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def shard(model, args, device):
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    adapters = {p for p in model.parameters() if p.requires_grad} if args.method != "full" else set()
    mp = MixedPrecisionPolicy()
    if args.method == "full" and device.type == "cuda" and args.dtype != "fp32":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in model.get_decoder().layers:
        fully_shard(layer, mp_policy=mp, ignored_params=adapters & set(layer.parameters()) or None)
    fully_shard(model, mp_policy=mp, ignored_params=adapters or None)
    if not any(p.requires_grad for p in model.parameters()):  # full FT's frozen reference: no backward, where FSDP's
        model.set_reshard_after_forward(True, recurse=False)  # root reshards by default, so its root would stay whole
    return model


def reshard(model):
    for m in fsdp_modules(model):
        m.reshard()


@contextlib.contextmanager
def rollout_mode(model, rt):
    """Around every generate call: FSDP units stay gathered (unsharded rollouts) or not; resharded after."""
    mods = fsdp_modules(model) if rt.fsdp_generate == "unsharded" else []
    for m in mods:
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for m in mods:
            m.set_reshard_after_forward(m is not model, recurse=False)  # the root's default is False
        reshard(model)


def _dcp():
    """torch.distributed.checkpoint and the state dicts it saves and loads: the optimizer's only once AdamW has stepped.
    get_state_dict gives an optimizer without state one (an AdamW step at lr 0: count 1, so the next real step would
    use the second step's bias correction, unlike the same run without --fsdp)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict, set_model_state_dict, \
        set_state_dict

    def get(model, opt, stepped):
        if not stepped:
            return {"model": get_model_state_dict(model)}
        return dict(zip(("model", "optim"), get_state_dict(model, opt)))

    def put(model, opt, state):
        if "optim" in state:
            set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        else:
            set_model_state_dict(model, state["model"])
    return dcp, get, put


# ----------------------------------------------------------------------------- checkpoints

def rng_state():
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}  # this process's GPU


def set_rng_state(s):
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    if isinstance(s["cuda"], torch.Tensor) and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])


def save_checkpoint(args, model, opt, state, rt):
    """OUT/ckpt-STEP written in a temp dir and renamed; then OUT/latest (renamed too) points at it;
    then checkpoints older than the last --keep-checkpoints go. A crash at any point leaves the previous
    checkpoint loadable. Called by
    every process: sharded full fine-tuning writes its shards with torch.distributed.checkpoint."""
    rngs = [None] * rt.world
    if rt.world > 1:
        dist.all_gather_object(rngs, rng_state())
    else:
        rngs = [rng_state()]
    name = f"ckpt-{state['step']:06d}"
    tmp = os.path.join(args.out, f".tmp-{name}")
    if rt.master:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    sharded = args.fsdp and args.method == "full"
    if sharded:
        dist.barrier()
        dcp, get, _ = _dcp()
        dcp.save(get(model, opt, bool(opt.state)), checkpoint_id=os.path.join(tmp, "dcp"))
    if rt.master:
        if sharded:
            pass
        elif args.method == "full":
            from safetensors.torch import save_file
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                       if not k.endswith("lm_head.weight") or not model.config.tie_word_embeddings},
                      os.path.join(tmp, "model.safetensors"))
        else:
            geora.save_adapter(model, os.path.join(tmp, "adapter"))
        torch.save({"optimizer": None if sharded else opt.state_dict(), "rng": rngs, "stepped": bool(opt.state)},
                   os.path.join(tmp, "trainer.pt"))
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump(state, f, indent=1)
        final = os.path.join(args.out, name)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        with open(os.path.join(args.out, ".latest.tmp"), "w") as f:
            f.write(name)
        os.replace(os.path.join(args.out, ".latest.tmp"), os.path.join(args.out, "latest"))
        ckpts = sorted(d for d in os.listdir(args.out) if d.startswith("ckpt-") and d != name)  # zero-padded steps
        keep = max(getattr(args, "keep_checkpoints", 1), 1) - 1
        for old in ckpts[:len(ckpts) - keep]:
            shutil.rmtree(os.path.join(args.out, old), ignore_errors=True)
    if rt.world > 1:
        dist.barrier()


def save_peft_step(args, model, step, rt):
    """OUT/peft-STEP: a PEFT LoRA export of the adapter after `step` steps (eval.py --adapter reads it), written
    in a temp dir and renamed; never pruned (a few MB each), so the best step can be picked afterwards."""
    if not rt.master:
        return
    final = os.path.join(args.out, f"peft-{step:06d}")
    tmp = os.path.join(args.out, f".tmp-peft-{step:06d}")
    shutil.rmtree(tmp, ignore_errors=True)
    geora.export_peft(model, tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def load_trainer_state(args, model, opt, ckpt, rt, log):
    """Optimizer (and, sharded, the weights) and RNG states of a checkpoint. Resume is exact: the data order is a
    seeded permutation per epoch, sampling is keyed, and the saved RNG states are restored when the number of
    processes matches (with another number the run continues the same: sampling never reads the global RNG)."""
    trainer = torch.load(os.path.join(ckpt, "trainer.pt"), weights_only=False)
    if trainer["optimizer"] is None:  # sharded full fine-tuning: weights and AdamW state in DCP shards
        dcp, get, put = _dcp()
        state = get(model, opt, trainer.get("stepped", True))
        dcp.load(state, checkpoint_id=os.path.join(ckpt, "dcp"))
        put(model, opt, state)
    else:
        opt.load_state_dict(trainer["optimizer"])
    for group in opt.param_groups:  # a restored group carries the old run's rate: this run's flags win
        if (group["lr"], group["weight_decay"]) != (args.lr, opt.defaults["weight_decay"]):
            log(f"resume: lr {group['lr']:g} -> {args.lr:g}, weight decay {group['weight_decay']:g} -> "
                f"{opt.defaults['weight_decay']:g}")
        group["lr"], group["weight_decay"] = args.lr, opt.defaults["weight_decay"]
    saved = len(trainer["rng"])
    if saved == rt.world:
        set_rng_state(trainer["rng"][rt.rank])
    else:
        log(f"checkpoint written by {saved} processes, now {rt.world}: sampling is keyed, so the run "
            f"continues the same; the other RNG streams start afresh")


def latest_checkpoint(out):
    path = os.path.join(out, "latest")
    if not os.path.exists(path):
        raise ValueError(f"--resume: no checkpoint in {out!r} (no {path}); drop --resume or fix --out")
    with open(path) as f:
        return os.path.join(out, f.read().strip())


# Settings that define a run (the model, the data, the rollouts and the objective): a resume that changes one is
# refused. --steps, --lr, --weight-decay, --grad-clip, --eval-* and --save-every may change (the stop message after a
# non-finite loss advises a lower --lr): load_trainer_state puts the new rate and decay into AdamW's restored groups.
RESUME_KEYS = ("model", "method", "init", "mask", "rank", "rho", "alpha", "dataset", "question_key", "answer_key",
               "seed", "prompts_per_step", "group_size", "holdout", "beta", "clip_low", "clip_high", "agg",
               "temperature", "max_new_tokens", "reward", "reward_weights", "system_prompt", "chat_template")


def read_checkpoint_state(args):
    """(checkpoint dir, its state.json) for --resume; refuses changed settings that define the run."""
    ckpt = latest_checkpoint(args.out)
    with open(os.path.join(ckpt, "state.json")) as f:
        state = json.load(f)
    for k in RESUME_KEYS:
        if state["args"].get(k, getattr(args, k)) != getattr(args, k):
            raise ValueError(f"--resume: --{k.replace('_', '-')} was {state['args'][k]!r} in the "
                             f"checkpoint, now {getattr(args, k)!r}; resume with the same settings")
    if state["args"].get("fsdp", False) != args.fsdp and args.method == "full":
        raise ValueError(f"--resume: this full fine-tuning checkpoint was written "
                         f"{'with' if args.fsdp is False else 'without'} --fsdp; resume the same way")
    return ckpt, state


def save_final(args, model, tokenizer, path, rt):
    """The adapter, its PEFT export and, with --merge, a merged model (save_pretrained). Under FSDP the
    merged adapter model is rebuilt on the CPU of rank 0 from the base and the saved adapter (exact: the
    base is frozen), and full fine-tuning's weights are gathered there."""
    if rt.master and args.method != "full":
        geora.save_adapter(model, args.out)
        geora.export_peft(model, os.path.join(args.out, "peft"))
    if not args.merge:
        return
    merged_dir = os.path.join(args.out, "merged")
    if not args.fsdp:
        if rt.master:
            merged = geora.merge(model) if args.method != "full" else model
            merged.save_pretrained(merged_dir)
            tokenizer.save_pretrained(merged_dir)
        return
    from transformers import AutoModelForCausalLM
    if args.method == "full":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rt.master:
            with torch.device("meta"):
                cpu_model = AutoModelForCausalLM.from_config(model.config)
            cpu_model.load_state_dict(full, assign=True, strict=False)
            cpu_model.tie_weights()
            cpu_model.save_pretrained(merged_dir)
    elif rt.master:
        base = AutoModelForCausalLM.from_pretrained(path, dtype=next(model.parameters()).dtype)
        geora.merge(geora.load_adapter(base, args.out)).save_pretrained(merged_dir)
    if rt.master:
        tokenizer.save_pretrained(merged_dir)
    if rt.world > 1:
        dist.barrier()


# ----------------------------------------------------------------------------- evaluation

def eval_batch(args):
    """Held-out prompts per generate call: the rollout chunk (the estimate sized it), 256 in the tiny world."""
    return 256 if args.dataset == "tiny" else args.rollout_batch


def evaluate(model, tokenizer, evals, args, rt):
    """Greedy accuracy on each held-out set, prompts sharded over ranks. {name: accuracy}.
    --rollout-batch prompts per generate call (plan_memory sized it with the held-out prompts counted).
    Under FSDP every rank pads its share to the same length: generate calls are collective there."""
    out = {}
    for name, rows in evals.items():
        mine = rows[rt.rank::rt.world]
        count = len(mine)
        if args.fsdp:
            mine = mine + [rows[0]] * (-(-len(rows) // rt.world) - len(mine))
        prompts = [prompt_of(tokenizer, r, args) for r in mine]
        fn, failed = reward_of(args), []
        if fn.is_builtin:   # reward.grade on the gold, exactly as before plug-ins existed
            golds, judge = [r["gold"] for r in mine], grade
        else:               # a plug-in judges one (completion, row) at a time: grpo.evaluate's interface

            def judge(text, row):
                if not failed:  # a failure is kept, not raised: under FSDP the other ranks are in generate
                    try:
                        return argparse.Namespace(reward=float(fn.passed(fn([text], [row])[0])))
                    except plugins.RewardError as e:
                        failed.append(e)
                return argparse.Namespace(reward=0.0)
            golds = mine
        with rt.autocast, rollout_mode(model, rt), geora.frozen_factors(model):
            acc, _ = grpo.evaluate(model, tokenizer, prompts, golds, judge,
                                   max_new_tokens=args.max_new_tokens, count=count,
                                   batch_size=eval_batch(args),
                                   synced_gpus=rt.synced_gpus, generate=sampler(args))
        counts = torch.tensor([acc * count, count, float(bool(failed))], dtype=torch.float64)
        if rt.world > 1:
            dist.all_reduce(counts)
        if counts[2]:
            raise failed[0] if failed else plugins.RewardError("the reward function failed on another process "
                                                               "(its message is in that process's output)")
        out[name] = float(counts[0] / counts[1])
    return out


# ----------------------------------------------------------------------------- one GRPO step

def sampler(args):
    """The generate function of --rollout-engine: both take grpo.generate's arguments and give its result."""
    return rollout_engine.generate if args.rollout_engine == "compiled" else grpo.generate


def rollout(model, tokenizer, train_rows, args, step, rt):
    """This rank's share of the step's prompts, G keyed samples each, graded. Returns a dict with
    the grpo.generate output plus rewards, no_answer, advantages (all (B,) on CPU).

    Completion g of the step's prompt i draws from grpo.sample_key(seed, step, i * G + g), so a step's rollouts
    are the same whatever the number of processes, --rollout-batch, --rollout-engine or a resume in between
    (in fp32; bf16 kernels of other shapes can round a draw differently). A truncated completion (no EOS within
    --max-new-tokens) is no_answer with reward 0, so rambling past the budget earns nothing. dr-grpo drops the
    std scaling of the advantages (Dr. GRPO's second change, beside its loss normaliser)."""
    G = args.group_size
    idx = prompt_indices(step, len(train_rows), args.prompts_per_step, args.seed)
    mine = list(range(rt.rank, len(idx), rt.world))                 # positions in the global step batch
    rows = [train_rows[idx[j]] for j in mine]
    prompts = [prompt_of(tokenizer, r, args) for r in rows]
    keys = [grpo.sample_key(args.seed, step, j * G + g) for j in mine for g in range(G)]
    with rt.autocast, rollout_mode(model, rt), geora.frozen_factors(model):
        stats = {"stats": {}} if args.rollout_engine == "compiled" else {}   # compile time of shapes met now
        roll = sampler(args)(model, tokenizer, prompts, n=G, temperature=args.temperature,
                             max_new_tokens=args.max_new_tokens, keys=keys, batch_size=args.rollout_batch,
                             synced_gpus=rt.synced_gpus, **stats)
    roll["compile_s"] = stats["stats"].get("compile_s", 0.0) if stats else 0.0
    trunc = roll["truncated"].cpu().tolist()
    fn, error = reward_of(args), None
    try:  # truncated completions score 0 / no_answer without a call (plugins.py)
        scores = fn(roll["texts"], [rows[i // G] for i in range(len(roll["texts"]))], truncated=trunc)
    except plugins.RewardError as e:
        error, scores = e, None
    if rt.world > 1:  # every rank stops together, before any collective of the step (none would return)
        flag = torch.tensor([float(error is not None)], device=rt.device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and error is None:
            error = plugins.RewardError("the reward function failed on another process (its message is in that "
                                        "process's output)")
    if error is not None:
        raise error
    roll["rewards"] = torch.tensor([sc.reward for sc in scores], dtype=torch.float32)
    roll["no_answer"] = torch.tensor([1.0 if sc.status == "no_answer" else 0.0 for sc in scores])
    roll["status"] = [sc.status for sc in scores]
    roll["parts"] = torch.tensor([sc.parts for sc in scores], dtype=torch.float64).view(len(scores), -1)
    roll["rows"], roll["prompts"] = rows, prompts
    roll["adv"] = grpo.group_advantages(roll["rewards"], G, scale=args.agg != "dr-grpo")   # (B,) B = prompts x G
    return roll


def kl_step(args, step):
    """Whether step (0-based) runs the reference pass: every step with --beta > 0 (the loss needs it); at --beta 0
    only for the logged kl, every --kl-every steps and on the last (compare.py reads the last step's kl). Full
    fine-tuning has a reference only with --beta > 0 or --log-kl."""
    if args.beta > 0:
        return True
    if args.method == "full" and not args.log_kl:
        return False
    return (step + 1) % args.kl_every == 0 or step + 1 == args.steps


def accumulate_gradients(model, ref_model, roll, args, denom, rt, step=0):
    """GRPO loss over micro-batches of this rank's completions; backward where there is signal.

    Rows with signal (advantage != 0, or every row when beta > 0) come first; a micro-batch that
    holds none of them is scored without autograd, for the metrics only. Under FSDP every rank runs
    as many backward passes as the busiest one (forward and backward are collective there). Returns
    sums over this rank: loss, scored tokens, clipped tokens, entropy, kl, kl_max, signal rows."""
    adv, mask = roll["adv"], roll["mask"]
    signal = torch.ones_like(adv, dtype=torch.bool) if args.beta > 0 else adv != 0
    rows = [torch.nonzero(signal).flatten(), torch.nonzero(~signal).flatten()]
    # packed: bins of real tokens, signal rows and the rest apart. Under FSDP with several processes every forward is
    # collective, so every rank must run as many micro-batches: rows then go in fixed counts (still scored packed)
    if args.micro_batch_tokens and not (args.fsdp and rt.world > 1):
        lengths = roll["attention_mask"].sum(1).cpu()
        batches = [r[torch.tensor(b)] for r in rows                 # rows[0] first: the signal bins lead
                   for b in grpo.token_batches(lengths[r].tolist(), args.micro_batch_tokens)]
    else:
        order = torch.cat(rows)
        batches = [order[i:i + args.micro_batch] for i in range(0, len(order), args.micro_batch)]
    score = grpo.packed_token_logprobs if args.micro_batch_tokens else grpo.token_logprobs
    n_grad = sum(bool(signal[b].any()) for b in batches)
    if args.fsdp and rt.world > 1:
        t = torch.tensor([n_grad], device=rt.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        n_grad = int(t)
    loss_scale = rt.world if args.fsdp and args.method == "full" else 1   # FSDP averages; we want the sum
    need_ref = kl_step(args, step)
    acc = {"loss": 0.0, "tok": 0.0, "clip": 0.0, "entropy": 0.0, "kl": 0.0, "kl_max": 0.0,
           "signal": float(signal.sum())}
    ids_all, attn_all, L_all = roll["input_ids"], roll["attention_mask"], roll["n_completion"]
    for k, sel in enumerate(batches):
        grad = k < n_grad
        sel = sel.to(ids_all.device)
        m = mask[sel]                                                            # (b, L)
        L = int(m.sum(1).max())                      # drop completion columns past every EOS
        ids = ids_all[sel][:, :ids_all.shape[1] - L_all + L]
        attn = attn_all[sel][:, :ids.shape[1]]
        first = int(attn.any(0).nonzero()[0])        # drop left-padding columns shared by all rows
        ids, attn, m = ids[:, first:], attn[:, first:], m[:, :L]
        with rt.autocast, torch.set_grad_enabled(grad):
            logp, ent = score(model, ids, attn, L, args.temperature)
            ref = None
            if need_ref:
                with torch.no_grad():
                    if ref_model is not None:
                        ref = score(ref_model, ids, attn, L, args.temperature)[0]
                    else:
                        with geora.adapters_disabled(model):
                            ref = score(model, ids, attn, L, args.temperature)[0]
            loss, mt = grpo.grpo_loss(logp, logp.detach(), ref, adv[sel.cpu()].to(logp.device), m,
                                      args.clip_low, args.clip_high, args.beta, args.agg, denom)
        if grad:
            (loss * loss_scale).backward()
        acc["loss"] += loss.item()
        acc["tok"] += mt["tokens"]
        acc["clip"] += mt["clip_frac"] * mt["tokens"]
        acc["entropy"] += float((ent * m).sum())
        if "kl" in mt:
            acc["kl"] += mt["kl"] * mt["tokens"]
            acc["kl_max"] = max(acc["kl_max"], mt["kl_max"])
    return acc


def train_step(model, ref_model, opt, params, tokenizer, train_rows, args, step, rt):
    """Rollouts, loss, gradient, optimizer step: one GRPO step. Returns its metrics line."""
    cuda = rt.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(rt.device)
    else:
        reset_peak_rss()
    t0, c0 = time.time(), time.process_time()
    roll = rollout(model, tokenizer, train_rows, args, step, rt)
    gen_s = time.time() - t0
    rewards, mask, G = roll["rewards"], roll["mask"], args.group_size
    group_std = rewards.view(-1, G).std(1)                       # Bessel, as TRL's reward_std
    zero_std = (group_std == 0).float()
    lens = mask.sum(1)

    # normalisers of the whole step (all ranks), so micro-batching changes nothing
    sums = torch.tensor([mask.sum().item(), float(len(rewards))], dtype=torch.float64)
    if rt.world > 1:
        dist.all_reduce(sums)
    denom = {"token-mean": sums[0].item(), "seq-mean": sums[1].item(),
             "dr-grpo": sums[1].item() * args.max_new_tokens}[args.agg]

    t1 = time.time()
    acc = accumulate_gradients(model, ref_model, roll, args, denom, rt, step)
    stats = torch.tensor([rewards.sum(), roll["no_answer"].sum(), float(len(rewards)), zero_std.sum(),
                          float(len(zero_std)), mask.sum().item(), float(roll["truncated"].sum()), acc["loss"],
                          acc["tok"], acc["clip"], acc["entropy"], acc["kl"], acc["signal"], group_std.sum(),
                          *roll["parts"].sum(0).tolist()], dtype=torch.float64)
    if rt.world > 1:
        dist.all_reduce(stats)
    (r_sum, na_sum, n, zs, n_groups, n_tok, n_trunc, loss_sum, tok, clip_sum, ent_sum, kl_sum,
     signal, std_sum) = stats.tolist()[:14]
    part_sums = stats.tolist()[14:]

    grad_norm = 0.0
    if signal > 0:  # no signal anywhere: no optimizer step (AdamW's moments would still move)
        if rt.world > 1 and not (args.fsdp and args.method == "full"):
            # replicated tensors: sum the local gradients (the loss is already normalised over all ranks)
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            for p, g in zip(params, flat.split([p.numel() for p in params])):
                p.grad = g.view_as(p).clone()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, args.grad_clip))
    if not (math.isfinite(loss_sum) and math.isfinite(grad_norm)):
        raise FloatingPointError(f"non-finite loss/gradient at step {step + 1} (loss {loss_sum}, grad norm "
                                 f"{grad_norm})")
    if signal > 0:
        if args.weight_decay and args.method != "full":
            decay_adapters(model, args.lr * args.weight_decay)
        reshard(model)
        opt.step()
    opt.zero_grad(set_to_none=True)
    train_s = time.time() - t1
    peak = torch.tensor([acc["kl_max"], torch.cuda.max_memory_allocated(rt.device) / 1e9 if cuda else peak_rss_gb(),
                         float(lens.max()), -float(lens.min())], dtype=torch.float64)
    if rt.world > 1:
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    kl_max, mem_gb, len_max, neg_len_min = peak.tolist()
    need_ref = kl_step(args, step)
    line = {"step": step + 1, "reward": r_sum / n, "no_answer": na_sum / n,
            "kl": kl_sum / tok if tok and need_ref else None, "kl_max": kl_max if tok and need_ref else None,
            "entropy": ent_sum / tok if tok else None, "response_len": n_tok / n,
            "truncated": n_trunc / n, "frac_zero_std": zs / n_groups, "grad_norm": grad_norm,
            "clip_frac": clip_sum / tok if tok else 0.0, "loss": loss_sum, "lr": args.lr,
            "gen_s": round(gen_s, 3), "compile_s": round(roll["compile_s"], 3), "train_s": round(train_s, 3), "cpu_s": round(time.process_time() - c0, 3),
            "tokens_per_s": round(n_tok / max(gen_s + train_s, 1e-9), 1),
            "gen_tokens_per_s": round(n_tok / max(gen_s, 1e-9), 1),
            "reward_std": std_sum / n_groups, "response_len_min": int(-neg_len_min), "response_len_max": int(len_max)}
    fn = reward_of(args)
    if len(fn.names) > 1:   # each function's own mean: TRL's rewards/<name>/mean
        line.update({f"reward_{name}": v / n for name, v in zip(fn.names, part_sums)})
    if mem_gb:
        line["mem_gb"] = round(mem_gb, 3)
    if rt.master and args.log_completions:
        rt.completions = sample_completions(roll, args, step)
    line["step_s"] = round(time.time() - t0, 3)   # the whole step: rollouts, rewards, loss, optimizer, reductions
    return line


def sample_completions(roll, args, step):
    """Up to --log-completions of rank 0's completions: the first of every group, then the second, ... so that N
    smaller than the number of prompts still shows N different prompts."""
    G, B = args.group_size, len(roll["texts"])
    order = sorted(range(B), key=lambda i: (i % G, i // G))[:args.log_completions]
    return [{"step": step + 1, "id": roll["rows"][i // G].get("id"), "sample": i % G,
             "prompt": roll["prompts"][i // G], "completion": roll["texts"][i], "reward": float(roll["rewards"][i]),
             "status": roll["status"][i], "advantage": float(roll["adv"][i]),
             "truncated": bool(roll["truncated"][i])} for i in order]


def reset_peak_rss():
    """Linux: make VmHWM (the peak resident set) restart from the current RSS, so a step's peak is its own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_gb():
    """Linux: the process's peak resident set since the last reset_peak_rss, in GB (0.0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) * 1024 / 1e9
    except (OSError, StopIteration):
        return 0.0


# ----------------------------------------------------------------------------- main

def plan_memory(args, config, train_rows, tokenizer, rt, log, evals=None):
    """memory.estimate for this run, printed; a run that cannot fit stops here, before the model loads.
    Fills --rollout-batch when it was not given. The held-out prompts count in the longest prompt: greedy
    evaluation decodes --rollout-batch of them at a time (decoding is per-step overhead: fewer, wider calls)."""
    rows = train_rows + [r for rs in (evals or {}).values() for r in rs]
    longest = max(len(t) for t in tokenizer([prompt_of(tokenizer, r, args) for r in rows],
                                              add_special_tokens=False)["input_ids"])
    if args.micro_batch_tokens is None:  # the tokens of the estimate's micro-batch: packing fits more rows in it
        args.micro_batch_tokens = args.micro_batch * (longest + args.max_new_tokens)
    est = memory.estimate(config, args.method, args.rank, device=str(rt.device), dtype=args.dtype,
                          micro_batch_tokens=args.micro_batch_tokens or None,
                          rollouts=args.prompts_per_step // rt.world * args.group_size,
                          rollout_batch=args.rollout_batch, micro_batch=args.micro_batch, prompt_tokens=longest,
                          new_tokens=args.max_new_tokens, gradient_checkpointing=args.gradient_checkpointing,
                          ref_copy=args.method == "full" and (args.beta > 0 or args.log_kl), world=rt.world,
                          fsdp=args.fsdp)
    log(memory.describe(est))
    if not est["fits"]:
        raise ValueError(f"this run does not fit in memory ({est['total'] / 1e9:.1f} GB needed per process, "
                         f"{est['budget'] / 1e9:.1f} GB available): {memory.ADVICE}")
    if args.rollout_batch is None:
        args.rollout_batch = est["rollout_batch"]
    est["prompt_tokens"] = longest
    if rt.world > 1:  # every rank must make the same generate calls: rank 0's plan (memory readings differ)
        plan = [args.rollout_batch, est["fsdp_generate"]]
        dist.broadcast_object_list(plan, 0)
        args.rollout_batch, est["fsdp_generate"] = plan
    return est


def warm_up(model, tokenizer, args, est, rt):
    """Compile the rollout step before training (--rollout-engine compiled), so compile time is reported
    apart from sampling time: seconds spent compiling. A shape met later compiles then (metrics: compile_s)."""
    if args.rollout_engine != "compiled" or rt.synced_gpus:
        return 0.0
    S = min(args.rollout_batch, args.prompts_per_step // rt.world * args.group_size)
    stats = {}
    with rt.autocast, rollout_mode(model, rt), geora.frozen_factors(model):
        rollout_engine.warm_up(model, tokenizer, S, est["prompt_tokens"], args.max_new_tokens, stats,
                               temperature=args.temperature)
    return stats.get("compile_s", 0.0)


def build_trainer(args, path, est, ckpt, rt, log):
    """The model with its adapters (or all weights) trainable, sharded with --fsdp, the frozen reference
    (full fine-tuning with a KL term) and AdamW. Returns (model, ref_model, opt, params, init seconds)."""
    torch.manual_seed(args.seed)
    model = load_model(path, args, rt.device)
    ref_model, init_s = build_policy(args, model, ckpt, rt.device, log)
    if args.fsdp:
        if args.method != "full" and rt.master:
            geora.geometry_report(model)   # caches W's top directions while W is whole (W is frozen)
        shard(model, args, rt.device)
        if ref_model is not None:
            shard(ref_model, args, rt.device)
        rt.fsdp_generate = est["fsdp_generate"]
        rt.synced_gpus = rt.fsdp_generate == "sharded"
        log(f"FSDP over {rt.world} processes; rollouts {rt.fsdp_generate}")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay if args.method == "full" else 0.0)
    torch.manual_seed(args.seed * 1000 + rt.rank)
    random.seed(args.seed * 1000 + rt.rank)
    np.random.seed(args.seed * 1000 + rt.rank)
    return model, ref_model, opt, params, init_s


def _trim_log(path, resume, start):
    """A resumed run keeps the lines of steps <= start (a line cut off by a crash mid-write is dropped too);
    a fresh run empties the log."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path) as f:
        for l in f:
            try:
                if resume and json.loads(l)["step"] <= start:
                    keep.append(l)
            except (json.JSONDecodeError, KeyError, TypeError):
                pass
    with open(path + ".tmp", "w") as f:
        f.writelines(keep)
    os.replace(path + ".tmp", path)


def metrics_writer(args, rt, start, wandb_id=None):
    """write(line) appends to OUT/metrics.jsonl on rank 0 (and to wandb with --wandb, TensorBoard with
    --tensorboard). A fresh run starts a fresh log; a resumed one first drops the lines written after its
    checkpoint. write.completions(records) appends to OUT/completions.jsonl (and a W&B table). write.wandb_id
    is the W&B run's id (saved in every checkpoint, so that --resume continues the same W&B run)."""
    path = os.path.join(args.out, "metrics.jsonl")
    cpath = os.path.join(args.out, "completions.jsonl")
    wandb = tb = None
    if rt.master:
        _trim_log(path, args.resume, start)
        _trim_log(cpath, args.resume, start)
        if not args.resume:  # another run's checkpoints in this --out would be offered for a later --resume
            for old in os.listdir(args.out):
                if old.startswith(("ckpt-", ".tmp-ckpt-", "peft-", ".tmp-peft-")):
                    shutil.rmtree(os.path.join(args.out, old), ignore_errors=True)
                elif old in ("latest", ".latest.tmp"):
                    os.remove(os.path.join(args.out, old))
        if args.wandb:
            import wandb
            # resume="allow": the saved id continues that run; a first start creates it under this id
            wandb.init(project=args.wandb, entity=args.wandb_entity, name=args.wandb_name, config=vars(args),
                       id=wandb_id or wandb.util.generate_id(), resume="allow")
            wandb_id = wandb.run.id
        if args.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError(f"--tensorboard needs the tensorboard package (pip install tensorboard): {e}") from e
            tb = SummaryWriter(os.path.join(args.out, "tensorboard"), purge_step=start + 1 if args.resume else None)

    def write(line):
        if rt.master:
            with open(path, "a") as f:
                f.write(json.dumps(line) + "\n")
            if wandb:
                wandb.log(line, step=line["step"])
            if tb:  # scalars only (TensorBoard has no place for strings or nulls)
                for k, v in line.items():
                    if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                        tb.add_scalar(k, v, line["step"])

    def completions(records):
        if rt.master and records:
            with open(cpath, "a", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            if wandb:
                cols = list(records[0])
                wandb.log({"completions": wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in records])},
                          step=records[0]["step"])

    def finish():
        if tb:
            tb.close()
        if wandb:
            wandb.finish()
    write.completions, write.finish, write.wandb_id = completions, finish, wandb_id
    return write


@torch.no_grad()
def full_geometry(model, ref_model, k=16):
    """geora.geometry_report's s_head and rel_update for full fine-tuning: dW = W - W0 of every projection GeoRA
    would adapt (geora.TARGETS), W0 from the frozen initial copy, so the methods are compared on one measure. W0's
    top-k right singular vectors are computed once, as geora.py does, and cached on the copy (it never changes)."""
    ref = dict(ref_model.named_modules())
    s_head = rel = n = 0
    for name, lin in model.named_modules():
        if not (isinstance(lin, torch.nn.Linear) and name.split(".")[-1] in geora.TARGETS):
            continue
        r = ref[name]
        W0 = r.weight.float()                                                           # (out, in)
        if not hasattr(r, "_top_v"):
            gen = torch.Generator().manual_seed(geora._module_seed(0, name))
            r._top_v = geora.svd_top(W0, min(k, min(W0.shape)), "full" if min(W0.shape) <= 2048 else "lowrank", 8,
                                     gen)[2].T                                          # (in, k)
            r._w_norm = W0.norm().item()
        dW = lin.weight.float() - W0
        dw = dW.norm().item()
        rel += dw / r._w_norm
        s_head += (dW @ r._top_v).norm().item() / dw if dw > 0 else 0.0
        n += 1
    return dict(s_head=s_head / max(n, 1), rel_update=rel / max(n, 1))


def eval_line(model, tokenizer, evals, args, rt, step, write, ref_model=None):
    """Held-out accuracy (+ the geometry report: geora.py's for adapters, full_geometry for full fine-tuning with a
    frozen copy and no sharding), logged; returns the main set's accuracy."""
    if rt.master:  # a long silence otherwise: greedy decoding of every held-out prompt to its answer
        tqdm.write(f"eval at step {step}: " + ", ".join(f"{k} {len(v)} prompts" for k, v in evals.items())
                   + f", greedy, up to {args.max_new_tokens} new tokens, {eval_batch(args)} per generate call")
    accs = evaluate(model, tokenizer, evals, args, rt)
    line = {"step": step, "eval_acc": accs.get("eval")}
    line.update({f"eval_acc_{k}": v for k, v in accs.items() if k != "eval"})
    if args.method != "full" and rt.master:
        g = geora.geometry_report(model)
        line.update(s_head=g["s_head"], rel_update=g["rel_update"])
    elif ref_model is not None and not args.fsdp and rt.master:
        line.update(full_geometry(model, ref_model))
    write(line)
    if rt.master:  # tqdm.write keeps the progress bar intact
        tqdm.write("eval " + " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in line.items()))
    return line["eval_acc"]


def save_resolved_config(args):
    """OUT/config.json: the run's resolved settings (every flag, defaults filled), readable by --config; resume
    and config, which say how this call was made rather than what the run is, are left out."""
    cfg = {k: v for k, v in vars(args).items() if k not in ("resume", "config")}
    tmp = os.path.join(args.out, ".config.json.tmp")
    with open(tmp, "w") as f:
        json.dump(cfg, f, indent=1)
    os.replace(tmp, os.path.join(args.out, "config.json"))


def stop_message(e, step, args, est):
    """A non-finite loss or an out-of-memory error: one message, with the advice and the checkpoint to resume."""
    last = latest_checkpoint(args.out) if os.path.exists(os.path.join(args.out, "latest")) else "none"
    if isinstance(e, FloatingPointError):
        return f"stopping: {e}; the last good checkpoint is {last}; lower --lr or raise --grad-clip"
    return (f"stopping: out of memory at step {step + 1} ({memory.describe(est)}); {memory.ADVICE}; "
            f"the last good checkpoint is {last} (--resume continues from it)")


def main(argv=None):
    """The GRPO loop; setup() does everything before it, finish() everything after."""
    run = setup(argv)
    args, rt = run.args, run.rt
    if run.start == 0 and run.evals:
        run.before = guarded(run, 0, lambda: eval_line(run.model, run.tokenizer, run.evals, args, rt, 0, run.write,
                                                       run.ref_model))
    bar = tqdm(range(run.start, args.steps), initial=run.start, total=args.steps, disable=not rt.master,
               desc="grpo", dynamic_ncols=True)
    for step in bar:
        line = guarded(run, step, lambda: train_step(run.model, run.ref_model, run.opt, run.params, run.tokenizer,
                                                     run.train_rows, args, step, rt), bar, step_failure=True)
        run.write(line)
        run.write.completions(getattr(rt, "completions", None))
        rt.completions = None
        bar.set_postfix(reward=f"{line['reward']:.3f}", zero_std=f"{line['frac_zero_std']:.2f}",
                        len=f"{line['response_len']:.1f}")
        done = step + 1
        if run.evals and (done % args.eval_every == 0 or done == args.steps):
            run.after = guarded(run, done, lambda: eval_line(run.model, run.tokenizer, run.evals, args, rt, done,
                                                             run.write, run.ref_model), bar)
        if done % args.save_every == 0 or done == args.steps:
            checkpoint(run, done)
        if args.save_peft_every and done % args.save_peft_every == 0:
            save_peft_step(args, run.model, done, rt)
    bar.close()
    return finish(run)


def setup(argv=None):
    """Flags, processes, data, the memory plan (which may refuse the run), the model with its adapters, AdamW, a
    resumed checkpoint and the metrics log with its setup line. Returns the run's state as a namespace."""
    args = parse_args(argv)
    rank, world, device, owned = setup_distributed(args)
    rt = argparse.Namespace(rank=rank, world=world, device=device, master=rank == 0, fsdp_generate=None,
                            synced_gpus=False)
    log = print if rt.master else (lambda *a, **k: None)
    if args.prompts_per_step % world:
        raise ValueError(f"--prompts-per-step {args.prompts_per_step} must be divisible by the "
                         f"{world} processes")
    ckpt, state = read_checkpoint_state(args) if args.resume else (None, None)
    path = model_path(args, rank, world)
    tokenizer, config = load_tokenizer_and_config(path)
    train_rows, evals = load_data(args, tokenizer, config.max_position_embeddings, quiet=not rt.master)
    est = plan_memory(args, config, train_rows, tokenizer, rt, log, evals)  # before any work: may refuse
    if ckpt and state["args"].get("max_prompt_tokens", args.max_prompt_tokens) != args.max_prompt_tokens:
        raise ValueError(f"--resume: --max-prompt-tokens was {state['args']['max_prompt_tokens']} in the checkpoint, "
                         f"now {args.max_prompt_tokens} (it selects the training prompts); resume with the same "
                         f"--max-prompt-tokens / --max-new-tokens")
    log("train.py " + " ".join(f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()))
    if not reward_of(args).is_builtin:
        log(f"reward: {reward_of(args).describe()}")
    os.makedirs(args.out, exist_ok=True)
    if rt.master:  # every resolved setting, in a form --config reads back (docs/training.md)
        save_resolved_config(args)
    if args.model is None and device.type == "cpu":
        torch.set_num_threads(1)  # the tiny world: one thread is as fast, and its numbers are the same anywhere
    rt.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and \
        args.dtype != "fp32" else contextlib.nullcontext()

    model, ref_model, opt, params, init_s = build_trainer(args, path, est, ckpt, rt, log)
    start, before = 0, None
    if ckpt:
        load_trainer_state(args, model, opt, ckpt, rt, log)
        start, before = state["step"], state["before"]
        log(f"resumed from {ckpt} at step {start}")
    write = metrics_writer(args, rt, start, wandb_id=state.get("wandb_id") if state else None)
    write({"step": start, "setup": True, "init_s": round(init_s, 3), "est_mem_gb": round(est["total"] / 1e9, 3),
           "budget_gb": round(est["budget"] / 1e9, 3), "rollout_batch": args.rollout_batch, "world": world,
           "fsdp": args.fsdp, "device": str(device), "params": sum(p.numel() for p in model.parameters()),
           "trainable": sum(p.numel() for p in params), "rollout_engine": args.rollout_engine,
           "compile_s": round(warm_up(model, tokenizer, args, est, rt), 3)})  # (a DTensor's numel is its whole size)
    return argparse.Namespace(args=args, rt=rt, log=log, owned=owned, path=path, tokenizer=tokenizer, est=est,
                              train_rows=train_rows, evals=evals, model=model, ref_model=ref_model, opt=opt,
                              params=params, start=start, saved=start, before=before, after=None, write=write,
                              t_start=time.time())


def checkpoint(run, done):
    """The checkpoint after `done` steps (save_checkpoint: atomic), and the step the newest one on disk holds."""
    save_checkpoint(run.args, run.model, run.opt,
                    {"step": done, "cursor": done * run.args.prompts_per_step, "before": run.before,
                     "world": run.rt.world, "args": vars(run.args), "wandb_id": run.write.wandb_id}, run.rt)
    run.saved = done


def stop(run, msg, bar=None):
    """End the run with one message instead of a traceback (the last checkpoint stays loadable)."""
    if bar is not None:
        bar.close()
    run.log(msg)
    run.write.finish()
    if run.owned:
        dist.destroy_process_group()
    raise SystemExit(msg) from None


def guarded(run, step, fn, bar=None, step_failure=False):
    """fn(), with the failures that must end the run as a message. A reward function that fails
    (plugins.RewardError): the completed steps are checkpointed first (the failing step changed nothing:
    rewards come before the update), then the run stops naming the function and row. With step_failure (a
    training step): a non-finite loss or running out of memory stops with the memory estimate and the advice."""
    try:
        return fn()
    except plugins.RewardError as e:
        if step > run.saved:
            checkpoint(run, step)
        last = latest_checkpoint(run.args.out) if os.path.exists(os.path.join(run.args.out, "latest")) else "none"
        stop(run, f"stopping: {e}; the last checkpoint is {last} (step {run.saved}): fix the reward function, then "
                  f"--resume continues from it", bar)
    except (FloatingPointError, torch.OutOfMemoryError) as e:
        if not step_failure:
            raise
        stop(run, stop_message(e, step, run.args, run.est), bar)


def finish(run):
    """The final adapter, PEFT export (and --merge), the before/after line."""
    args = run.args
    save_final(args, run.model, run.tokenizer, run.path, run.rt)
    if run.rt.master and run.before is not None and run.after is not None:
        run.log(f"held-out greedy accuracy: before {run.before:.1%} -> after {run.after:.1%} "
                f"({100 * (run.after - run.before):+.1f} points) in {(time.time() - run.t_start) / 60:.1f} min of "
                f"GRPO, {args.steps} steps; outputs in {args.out}")
    run.write.finish()
    if run.owned:
        dist.destroy_process_group()
    return {"before": run.before, "after": run.after, "out": args.out, "model": run.model}


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:  # user errors: one clear line, no traceback
        sys.exit(f"error: {e}")
