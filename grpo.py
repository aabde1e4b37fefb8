"""GRPO, compactly: group advantages, per-token log-probs, the clipped loss, and rollouts.

Used by train.py (the training loop) and tiny.py (greedy evaluation while building the tiny
world). Nothing here knows about datasets or adapters; every function works on plain tensors
or on any Hugging Face causal LM.

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
- Log-probs use logits / temperature: the distribution the samples came from.
- Completion mask: tokens up to and including the first EOS (the model must learn to stop);
  a completion with no EOS within max_new_tokens is flagged truncated.
"""

import torch
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

def _chunk_logp(logits, targets, temperature):
    """logits (n, V) any dtype, targets (n,) -> (log p(target), entropy), both fp32 (n,)."""
    z = logits.float() / temperature                                # (n, V) fp32, one chunk only
    lse = torch.logsumexp(z, dim=-1)                                # (n,)
    logp = z.gather(-1, targets[:, None]).squeeze(-1) - lse
    with torch.no_grad():                                           # entropy is only logged
        p = torch.softmax(z, dim=-1)
        entropy = lse - (p * z).sum(-1)
    return logp, entropy


def token_logprobs(model, input_ids, attention_mask, n_completion_tokens, temperature=1.0,
                   chunk_tokens=4096):
    """Log-probs of the last n_completion_tokens tokens of each row, under logits / temperature.

    input_ids, attention_mask: (B, T) prompt + completion, prompts left-padded so every
    completion starts at column T - L with L = n_completion_tokens.
    Returns (logp, entropy), each (B, L) fp32; entropy is detached.
    The lm_head runs only on the L positions that predict completion tokens (logits_to_keep),
    and the fp32 softmax is computed chunk by chunk; under autograd each chunk is
    checkpointed, so backward also holds one fp32 chunk at a time, never (B, L, V).
    """
    B, T = input_ids.shape
    L = n_completion_tokens
    assert 0 < L < T, "need at least one prompt token before the completion"
    # Left padding: positions must count real tokens only, exactly as generate() numbers them.
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                logits_to_keep=L + 1, use_cache=False)
    logits = out.logits[:, :-1, :]                                  # (B, L, V) predicts tokens T-L..T-1
    targets = input_ids[:, T - L:]                                  # (B, L)
    flat_logits = logits.reshape(B * L, -1)
    flat_targets = targets.reshape(B * L)
    logps, ents = [], []
    for i in range(0, B * L, chunk_tokens):
        lg, tg = flat_logits[i:i + chunk_tokens], flat_targets[i:i + chunk_tokens]
        if lg.requires_grad:
            lp, en = checkpoint(_chunk_logp, lg, tg, temperature, use_reentrant=False)
        else:
            lp, en = _chunk_logp(lg, tg, temperature)
        logps.append(lp)
        ents.append(en)
    return torch.cat(logps).view(B, L), torch.cat(ents).view(B, L).detach()


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


@torch.no_grad()
def generate(model, tokenizer, prompts, n=1, temperature=1.0, max_new_tokens=64, greedy=False):
    """Sample n completions per prompt (rows grouped by prompt: p0 x n, p1 x n, ...).

    Left padding + KV cache through model.generate; top_k=0 and top_p=1 so sampling is the
    plain temperature-T policy that token_logprobs scores (generate's default top_k=50 is not).
    Returns a dict: input_ids (B, T) prompt+completion padded, attention_mask (B, T) (0 on left
    padding and after the first EOS), n_completion (L), mask (B, L), truncated (B,), texts
    (decoded completions up to the first EOS, special tokens removed).
    """
    assert tokenizer.padding_side == "left", "generation needs a left-padding tokenizer"
    device = next(model.parameters()).device
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    ids = enc["input_ids"].repeat_interleave(n, 0).to(device)       # (B, P)
    attn = enc["attention_mask"].repeat_interleave(n, 0).to(device)
    eos = eos_ids_of(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    kw = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature,
                                                   top_k=0, top_p=1.0)
    was_training = model.training
    model.eval()
    out = model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=max_new_tokens,
                         eos_token_id=eos, pad_token_id=pad, **kw)
    model.train(was_training)
    completion = out[:, ids.shape[1]:]                              # (B, L)
    mask, truncated = completion_mask(completion, eos)
    texts = tokenizer.batch_decode(completion * mask.long() + pad * (1 - mask.long()),
                                   skip_special_tokens=True)
    return {"input_ids": out, "attention_mask": torch.cat([attn, mask.long()], 1),
            "n_completion": completion.shape[1], "mask": mask, "truncated": truncated,
            "texts": texts}


def evaluate(model, tokenizer, prompts, golds, grade, batch_size=256, max_new_tokens=64):
    """Greedy accuracy: fraction of prompts whose completion grade(text, gold) rewards 1.
    A truncated completion counts as no answer. Returns (accuracy, list of completion texts)."""
    correct, texts = 0, []
    for i in range(0, len(prompts), batch_size):
        r = generate(model, tokenizer, prompts[i:i + batch_size], greedy=True,
                     max_new_tokens=max_new_tokens)
        for text, gold, trunc in zip(r["texts"], golds[i:i + batch_size], r["truncated"].tolist()):
            correct += (not trunc) and grade(text, gold).reward == 1.0
            texts.append(text)
    return correct / max(1, len(prompts)), texts
