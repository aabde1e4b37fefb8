"""Fast exact rollouts: a static-KV-cache decode loop with refilled slots, one compiled step per token.

    import rollout
    with geora.frozen_factors(model):
        out = rollout.generate(model, tokenizer, prompts, n=8, keys=keys, batch_size=64)   # = grpo.generate's dict

train.py and eval.py use it with `--rollout-engine compiled` (the default on CUDA); `python bench.py --parts
rollout` measures it against grpo.generate side by side. It returns what grpo.generate returns, for the same
keys the same tokens: same sampler (keyed Gumbel-max on logits / T, top-p first), same fp32 adapter branch
(the GeoRA/LoRA layers are the model's own modules, called as they are), same completion mask.

Choices, stated once:
- Our own decode loop, not model.generate. It calls the model's own modules (embedding, each decoder layer's
  norms, projections, rotary embedding and MLP, the final norm, the LM head) around a preallocated per-layer
  K/V cache of S slots x T positions. Owning the loop is what lets a finished row's slot take the next
  completion at once (below), which transformers' StaticCache (one cache position shared by the batch) can
  not. It supports the Llama-shaped decoders (Qwen2/Qwen2.5/Qwen3, Llama, Mistral without sliding window);
  anything else, and FSDP (`synced_gpus`, whose per-layer hooks expect the whole forward), falls back to
  grpo.generate with one warning.
- Compiled with torch.compile; on CUDA in mode "reduce-overhead", i.e. CUDA graphs through torch's own
  cudagraph trees rather than a hand-held torch.cuda.CUDAGraph: the adapter factors of geora.frozen_factors
  are new tensors every rollout and the graphs must read them, which cudagraph trees handle (non-static
  inputs are copied into the graph's buffers) and a hand-captured graph would silently not. The KV cache is
  marked as a static address, so the graph writes it in place, and is kept on the model between calls.
  Prefill stays eager (one call per refill, variable length). If compiling fails, the same step runs
  uncompiled (still exact) after one warning.
- The sampled token and its log-probability are computed inside the step: Gumbel-max over the whole
  vocabulary is pure tensor arithmetic (grpo.gumbel_noise with a per-row position), fused by the compiler.
- Fixed shapes: S = min(batch_size, completions) slots and a cache of T = prompt + max_new_tokens +
  check_every positions (rounded up to 64); attention reads only the first Tb positions, Tb the smallest
  power of two >= 256 that covers every live row. A run compiles a few graphs (one per (slots, Tb) pair),
  not one per step. "Are rows finished" is read on the host once every `check_every` steps (one sync).
- Long tails: a slot whose completion ended is refilled with the next pending completion at the next check
  (its prompt prefilled into that slot), so a chunk never waits for its longest row while others remain.
  Once nothing is pending and at most a quarter of the slots are live, the live rows are compacted into
  the first slots and the step runs on the smaller batch (slots a power of two, at least 8). A row that
  ends between checks wastes at most check_every - 1 steps. `stats` (a dict) receives decode_steps,
  slot_steps, useful (tokens kept) and compile_s, so the waste is measured: bench.py reports it.
- Exactness: the same keyed draw on the same logits gives the same token; the logits differ from the
  eager path only by kernel rounding (right-padded prefill and a masked cache instead of left padding),
  ~1e-6 in fp32, where a draw flips practically never (tested equal on CPU in fp32, test_rollout.py). The
  scored policy stays grpo.token_logprobs whatever the sampler's kernels do.
"""
import math
import sys
import time
import warnings
from types import SimpleNamespace

import torch
import torch.nn.functional as F

import grpo

DECODERS = ("qwen2", "qwen3", "llama", "mistral")
MIN_SLOTS = 8


# ----------------------------------------------------------------------------- the model's parts

def unsupported(model, synced_gpus=False):
    """Why this engine can't sample `model` (a string), or None."""
    if synced_gpus:
        return "a sharded (FSDP) model"
    cfg = model.config
    if cfg.model_type not in DECODERS:
        return f"model_type {cfg.model_type!r} (supported: {', '.join(DECODERS)})"
    if getattr(cfg, "use_sliding_window", False) or (cfg.model_type == "mistral" and cfg.sliding_window):
        return "sliding-window attention"
    inner = getattr(model, "model", None)
    if inner is None or not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return "not a Llama-shaped decoder"
    return None


def _parts(model):
    """The modules the loop calls, found once per model."""
    inner, attn0 = model.model, model.model.layers[0].self_attn
    return SimpleNamespace(
        embed=inner.embed_tokens, layers=list(inner.layers), norm=inner.norm, rotary=inner.rotary_emb,
        head=model.get_output_embeddings(), rope=sys.modules[type(attn0).__module__].apply_rotary_pos_emb,
        head_dim=attn0.head_dim, n_kv=model.config.num_key_value_heads, scaling=attn0.scaling)


def _qkv(attn, h, cos, sin, m):
    """h (b, L, H) -> q (b, Hq, L, D), k, v (b, Hkv, L, D), rotary applied (as the model's attention does)."""
    shape = (*h.shape[:2], -1, m.head_dim)
    q, k, v = attn.q_proj(h).view(shape), attn.k_proj(h).view(shape), attn.v_proj(h).view(shape)
    if hasattr(attn, "q_norm"):                                      # Qwen3: per-head RMSNorm before rotary
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = m.rope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    return q, k, v.transpose(1, 2)


def _block(layer, x, attend, cos, sin, m):
    """One decoder layer around an attention callback attend(q, k, v) -> (b, Hq, L, D)."""
    attn = layer.self_attn
    q, k, v = _qkv(attn, layer.input_layernorm(x), cos, sin, m)
    o = attend(q, k, v).transpose(1, 2).reshape(*x.shape[:2], -1)     # (b, L, Hq * D)
    x = x + attn.o_proj(o)
    return x + layer.mlp(layer.post_attention_layernorm(x))


@torch.no_grad()
def _prefill(m, ids, lens, slots, kc, vc):
    """ids (b, P) right-padded prompts of lengths lens (b,): write their K/V into cache rows `slots` (b,)
    at positions [0, P) and return the logits (b, V) fp32 of each prompt's last token."""
    b, P = ids.shape
    pos = torch.arange(P, device=ids.device).expand(b, P)             # (b, P): right padding, no offset
    x = m.embed(ids)
    cos, sin = m.rotary(x, pos)
    j = torch.arange(P, device=ids.device)
    mask = ((j[None, :] <= j[:, None])[None] & (j < lens[:, None])[:, None, :])[:, None]  # (b, 1, P, P)

    def attend(q, k, v, layer_i):
        kc[layer_i][slots, :, :P] = k.to(kc[layer_i].dtype)
        vc[layer_i][slots, :, :P] = v.to(vc[layer_i].dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=m.scaling, enable_gqa=True)

    for i, layer in enumerate(m.layers):
        x = _block(layer, x, lambda q, k, v: attend(q, k, v, i), cos, sin, m)
    last = m.norm(x)[torch.arange(b, device=ids.device), lens - 1]    # (b, H)
    return m.head(last).float()


def _draw(logits, keys, t, temperature, top_p, greedy):
    """logits (s, V) fp32, keys (s,), t (s,) the index of the token being drawn -> token (s,), its log-prob (s,).
    Exactly grpo._Sampler's arithmetic, with a position per row."""
    z = grpo.top_p_filter(logits / (1.0 if greedy else temperature), 1.0 if greedy else top_p)
    out = z if greedy else z.double() + grpo.gumbel_noise(keys, t, z.shape[-1])
    pick = out.argmax(-1)
    return pick, torch.log_softmax(z, -1).gather(-1, pick[:, None]).squeeze(-1)


def _step(m, tok, pos, t, keys, kc, vc, Tb, temperature, top_p, greedy):
    """One token for each of s = tok.shape[0] slots: tok (s,) at positions pos (s,) enter the cache, the next
    token (index t) is drawn. Reads cache positions [0, Tb). -> (next tok, its log-prob, pos + 1, t + 1)."""
    s = tok.shape[0]
    rows = torch.arange(s, device=tok.device)
    x = m.embed(tok[:, None])                                         # (s, 1, H)
    cos, sin = m.rotary(x, pos[:, None])
    mask = (torch.arange(Tb, device=tok.device)[None] <= pos[:, None])[:, None, None]   # (s, 1, 1, Tb)

    def attend(q, k, v, i):
        kc[i][rows, :, pos] = k[:, :, 0].to(kc[i].dtype)             # in place, into the static cache
        vc[i][rows, :, pos] = v[:, :, 0].to(vc[i].dtype)
        return F.scaled_dot_product_attention(q, kc[i][:s, :, :Tb].to(q.dtype), vc[i][:s, :, :Tb].to(q.dtype),
                                              attn_mask=mask, scale=m.scaling, enable_gqa=True)

    for i, layer in enumerate(m.layers):
        x = _block(layer, x, lambda q, k, v: attend(q, k, v, i), cos, sin, m)
    logits = m.head(m.norm(x)[:, 0]).float()                          # (s, V)
    nxt, logp = _draw(logits, keys, t, temperature, top_p, greedy)
    T = kc[0].shape[2]
    return nxt, logp, (pos + 1).clamp(max=T - 1), t + 1               # a finished row may run on: stay inside


# ----------------------------------------------------------------------------- per-model state

def _state(model, compile):
    """The engine's per-model state (parts, compiled step, cache, shapes seen), kept on the model."""
    st = getattr(model, "_rollout_state", None)
    if st is None:
        st = SimpleNamespace(parts=_parts(model), compiled=None, failed=False, cache=None, seen=set())
        model._rollout_state = st                                     # a plain attribute: not saved, not a module
    if compile and st.compiled is None and not st.failed:
        cuda = next(model.parameters()).is_cuda
        # one graph per (slots, attention span) pair and model: more than dynamo's default of 8 per function
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        st.compiled = torch.compile(_step, mode="reduce-overhead" if cuda else None, dynamic=False)
    return st


def _cache(st, S, T, dtype, device):
    """Per-layer K/V buffers (S, Hkv, >= T, D), reused while they are large enough: static addresses for the
    graphs, so a new rollout of the same shape replays them. Only a longer need allocates (and recompiles)."""
    key = (S, dtype, device)
    if st.cache is None or st.cache[0] != key or st.cache[1][0].shape[2] < T:
        st.cache = None                                               # free the old one first
        m = st.parts
        shape = (S, m.n_kv, T, m.head_dim)
        kc = [torch.zeros(shape, dtype=dtype, device=device) for _ in m.layers]
        vc = [torch.zeros(shape, dtype=dtype, device=device) for _ in m.layers]
        for t in kc + vc:
            torch._dynamo.mark_static_address(t)
        st.cache = (key, kc, vc)
        st.seen = set()                                               # new buffers: new graphs
    return st.cache[1], st.cache[2]


def _run_step(st, args, use_compiled, stats):
    """The compiled step where possible; compile time (first call of each shape) counted in stats."""
    if not use_compiled or st.failed:
        return _step(st.parts, *args)
    shape = (args[0].shape[0], args[6])
    if shape in st.seen:
        return st.compiled(st.parts, *args)
    t0 = time.perf_counter()
    try:
        out = st.compiled(st.parts, *args)
    except Exception as e:                                            # noqa: BLE001 - any compiler failure
        st.failed = True
        warnings.warn(f"rollout: torch.compile failed ({type(e).__name__}: {str(e)[:200]}); "
                      f"sampling with the uncompiled step (same tokens, slower)")
        return _step(st.parts, *args)
    if args[0].is_cuda:
        torch.cuda.synchronize()
    st.seen.add(shape)
    stats["compile_s"] = stats.get("compile_s", 0.0) + time.perf_counter() - t0
    return out


def _bucket(n, least=256):
    """The power of two >= n, at least `least`: cache lengths and attention spans come in a few sizes."""
    return max(least, 1 << (n - 1).bit_length())


# ----------------------------------------------------------------------------- generate

@torch.no_grad()
def generate(model, tokenizer, prompts, n=1, temperature=1.0, max_new_tokens=64, greedy=False, top_p=1.0,
             keys=None, seed=0, batch_size=None, synced_gpus=False, compile=True, check_every=8, stats=None):
    """grpo.generate's arguments and result (read its docstring); batch_size = number of slots.
    compile=False runs the same loop uncompiled. stats: a dict to receive the loop's counters."""
    stats = {} if stats is None else stats
    why = unsupported(model, synced_gpus)
    if why:
        warnings.warn(f"rollout: the compiled engine does not support {why}; using grpo.generate")
        return grpo.generate(model, tokenizer, prompts, n=n, temperature=temperature, max_new_tokens=max_new_tokens,
                             greedy=greedy, top_p=top_p, keys=keys, seed=seed, batch_size=batch_size,
                             synced_gpus=synced_gpus)
    assert max_new_tokens >= 1 and check_every >= 1
    prompts = list(prompts)
    if prompts and isinstance(prompts[0], str):
        prompts = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    rows = [list(p) for p in prompts for _ in range(n)]
    B = len(rows)
    keys = [grpo.sample_key(seed, i) for i in range(B)] if keys is None else list(keys)
    assert len(keys) == B, "one sampling key per completion"
    eos = grpo.eos_ids_of(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    device = next(model.parameters()).device
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) \
        else model.get_input_embeddings().weight.dtype
    was_training = model.training
    model.eval()
    try:
        comp, lps = _decode_all(model, rows, keys, eos, min(B, batch_size or B), max_new_tokens, temperature,
                                top_p, greedy, compile, check_every, dtype, device, stats)
    finally:
        model.train(was_training)
    # the same (B, P + L) layout as grpo.generate: prompts flush right at column P, completions right-padded
    P, L = max(map(len, rows)), max(map(len, comp))
    ids = torch.tensor([[pad] * (P - len(p)) + p for p in rows], device=device)
    attn = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in rows], device=device)
    completion = torch.tensor([c + [pad] * (L - len(c)) for c in comp], device=device)
    logprobs = torch.tensor([lp + [0.0] * (L - len(lp)) for lp in lps], device=device, dtype=torch.float32)
    return grpo.assemble(ids, attn, completion, logprobs, eos, pad, tokenizer)


def warm_up(model, tokenizer, slots, prompt_tokens, max_new_tokens, stats, temperature=1.0, check_every=8):
    """Compile (and on CUDA capture) the sampling step for `slots` rows with prompts of up to prompt_tokens tokens
    before the first real rollout, so its time is reported apart: adds compile_s to stats. The first shape only."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else grpo.eos_ids_of(model, tokenizer)[0]
    eos = grpo.eos_ids_of(model, tokenizer)
    filler = next(i for i in range(model.config.vocab_size) if i not in eos and i != pad)
    st = _state(model, True)
    device = next(model.parameters()).device
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) \
        else model.get_input_embeddings().weight.dtype
    # the cache the real rollouts will use (same length bucket), so its graphs are the ones captured here
    kc, vc = _cache(st, slots, _bucket(prompt_tokens, 64) + max_new_tokens + check_every, dtype, device)
    s = torch.zeros(slots, dtype=torch.long, device=device)
    tok, pos = s + filler, s + prompt_tokens
    Tb = min(kc[0].shape[2], _bucket(prompt_tokens + check_every + 1))
    _run_step(st, (tok, pos, s + 1, s, kc, vc, Tb, temperature, 1.0, False), True, stats)
    return stats


def _decode_all(model, rows, keys, eos, S, max_new, temperature, top_p, greedy, compile, k, dtype, device, stats):
    """Run every row through S slots. -> (completion token lists, their log-prob lists), one per row."""
    st = _state(model, compile)
    m, eos = st.parts, set(eos)
    kc, vc = _cache(st, S, _bucket(max(map(len, rows)), 64) + max_new + k, dtype, device)
    T = kc[0].shape[2]
    comp, lps = [[] for _ in rows], [[] for _ in rows]
    pending = list(range(len(rows)))[::-1]                            # pop() takes the next row
    slot_row = [-1] * S                                               # -1: idle
    slot_pos = [0] * S                                                # host copy of pos, for Tb
    tok = torch.zeros(S, dtype=torch.long, device=device)
    pos, t, key_t = torch.zeros_like(tok), torch.zeros_like(tok), torch.zeros_like(tok)

    def take(r, token, lp):                                           # -> True when row r is finished
        comp[r].append(token)
        lps[r].append(lp)
        return token in eos or len(comp[r]) >= max_new

    def refill(free):
        """Prefill the next pending rows into the free slots; their first token is drawn here."""
        nonlocal tok, pos, t, key_t
        while free and pending:
            slots = [free.pop(0) for _ in range(min(len(free), len(pending)))]
            new = [pending.pop() for _ in slots]
            lens = torch.tensor([len(rows[r]) for r in new], device=device)
            P = int(lens.max())
            ids = torch.tensor([rows[r] + [0] * (P - len(rows[r])) for r in new], device=device)
            sl = torch.tensor(slots, device=device)
            kv = torch.tensor([keys[r] for r in new], dtype=torch.long, device=device)
            first, lp = _draw(_prefill(m, ids, lens, sl, kc, vc), kv, torch.zeros_like(kv), temperature, top_p, greedy)
            tok, pos, t, key_t = (x.clone().index_copy_(0, sl, y) for x, y in
                                  ((tok, first), (pos, lens), (t, torch.ones_like(kv)), (key_t, kv)))
            for s, r, a, b in zip(slots, new, first.tolist(), lp.tolist()):
                done = take(r, a, b)
                slot_row[s], slot_pos[s] = (-1 if done else r), len(rows[r])
                if done:
                    free.append(s)                                    # ended on its first token: next row

    refill(list(range(S)))
    S_cur = S
    while any(r >= 0 for r in slot_row):
        Tb = min(T, _bucket(max(slot_pos[s] for s in range(S_cur) if slot_row[s] >= 0) + k + 1))
        toks, lpk = [], []
        for _ in range(k):
            tok, lp, pos, t = (x.clone() for x in _run_step(st, (tok, pos, t, key_t, kc, vc, Tb, temperature,
                                                                 top_p, greedy), compile, stats))
            toks.append(tok)
            lpk.append(lp)
        stats["decode_steps"] = stats.get("decode_steps", 0) + k
        stats["slot_steps"] = stats.get("slot_steps", 0) + k * S_cur
        toks, lpk = torch.stack(toks, 1).tolist(), torch.stack(lpk, 1).tolist()   # (S_cur, k): one sync
        free = []
        for s in range(S_cur):
            slot_pos[s] += k
            r = slot_row[s]
            if r < 0:
                free.append(s)
                continue
            for a, b in zip(toks[s], lpk[s]):
                if take(r, a, b):
                    slot_row[s] = -1
                    free.append(s)
                    break
        if pending:
            refill(free)
        else:
            live = [s for s in range(S_cur) if slot_row[s] >= 0]
            if live and len(live) <= S_cur // 4 and S_cur > MIN_SLOTS:
                S_new = max(MIN_SLOTS, 1 << (len(live) - 1).bit_length())
                idx = torch.tensor(live + [live[0]] * (S_new - len(live)), device=device)   # pad: repeat a row
                for c in kc + vc:
                    c[:S_new] = c.index_select(0, idx)
                tok, pos, t, key_t = (x.index_select(0, idx) for x in (tok, pos, t, key_t))
                slot_row = [slot_row[s] for s in live] + [-1] * (S - len(live))
                slot_pos = [slot_pos[s] for s in idx.tolist()] + [0] * (S - S_new)
                S_cur = S_new
    stats["useful"] = stats.get("useful", 0) + sum(len(c) for c in comp) - len(rows)   # first tokens: prefill
    return comp, lps
