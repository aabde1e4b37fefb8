"""How much memory a GRPO run needs, per process, worked out from the model's config before any work.

    python memory.py                                    # the fits-on table (README): model x method x GPUs
    python memory.py --model qwen2.5-7b --world 4 --fsdp --method full  # one run at the paper preset, itemised
    import memory; est = memory.estimate(config, "geora", device="cuda", rollouts=256, micro_batch=8)

A GRPO step holds, at its peak, the weights, the trainable state (adapter or full weights, their
gradients and AdamW's two moments) and the larger of two phases: sampling (the KV cache of one
--rollout-batch chunk of completions, the prefill's activations, the sampler's (rows, V) work) and
scoring (the activations kept for backward of one --micro-batch, one chunk of fp32 logits, the
gradients flowing back). Everything is counted from the config (layers, widths, heads, vocab), so the
estimate exists before a 30-minute load of a 32B model, and train.py refuses a run that cannot fit.

Choices and simplifications (each checked against measured peaks by `python bench.py --rehearsal`):
- Bytes per element: weights bf16 on CUDA for adapter methods (fp32 on CPU, and fp32 master weights
  for full fine-tuning); the KV cache and activations in the compute dtype (bf16 under autocast on
  CUDA, fp32 on CPU); GeoRA's adapter branch in fp32 (it keeps an fp32 copy of each adapted
  layer's input for backward: 4 (6 hidden + mlp) bytes per token per layer).
- Trainable state: 16 bytes per trainable parameter (fp32 value, gradient, two AdamW moments), plus
  4 bytes each for the frozen fp32 A0, B0 of the SVD inits. Full fine-tuning with a KL reference
  keeps a frozen fp32 copy of the weights (train.py's ref_model).
- Activations per token per decoder layer, without checkpointing: the RMSNorm inputs in fp32, the
  q/k/v/o projections and rotary copies, attention's output, the MLP's gate, up, act and product.
  With --gradient-checkpointing: each layer's input, plus one layer's full set (and a quarter more
  for its gradients) while it is recomputed; the LM head's chunks come first in backward, so the
  larger of the two counts. These are counts of the tensors autograd keeps for Qwen2/Llama blocks,
  not measurements; the rehearsal measures how close they land.
- Logits: token_logprobs applies the LM head chunk by chunk, so one (chunk, V) fp32 block and three
  of its temporaries (logsumexp's exp, the softmax, the gradient) at a time, never (tokens, V).
- Sampling: the KV cache is rollout-batch x (prompt + new tokens) x layers x 2 x kv-heads x head-dim,
  with the Gumbel-max sampler's (rows, V) work in fp32/fp64/int64 (about 40 bytes per entry); before
  it grows, the prefill runs the whole prompt batch through one layer at a time (its MLP is the big
  part): the larger of the two.
- Overhead: the CUDA context and allocator slack (1 GiB), or the Python process with torch and
  transformers imported (0.6 GiB) on CPU.
- FSDP (--fsdp): weights, and for full fine-tuning the whole trainable state, are divided by the
  number of processes; while a layer computes, its gathered copy (two at a time, with prefetch) and
  the root's embedding / LM head are whole (full fine-tuning's reference gathers its own root while it
  scores), in the compute dtype (bf16 on CUDA, full fine-tuning's fp32 masters included). train.py
  loads the whole model on every device before it shards it (and full fine-tuning's KL reference copy,
  or the adapters with apply_geora's fp32 scratch): that load must fit too. Rollouts run unsharded
  when the whole gathered model fits next to the KV cache (torchtune's choice: no all-gather per
  token), otherwise sharded.
- The budget is 90% of the device's memory (CUDA: total memory; CPU: MemAvailable), the rest left
  to fragmentation. The automatic --rollout-batch is the largest chunk (of this process's
  completions of a step) whose sampling phase fits in what the weights and the scoring phase leave.
"""

import argparse
import os

import torch

GiB = 1 << 30

# Exact shapes of the models the project targets (from their public config.json files).
CONFIGS = {
    "qwen2.5-1.5b": dict(model_type="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         tie_word_embeddings=True, max_position_embeddings=32768),
    "qwen2.5-7b": dict(model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                       num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       tie_word_embeddings=False, max_position_embeddings=32768),
    "qwen3-8b": dict(model_type="qwen3", vocab_size=151936, hidden_size=4096, intermediate_size=12288,
                     num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                     tie_word_embeddings=False, max_position_embeddings=40960),
    "qwen2.5-14b": dict(model_type="qwen2", vocab_size=152064, hidden_size=5120, intermediate_size=13824,
                        num_hidden_layers=48, num_attention_heads=40, num_key_value_heads=8,
                        tie_word_embeddings=False, max_position_embeddings=32768),
    "qwen2.5-32b": dict(model_type="qwen2", vocab_size=152064, hidden_size=5120, intermediate_size=27648,
                        num_hidden_layers=64, num_attention_heads=40, num_key_value_heads=8,
                        tie_word_embeddings=False, max_position_embeddings=32768),
}
TARGET_DIMS = ("q", "k", "v", "o", "gate", "up", "down")


def _get(config, key, default=None):
    return config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)


def shapes(config):
    """The numbers the estimate needs from a Hugging Face config (object or dict)."""
    H, heads = _get(config, "hidden_size"), _get(config, "num_attention_heads")
    hd = _get(config, "head_dim") or H // heads
    s = dict(layers=_get(config, "num_hidden_layers"), hidden=H, mlp=_get(config, "intermediate_size"),
             heads=heads, kv_heads=_get(config, "num_key_value_heads") or heads, head_dim=hd,
             vocab=_get(config, "vocab_size"), tied=bool(_get(config, "tie_word_embeddings", False)))
    qo, kv = heads * hd, s["kv_heads"] * hd
    # (in, out) of the seven adapted projections of one layer
    s["linears"] = {"q": (H, qo), "k": (H, kv), "v": (H, kv), "o": (qo, H), "gate": (H, s["mlp"]),
                    "up": (H, s["mlp"]), "down": (s["mlp"], H)}
    bias = qo + 2 * kv if _get(config, "model_type") == "qwen2" else 0      # Qwen2 has q/k/v biases
    per_layer = sum(i * o for i, o in s["linears"].values()) + bias + 2 * H
    if _get(config, "model_type") == "qwen3":
        per_layer += 2 * hd                                                 # q_norm, k_norm
    s["params"] = s["layers"] * per_layer + s["vocab"] * H * (1 if s["tied"] else 2) + H
    s["root_params"] = s["vocab"] * H * (1 if s["tied"] else 2) + H
    return s


def adapter_params(s, rank):
    return s["layers"] * sum(rank * (i + o) for i, o in s["linears"].values())


def activation_bytes_per_token(s, act, adapters):
    """Bytes autograd keeps per token for one decoder layer (act: bytes of the compute dtype)."""
    H, I = s["hidden"], s["mlp"]
    q, kv = s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"]
    norms = 2 * (8 * H + act * H)                        # 2 RMSNorms: fp32 input, fp32 normalised, the output
    attn = act * (5 * q + 6 * kv)                        # q, k, v, their rotary copies, attention's out, o's input
    mlp = act * 4 * I                                    # gate, up, act(gate), their product (down's input)
    adapter = 4 * (6 * H + I) if adapters else 0         # fp32 copies of the adapted inputs (q, k, v each their own)
    return norms + attn + mlp + adapter


def estimate(config, method="geora", rank=16, device="cuda", dtype="auto", rollouts=64, rollout_batch=None,
             micro_batch=8, prompt_tokens=1024, new_tokens=1024, gradient_checkpointing=True,
             chunk_bytes=1 << 28, ref_copy=False, world=1, fsdp=False, budget=None, micro_batch_tokens=None):
    """Memory of one process of a run, in bytes, itemised. rollouts: this process's completions per step.
    budget: bytes available (default: 90% of this machine's device memory). Returns a dict with the
    components, 'total', 'budget', 'rollout_batch' (chosen when None), 'fits' and 'fsdp_generate'."""
    s = shapes(config)
    cuda = str(device).startswith("cuda")
    act = 2 if cuda and dtype != "fp32" else 4            # bf16 autocast on CUDA (full fine-tuning too)
    if dtype == "auto":                                   # storage: bf16 for adapters, fp32 masters for full
        dtype = "bf16" if cuda and method != "full" else "fp32"
    w_bytes = 2 if dtype == "bf16" else 4
    shard = world if fsdp else 1
    out = {}
    out["weights"] = s["params"] * w_bytes / shard
    if method == "full":
        out["trainable_state"] = s["params"] * 12 / shard   # fp32 gradient + two AdamW moments
        out["reference_copy"] = s["params"] * 4 / shard if ref_copy else 0
    else:
        n = adapter_params(s, rank)
        out["trainable_state"] = n * (16 if method == "lora" else 20)
        out["reference_copy"] = 0
    g_bytes = act if cuda else w_bytes                    # FSDP gathers in the compute dtype (full FT: its mp policy)
    if fsdp:  # whole while in use: two gathered layers (prefetch) and the root's embedding / head
        layer = (s["params"] - s["root_params"]) / s["layers"]
        out["gathered"] = (2 * layer + s["root_params"]) * g_bytes
    static = sum(out.values()) + (GiB if cuda else 0.6 * GiB)
    T = prompt_tokens + new_tokens

    # scoring one micro-batch. Backward meets the LM head's chunks first, then one layer at a time: with
    # checkpointing the layers' inputs stay, and the layer being recomputed holds its activations and their
    # gradients (a quarter more); without it every layer's activations stay.
    # packed scoring (micro_batch_tokens): that many real tokens, plus the block mask of the packed rows (bool,
    # rows of at most T tokens: at most tokens x T bytes, kept for backward by the layers that recompute)
    tokens = micro_batch_tokens or micro_batch * T
    mask = tokens * T if micro_batch_tokens else 0
    per_layer = activation_bytes_per_token(s, act, method != "full") * tokens + mask
    chunk = min(micro_batch_tokens or micro_batch * new_tokens, max(1, chunk_bytes // (4 * s["vocab"])))
    logits = 4 * chunk * s["vocab"] * 4                    # the chunk's logits, exp, softmax, their gradient
    if gradient_checkpointing:
        out["scoring"] = s["layers"] * tokens * s["hidden"] * act + max(logits, 1.25 * per_layer)
    else:
        out["scoring"] = s["layers"] * per_layer + max(logits, 0.25 * per_layer)
    if fsdp and out["reference_copy"]:  # the reference's root, gathered while it scores (beside the policy's)
        out["scoring"] += s["root_params"] * g_bytes

    # sampling, per completion in a chunk: the prefill (one layer's MLP over the prompt, while the cache holds
    # only the prompt) or, later, the whole KV cache and the sampler's (rows, V) work
    kv_per_token = s["layers"] * 2 * s["kv_heads"] * s["head_dim"] * act
    prefill = prompt_tokens * (3 * s["mlp"] * act + kv_per_token)
    per_row = max(prefill, T * kv_per_token + 40 * s["vocab"])
    if budget is None:
        budget = device_memory(device)
    room = budget - static
    unsharded = 0.0           # FSDP, unsharded rollouts: the rest of the model, gathered on every process
    out["fsdp_generate"] = None
    if fsdp:  # every unit's whole bf16 parameters, beside its shard (FSDP2 gathers into separate buffers)
        extra = max(0.0, s["params"] * g_bytes - out["gathered"])
        out["fsdp_generate"] = "unsharded" if room - extra >= per_row * min(rollouts, 8) else "sharded"
        if out["fsdp_generate"] == "unsharded":
            unsharded, room = extra, room - extra
    if rollout_batch is None:
        rollout_batch = int(max(1, min(rollouts, room // per_row)))
    out["sampling"] = rollout_batch * per_row + unsharded
    out["total"] = static + max(out["sampling"], out["scoring"])
    # train.py loads the whole model (and full fine-tuning's frozen reference) on every device before sharding
    # (adapter methods: with A, B, A0, B0 and apply_geora's fp32 scratch, up to two matrices per distinct shape)
    out["load"] = s["params"] * w_bytes * (2 if ref_copy else 1) + (GiB if cuda else 0.6 * GiB)
    if method != "full":
        n = adapter_params(s, rank)
        out["load"] += n * (4 if method == "lora" else 8) + (0 if method == "lora" else 2 * 4 * sum(
            i * o for i, o in set(s["linears"].values())))
    out.update(budget=budget, rollout_batch=rollout_batch, kv_per_token=kv_per_token, params=s["params"],
               sampling_row=per_row,
               fits=out["total"] <= budget and (not fsdp or out["load"] <= budget))
    return out


def device_memory(device):
    """90% of the device's memory in bytes (CUDA: total; CPU: MemAvailable)."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return 0.9 * torch.cuda.get_device_properties(torch.device(device)).total_memory
    try:
        with open("/proc/meminfo") as f:
            info = {l.split(":")[0]: int(l.split()[1]) * 1024 for l in f}
        return 0.9 * info["MemAvailable"]
    except (OSError, KeyError):
        return 0.9 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def describe(est):
    """One line per component, in GB."""
    keys = ["weights", "trainable_state", "reference_copy", "gathered", "sampling", "scoring"]
    parts = [f"{k} {est[k] / 1e9:.2f}" for k in keys if est.get(k)]
    return (f"memory estimate per process: {est['total'] / 1e9:.1f} GB of {est['budget'] / 1e9:.1f} GB "
            f"({', '.join(parts)}; rollout batch {est['rollout_batch']}"
            + (f", FSDP rollouts {est['fsdp_generate']}, {est['load'] / 1e9:.1f} GB while loading, before sharding"
               if est.get("fsdp_generate") else "") + ")")


ADVICE = ("lower --rollout-batch (completions per generate call) or --micro-batch-tokens (tokens per packed "
          "forward/backward; --micro-batch with --micro-batch-tokens 0), turn on --gradient-checkpointing, "
          "lower --max-new-tokens, or shard the model over more GPUs with torchrun ... --fsdp")


def fits_table(gib=80, gpus=(1, 2, 4, 8), models=("qwen2.5-1.5b", "qwen2.5-7b", "qwen3-8b", "qwen2.5-14b",
                                                     "qwen2.5-32b")):
    """Markdown: per model and method, whether the paper preset fits on N GPUs of `gib` GiB (1 GPU: no sharding;
    more: --fsdp), and if so in rollout chunks of how many completions. The preset's 1,024 completions per step
    are shared by the processes; prompts up to 1,024 and answers up to 4,096 tokens; micro-batch 1 with gradient
    checkpointing; the preset's KL term, so full fine-tuning keeps a frozen reference copy. torchrun without --fsdp
    replicates the model: each process needs what one GPU needs."""
    head = " | ".join(f"{n} GPU" + ("" if n == 1 else "s, --fsdp") for n in gpus)
    lines = [f"| model | params | method | {head} |", "|---|---|---|" + "---|" * len(gpus)]
    for name in models:
        for method in ("geora", "full"):
            cells = []
            for n in gpus:
                e = estimate(CONFIGS[name], method, device="cuda", rollouts=1024 // n, micro_batch=1, prompt_tokens=1024,
                             new_tokens=4096, world=n, fsdp=n > 1, budget=0.9 * gib * GiB, ref_copy=method == "full")
                need = max(e["total"], e["load"] if n > 1 else 0)
                cells.append(f"yes, chunks of {e['rollout_batch']}" if e["fits"] else f"no ({need / 1e9:.0f} GB)")
            p = shapes(CONFIGS[name])["params"] / 1e9
            lines.append(f"| {name} | {p:.1f}B | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a config name from CONFIGS, a local dir or a hub id")
    ap.add_argument("--method", default="geora")
    ap.add_argument("--gpus", type=float, default=80, help="GiB per GPU")
    ap.add_argument("--world", type=int, default=1)
    ap.add_argument("--fsdp", action="store_true")
    ap.add_argument("--rollouts", type=int, default=1024, help="completions per step, all processes")
    ap.add_argument("--prompt-tokens", type=int, default=1024)
    ap.add_argument("--new-tokens", type=int, default=4096)
    ap.add_argument("--micro-batch", type=int, default=1)
    a = ap.parse_args()
    if a.model is None:
        print(fits_table(a.gpus))
    else:
        if a.model in CONFIGS:
            cfg = CONFIGS[a.model]
        else:
            from transformers import AutoConfig
            cfg = AutoConfig.from_pretrained(a.model)
        est = estimate(cfg, a.method, device="cuda", rollouts=a.rollouts // a.world, micro_batch=a.micro_batch,
                       prompt_tokens=a.prompt_tokens, new_tokens=a.new_tokens, world=a.world, fsdp=a.fsdp,
                       budget=0.9 * a.gpus * GiB, ref_copy=a.method == "full")   # the preset's KL term
        print(describe(est), "fits" if est["fits"] else "does NOT fit")
