"""GRPO, compactly: group advantages, per-token log-probs, the clipped loss, and rollouts.

Used by train.py (the training loop), eval.py (benchmark sampling) and tiny.py (greedy evaluation
while building the tiny world). Nothing here knows about datasets or adapters; every function works
on plain tensors or on any Hugging Face causal LM.

Choices, stated once:
- Advantages: (r - mean_g) / (std_g + eps) within each group of G completions of one prompt,
  with the Bessel-corrected (n - 1) standard deviation, as torch.std and TRL / verl use it.
  `scale=False` is Dr. GRPO's mean-only form (r - mean_g). A group whose rewards are all
  equal gets advantage 0 for every completion: it carries no learning signal.
- Importance ratio exp(logp - old_logp), clipped to [1 - clip_low, 1 + clip_high] (DAPO's
  asymmetric "clip-higher" when clip_high > clip_low). train.py takes one optimizer step per
  batch of rollouts, so old_logp = logp.detach(): the ratio is exactly 1 and the loss reduces
  to the plain policy gradient, but the clipped form stays correct for several updates per batch.
- KL to the reference policy: the k3 estimator exp(d) - d - 1 with d = ref_logp - logp, which
  is >= 0 and unbiased for KL(policy || ref) on samples from the policy. d is clamped to
  [-10, 10] so one very unlikely token cannot produce inf. Added to the loss only when beta > 0.
- Aggregation: "token-mean" (default) averages over every completion token of the batch (DAPO,
  long answers are not down-weighted); "seq-mean" averages each completion, then the batch
  (the original GRPO); "dr-grpo" sums and divides by batch * max length (Dr. GRPO: no length
  normalisation bias). `denom` lets train.py pass the normaliser of the whole step, so
  gradient accumulation over micro-batches (and DDP) gives exactly the full-batch gradient.
- Log-probs use logits / temperature: the distribution the samples came from. The LM head runs
  inside the checkpointed per-chunk log-softmax (token_logprobs swaps it for a stand-in during
  the forward), so neither the forward nor the backward ever holds the (tokens, V) logits of a
  whole micro-batch: one chunk (default 256 MB of fp32 logits) at a time.
- The sampled policy is the scored policy. transformers fills every generation field a call
  leaves unset from the checkpoint's generation_config.json (Qwen2.5 Instruct ships
  repetition_penalty 1.05, top_k 20, top_p 0.8, temperature 0.7): any of those would make the
  sampler differ from the temperature-T softmax that token_logprobs scores. generate() therefore
  swaps in a config that holds only the EOS/pad/BOS ids for the duration of the call, and samples
  with its own logits processor: nothing of the checkpoint's sampling setup can reach it.
- Sampling is counter-based: completion i draws its token at position t with the Gumbel-max
  trick, argmax(logits / T + g), where g comes from a hash of (key_i, t, token id). The key of a
  completion is derived from (seed, step, its index in the step), never from the global RNG, so
  the samples do not depend on how rows are batched (--rollout-batch), on the number of processes,
  on FSDP, or on a resume. Gumbel-max draws exactly from softmax(logits / T); the hash gives 52
  random bits per (key, t, token), so no token with probability above ~1e-15 is out of reach.
  What can still change a sample: the logits themselves. Different batch shapes run different
  kernels, whose rounding (~1e-6 in fp32, ~1e-2 in bf16) flips a draw only where two candidates
  are that close after the noise is added: in fp32 practically never, in bf16 now and then.
- top_p (eval.py only) keeps the smallest set of tokens whose probability reaches top_p (at
  least one) and samples from it renormalised, before the noise is added.
- Completion mask: tokens up to and including the first EOS (the model must learn to stop);
  a completion with no EOS within max_new_tokens is flagged truncated.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


# ----------------------------------------------------------------------------- advantages

def group_advantages(rewards, group_size, eps=1e-4, scale=True):
    """rewards (N,) with N = prompts * group_size, groups contiguous -> advantages (N,)."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    assert rewards.dim() == 1 and rewards.numel() % group_size == 0, "N must be prompts * group_size"
    r = rewards.view(-1, group_size)                                # (P, G)
    adv = r - r.mean(dim=1, keepdim=True)
    if scale:
        std = r.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(adv)  # Bessel
        adv = adv / (std + eps)
    return adv.view(-1)


# ----------------------------------------------------------------------------- log-probs

def _chunk_logp(hidden, weight, bias, targets, temperature, entropy_out):
    """hidden (n, H), the LM head's weight (V, H) / bias, targets (n,) -> log p(target) (n,) fp32. The (n, V)
    logits live only inside this function. The entropy (logged only) is appended to entropy_out on the first
    call: a checkpoint runs this function again in backward, and the second time it is not needed."""
    z = F.linear(hidden, weight, bias).float() / temperature        # (n, V) fp32, one chunk only
    lse = torch.logsumexp(z, dim=-1)                                # (n,)
    logp = z.gather(-1, targets[:, None]).squeeze(-1) - lse
    if not entropy_out:
        with torch.no_grad():                                       # sum_v p_v z_v as a batched dot: no 3rd (n, V)
            p = torch.softmax(z, dim=-1)
            entropy_out.append(lse - (p.unsqueeze(1) @ z.unsqueeze(2)).view(-1))
    return logp


class _LogprobHead(nn.Module):
    """Stands in for the LM head during one forward: maps the final hidden states (B, L+1, H) to
    (B, L, 2) = [log p(target), entropy] chunk by chunk instead of to (B, L+1, V) logits. It runs
    inside the model's own forward, so a sharded (FSDP) root has the head's weight gathered."""

    def __init__(self, head, targets, temperature, chunk_tokens, index=None):
        super().__init__()
        self.head, self.targets, self.temperature, self.chunk = head, targets, temperature, chunk_tokens
        self.index = index                                           # packed: flat positions of the targets

    def forward(self, hidden):
        B, L = self.targets.shape
        if self.index is not None:                                   # (B', R, H) -> the (M, H) that predict
            h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, self.index)
        else:
            h = hidden[:, :L].reshape(B * L, -1)                     # position j predicts token j+1
        t = self.targets.reshape(B * L)
        w, b = self.head.weight, self.head.bias
        logps, ents = [], []
        for i in range(0, B * L, self.chunk):
            ent = []
            args = (h[i:i + self.chunk], w, b, t[i:i + self.chunk], self.temperature, ent)
            if torch.is_grad_enabled() and (h.requires_grad or w.requires_grad):
                logps.append(checkpoint(_chunk_logp, *args, use_reentrant=False))  # backward: one chunk too
            else:
                logps.append(_chunk_logp(*args))
            ents.append(ent[0])
        return torch.stack([torch.cat(logps), torch.cat(ents)], -1).view(B, L, 2)


def _head_name(model):
    """The attribute name of the model's output embedding (lm_head for Qwen2 / Llama)."""
    # the stand-in head returns log-probs, not logits: a model that rescales its logits after the head would
    # score something other than what it samples
    post = [k for k in ("final_logit_softcapping", "logits_scaling", "logit_scale")
            if getattr(model.config, k, None) not in (None, 1, 1.0)]
    assert not post, f"token_logprobs: this model post-processes its logits ({post}); not supported"
    head = model.get_output_embeddings()
    name = next((n for n, m in model.named_children() if m is head), None)
    assert name is not None and isinstance(head, nn.Linear), "token_logprobs needs a top-level nn.Linear LM head"
    return name


def token_logprobs(model, input_ids, attention_mask, n_completion_tokens, temperature=1.0,
                   chunk_tokens=None, chunk_bytes=1 << 28):
    """Log-probs of the last n_completion_tokens tokens of each row, under logits / temperature.

    input_ids, attention_mask: (B, T) prompt + completion, prompts left-padded so every
    completion starts at column T - L with L = n_completion_tokens.
    Returns (logp, entropy), each (B, L) fp32; entropy is detached.
    Only the L + 1 last hidden states reach the head (logits_to_keep), and the head itself is
    applied chunk by chunk (chunk_tokens rows, default: as many as fit in chunk_bytes of fp32
    logits), each chunk checkpointed: forward and backward hold one (chunk, V) block at a time.
    """
    B, T = input_ids.shape
    L = n_completion_tokens
    assert 0 < L < T, "need at least one prompt token before the completion"
    name = _head_name(model)
    head = getattr(model, name)
    if chunk_tokens is None:
        chunk_tokens = max(1, chunk_bytes // (4 * head.out_features))
    # Left padding: positions must count real tokens only, exactly as generate() numbers them.
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
    setattr(model, name, _LogprobHead(head, input_ids[:, T - L:], temperature, chunk_tokens))
    try:
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    logits_to_keep=L + 1, use_cache=False).logits   # (B, L, 2)
    finally:
        setattr(model, name, head)
    return out[..., 0], out[..., 1].detach()


def token_batches(lengths, budget):
    """Micro-batches of row indices, each holding at most `budget` tokens (a longer row goes alone), by
    first-fit decreasing: rows sorted longest first, each into the first batch with room. lengths: real
    tokens per row (prompt + completion). Returns a list of lists of indices into lengths."""
    assert budget >= 1
    order = sorted(range(len(lengths)), key=lambda i: -int(lengths[i]))
    batches, room = [], []
    for i in order:
        n = int(lengths[i])
        j = next((k for k, r in enumerate(room) if r >= n), None)
        if j is None:
            batches.append([i])
            room.append(budget - n)
        else:
            batches[j].append(i)
            room[j] -= n
    return batches


def pack_rows(lengths, hidden_size, flash=False):
    """Where packed_token_logprobs puts each sequence: token_batches of the sequences into rows of R tokens
    (flash: one row; else 2 x hidden size, or the longest sequence if longer: see packed_token_logprobs).
    Returns ((row, offset) per sequence, number of rows, R = the longest packed row)."""
    capacity = sum(lengths) if flash else max(max(lengths), min(sum(lengths), 2 * hidden_size))
    where = [None] * len(lengths)
    used = []
    for r, row in enumerate(token_batches(lengths, capacity)):
        used.append(0)
        for i in row:
            where[i] = (r, used[r])
            used[r] += int(lengths[i])
    return where, len(used), max(used)


def packed_token_logprobs(model, input_ids, attention_mask, n_completion_tokens, temperature=1.0,
                          chunk_tokens=None, chunk_bytes=1 << 28):
    """token_logprobs without computing a padding token: the same inputs and the same (B, L) result.

    Each row's real tokens (its prompt without left padding, its completion up to its end) become one
    sequence with positions restarting at 0; sequences share rows of a packed batch and never attend to
    each other. Attention backends:
    - flash_attention_2 / 3 (when installed): every sequence in one row; transformers' varlen path finds
      the boundaries from the restarting position ids, and its cost is the sum of each sequence's own.
    - sdpa and eager (the defaults; CPU): a block-diagonal causal mask (B', 1, R, R). A dense mask costs
      R^2 per row, so rows are filled (first-fit decreasing) up to R = 2 x hidden size tokens, or the
      longest sequence if longer: attention, 4 R H FLOPs per token against the layers' ~24 H^2, stays a
      small share, and the linear layers run on the real tokens only.
    - anything else (flex_attention, custom kernels) falls back to token_logprobs.
    The leftover slots at the end of a packed row attend only to themselves (no all-masked row: a NaN
    there would reach the gradient through 0 * NaN). Only completion positions reach the chunked head
    (logits_to_keep as an index tensor). Positions past a row's completion are 0 in the result, as the
    padded path's are masked out by the completion mask."""
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    flash = impl.startswith("flash")
    if not (flash or impl in ("sdpa", "eager")):
        return token_logprobs(model, input_ids, attention_mask, n_completion_tokens, temperature,
                              chunk_tokens, chunk_bytes)
    B, T = input_ids.shape
    L = n_completion_tokens
    dev = input_ids.device
    keep = attention_mask.bool()                                         # (B, T)
    lens = keep.sum(1).tolist()                                          # real tokens per row
    comp = keep[:, T - L:].sum(1).tolist()                               # completion tokens per row
    assert all(c >= 1 and n > c for n, c in zip(lens, comp)), "every row needs a prompt and a completion"
    where, rows, R = pack_rows(lens, model.config.hidden_size, flash)
    ids = torch.zeros(rows, R, dtype=input_ids.dtype, device=dev)      # (B', R)
    pos = torch.zeros(rows, R, dtype=torch.long, device=dev)
    seg = torch.full((rows, R), -1, dtype=torch.long, device=dev)      # sequence id per slot, -1: leftover
    kept, targets, out_at = [], [], []
    for i, ((r, o), n, c) in enumerate(zip(where, lens, comp)):
        ids[r, o:o + n] = input_ids[i][keep[i]]
        pos[r, o:o + n] = torch.arange(n, device=dev)
        seg[r, o:o + n] = i
        p = n - c                                                        # real prompt tokens
        kept.append(r * R + o + p - 1 + torch.arange(c, device=dev))     # the hidden states predicting them
        targets.append(ids[r, o + p:o + n])
        out_at.append(i * L + torch.arange(c, device=dev))
    kept, targets, out_at = torch.cat(kept), torch.cat(targets), torch.cat(out_at)
    if flash:
        mask = None
    else:
        j = torch.arange(R, device=dev)
        same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)
        mask = (same & (j[:, None] >= j[None, :])) | torch.eye(R, dtype=torch.bool, device=dev)  # (B', R, R)
        mask = mask[:, None]
        if impl == "eager":  # the eager kernels add the mask: 0 where allowed, the dtype's minimum elsewhere
            dt = model.get_input_embeddings().weight.dtype
            if torch.is_autocast_enabled(dev.type):
                dt = torch.get_autocast_dtype(dev.type)
            mask = torch.zeros(mask.shape, dtype=dt, device=dev).masked_fill(~mask, torch.finfo(dt).min)
    name = _head_name(model)
    head = getattr(model, name)
    if chunk_tokens is None:
        chunk_tokens = max(1, chunk_bytes // (4 * head.out_features))
    # the stand-in head picks the M completion-predicting hidden states out of the (B', R) packed batch
    setattr(model, name, _LogprobHead(head, targets[None], temperature, chunk_tokens, index=kept))
    try:
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=0,
                    use_cache=False).logits                                 # (1, M, 2)
    finally:
        setattr(model, name, head)
    res = out.new_zeros(B * L, 2).index_copy(0, out_at, out[0]).view(B, L, 2)
    return res[..., 0], res[..., 1].detach()


# ----------------------------------------------------------------------------- loss

def grpo_loss(logp, old_logp, ref_logp, advantages, mask, clip_low=0.2, clip_high=0.2,
              beta=0.0, agg="token-mean", denom=None):
    """The clipped GRPO surrogate (+ beta * k3 KL), aggregated over completion tokens.

    logp (B, L) with grad; old_logp (B, L) the sampling policy; ref_logp (B, L) or None (needed
    only when beta > 0, used for the KL metric whenever given); advantages (B,); mask (B, L)
    1 for completion tokens up to and including the first EOS.
    denom: normaliser for the sum over this micro-batch (tokens of the whole step for
    token-mean, sequences for seq-mean, sequences * max length for dr-grpo); None = this batch's.
    Returns (loss, metrics) with metrics = {clip_frac, kl, kl_max, tokens} as python floats.
    """
    assert agg in ("token-mean", "seq-mean", "dr-grpo"), f"unknown agg {agg!r}"
    assert beta == 0 or ref_logp is not None, "beta > 0 needs ref_logp"
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype)[:, None]                        # (B, 1)
    ratio = torch.exp(logp - old_logp)                              # (B, L)
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high)
    per_token = -torch.min(ratio * adv, clipped * adv)              # (B, L)
    kl = None
    if ref_logp is not None:
        d = (ref_logp - logp).clamp(-10, 10)
        kl = torch.exp(d) - d - 1                                   # (B, L) k3, >= 0
        if beta > 0:
            per_token = per_token + beta * kl

    if agg == "seq-mean":
        per_seq = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)
        loss = per_seq.sum() / (denom if denom is not None else logp.shape[0])
    else:
        default = mask.sum().clamp(min=1) if agg == "token-mean" else mask.numel()
        loss = (per_token * mask).sum() / (denom if denom is not None else default)

    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        # the clip is active where the clipped term is the smaller (taken) one and differs
        active = ((ratio > 1 + clip_high) & (adv > 0)) | ((ratio < 1 - clip_low) & (adv < 0))
        metrics = {"clip_frac": float((active * mask).sum() / n), "tokens": float(mask.sum())}
        if kl is not None:
            metrics["kl"] = float((kl * mask).sum() / n)
            metrics["kl_max"] = float((kl * mask).max()) if mask.any() else 0.0
    return loss, metrics


# ----------------------------------------------------------------------------- sampling

_M32 = 0xFFFFFFFF


def _mix32(x):
    """A 32-bit integer hash (the 'lowbias32' shape with constants from Wellons' hash prospector),
    on python ints or on int64 tensors holding values in [0, 2^32). Both multipliers are < 2^31, so
    no product leaves int64's range."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _M32
    return x ^ (x >> 15)


def sample_key(*parts):
    """A 32-bit sampling key from non-negative ints, e.g. sample_key(seed, step, row)."""
    h = 0x3243F6A8
    for p in parts:
        assert p >= 0, "sampling key parts must be non-negative ints"
        while True:  # every 32-bit limb of an arbitrarily large int
            h = _mix32(h ^ _mix32((p & _M32) ^ 0x9E3779B9))
            p >>= 32
            if not p:
                break
    return h


def gumbel_noise(keys, position, vocab):
    """(B, V) float64 standard Gumbel noise, a pure function of (key, position, token id).
    keys: (B,) int64 tensor of sample_key values; position: the index of the token being drawn, an int
    or a (B,) int64 tensor (one per row: rollout.py's slots are at different positions)."""
    v = torch.arange(vocab, device=keys.device)
    pos = position if torch.is_tensor(position) else torch.full_like(keys, position)
    k1 = _mix32(keys ^ _mix32((2 * pos) & _M32))                                  # (B,)
    k2 = _mix32(keys ^ _mix32((2 * pos + 1) & _M32))
    hi, lo = _mix32(k1[:, None] ^ v), _mix32(k2[:, None] ^ v)                     # (B, V), 32 bits each
    u = (((hi << 20) | (lo >> 12)).double() + 0.5) / 2.0 ** 52                    # (0, 1), never 0 or 1
    return -torch.log(-torch.log(u))


def top_p_filter(logits, top_p):
    """logits (B, V) -> logits with -inf outside the smallest top-probability set whose mass reaches
    top_p (always at least the most likely token)."""
    if top_p >= 1.0:
        return logits
    probs, order = torch.softmax(logits, -1).sort(-1, descending=True)
    drop_sorted = probs.cumsum(-1) - probs >= top_p                                 # mass before it
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


class _Sampler:
    """A logits processor that draws the next token itself: Gumbel-max on logits / T (top-p first),
    and records the log-probability of the drawn token under that distribution. It returns scores
    whose argmax is the draw, so generate() runs in greedy mode and applies nothing else."""

    def __init__(self, keys, prompt_len, temperature, top_p, greedy):
        self.keys, self.prompt_len, self.t, self.top_p, self.greedy = keys, prompt_len, temperature, top_p, greedy
        self.logps = []                                                             # per position: (B,)

    def __call__(self, input_ids, scores):
        z = top_p_filter(scores.float() / (1.0 if self.greedy else self.t), 1.0 if self.greedy else self.top_p)
        if self.greedy:
            out = z
        else:
            out = z.double() + gumbel_noise(self.keys, input_ids.shape[1] - self.prompt_len, z.shape[-1])
        pick = out.argmax(-1)
        self.logps.append(torch.log_softmax(z, -1).gather(-1, pick[:, None]).squeeze(-1))
        return out


# ----------------------------------------------------------------------------- rollouts

def completion_mask(completion_ids, eos_ids):
    """completion_ids (B, L) -> (mask (B, L) float, truncated (B,) bool).

    mask is 1 up to and including the first EOS; a row with no EOS is truncated (mask all 1).
    """
    is_eos = torch.zeros_like(completion_ids, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= completion_ids == e
    seen_before = is_eos.long().cumsum(1) - is_eos.long()           # EOS strictly before position
    mask = (seen_before == 0).float()
    truncated = ~is_eos.any(1)
    return mask, truncated


def eos_ids_of(model, tokenizer):
    """The set of token ids that end a completion (generation config first, then tokenizer)."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos)
    assert eos, "the tokenizer/model defines no EOS token"
    return eos


def _generate_chunk(model, prompt_ids, keys, eos, pad, temperature, top_p, max_new_tokens, greedy, synced_gpus):
    """One model.generate call on a list of token-id prompts. -> (prompt ids (b, P) left padded,
    prompt mask, completion ids (b, L), sampler log-probs (b, L))."""
    from transformers import GenerationConfig, LogitsProcessorList
    device = next(model.parameters()).device
    P = max(map(len, prompt_ids))
    ids = torch.tensor([[pad] * (P - len(p)) + list(p) for p in prompt_ids], device=device)   # (b, P)
    attn = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompt_ids], device=device)
    sampler = _Sampler(torch.tensor(keys, dtype=torch.long, device=device), P, temperature, top_p, greedy)
    # Only token ids and our own settings: no sampling field of the checkpoint survives (module docstring).
    clean = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=model.generation_config.bos_token_id,
                             do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, repetition_penalty=1.0,
                             no_repeat_ngram_size=0, min_new_tokens=0)
    saved, model.generation_config = model.generation_config, clean
    try:
        out = model.generate(input_ids=ids, attention_mask=attn, generation_config=clean,
                             logits_processor=LogitsProcessorList([sampler]), synced_gpus=synced_gpus)
    finally:
        model.generation_config = saved
    completion = out[:, P:]                                                       # (b, L)
    L = completion.shape[1]
    logps = torch.stack(sampler.logps[:L], 1) if L else torch.zeros(len(keys), 0, device=device)
    return ids, attn, completion, logps


@torch.no_grad()
def generate(model, tokenizer, prompts, n=1, temperature=1.0, max_new_tokens=64, greedy=False, top_p=1.0,
             keys=None, seed=0, batch_size=None, synced_gpus=False):
    """Sample n completions per prompt (rows grouped by prompt: p0 x n, p1 x n, ...).

    prompts: strings (tokenized here, no special tokens added) or lists of token ids.
    keys: one sampling key per completion (sample_key(...)); default sample_key(seed, row).
    batch_size: completions per model.generate call (default all): with counter-based keys the
    samples do not depend on it (module docstring), only the peak memory does.
    Left padding + KV cache; the token is drawn by _Sampler from softmax(logits / T), the
    distribution token_logprobs scores.
    Returns a dict: input_ids (B, T) prompt+completion (prompts left-padded, completions right-
    padded, so every completion starts at column T - L), attention_mask (B, T) (0 on padding and
    after the first EOS), n_completion (L), mask (B, L), truncated (B,), logprobs (B, L) fp32 (the
    sampler's log-probabilities of its tokens; meaningful where mask is 1), texts (decoded
    completions up to the first EOS, special tokens removed).
    """
    prompts = list(prompts)
    if prompts and isinstance(prompts[0], str):
        prompts = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    rows = [p for p in prompts for _ in range(n)]
    B = len(rows)
    keys = [sample_key(seed, i) for i in range(B)] if keys is None else list(keys)
    assert len(keys) == B, "one sampling key per completion"
    eos = eos_ids_of(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    step = B if batch_size is None else batch_size
    was_training = model.training
    model.eval()
    try:
        chunks = [_generate_chunk(model, rows[i:i + step], keys[i:i + step], eos, pad, temperature, top_p,
                                  max_new_tokens, greedy, synced_gpus) for i in range(0, B, step)]
    finally:
        model.train(was_training)
    # one (B, P + L) batch: prompts flush right at column P, completions right-padded to L
    P = max(c[0].shape[1] for c in chunks)
    L = max(c[2].shape[1] for c in chunks)
    cat = lambda i, width, fill, left: torch.cat([F.pad(c[i], (width - c[i].shape[1], 0) if left else
                                                        (0, width - c[i].shape[1]), value=fill) for c in chunks])
    out = assemble(cat(0, P, pad, True), cat(1, P, 0, True), cat(2, L, pad, False), cat(3, L, 0.0, False).float(),
                   eos, pad, tokenizer)
    if L and any(c[2].shape[1] < L for c in chunks):   # a short chunk ended on EOS: its padding is no truncation
        short = torch.cat([torch.full((c[2].shape[0],), c[2].shape[1] < L) for c in chunks])
        assert not (out["truncated"].cpu() & short).any(), "a chunk stopped early without EOS"
    return out


def assemble(prompt_ids, prompt_attn, completion, logprobs, eos, pad, tokenizer):
    """The result dict of generate (and rollout.generate) from prompt ids / mask (B, P) left-padded,
    completion ids (B, L) right-padded with pad, and their sampler log-probs (B, L) fp32."""
    mask, truncated = completion_mask(completion, eos)
    texts = tokenizer.batch_decode(torch.where(mask.bool(), completion, pad), skip_special_tokens=True)
    return {"input_ids": torch.cat([prompt_ids, completion], 1),
            "attention_mask": torch.cat([prompt_attn, mask.long()], 1), "n_completion": completion.shape[1],
            "mask": mask, "truncated": truncated, "logprobs": logprobs, "texts": texts}


def evaluate(model, tokenizer, prompts, golds, grade, batch_size=256, max_new_tokens=64, count=None,
             synced_gpus=False, generate=None):
    """Greedy accuracy: fraction of prompts whose completion grade(text, gold) rewards 1.
    A truncated completion counts as no answer. count: only the first `count` prompts are scored
    (the rest pad the batches of a sharded model, whose generate calls every process must join).
    generate: the sampler (default this module's generate; train.py may pass rollout.generate).
    Returns (accuracy, list of completion texts)."""
    count = len(prompts) if count is None else count
    correct, texts = 0, []
    for i in range(0, len(prompts), batch_size):
        r = (generate or _generate)(model, tokenizer, prompts[i:i + batch_size], greedy=True,
                     max_new_tokens=max_new_tokens, synced_gpus=synced_gpus)
        for text, gold, trunc in zip(r["texts"], golds[i:i + batch_size], r["truncated"].tolist()):
            if len(texts) < count:
                correct += (not trunc) and grade(text, gold).reward == 1.0
            texts.append(text)
    return correct / max(1, count), texts[:count]


_generate = generate  # evaluate's default sampler (its own argument shadows the name)
