"""
GeoRA: Geometry-Aware Low-Rank Adaptation for RLVR (arXiv 2601.09361), in one file.

For each adapted linear weight W (out x in), rank r, sparsity rho:
  1. spectral prior   W_r = best rank-r approximation of W;  M_spec = |W_r| <= q_rho(|W_r|)
  2. Euclidean prior  M_euc = |W| <= q_rho(|W|)
  3. W_geo = W * (M_spec | M_euc)                     (about 35% of entries at rho=0.2 on real weights)
  4. top-r SVD of W_geo:  A0 = sqrt(S_r) Vh_r (r x in),  B0 = U_r sqrt(S_r) (out x r)
  5. h = W_res x + s B A x  with  W_res = W - s B0 A0,  s = alpha / r;  A = A0, B = B0 at init, only A, B train.

Usage (copy this file; it needs torch, and safetensors for save/load):
    import geora
    report = geora.apply_geora(model, rank=16, rho=0.2)   # in place; only adapter A, B stay trainable
    with geora.adapters_disabled(model): ...               # the exact initial policy (RL reference)
    geora.save_adapter(model, "ckpt"); geora.load_adapter(fresh_base, "ckpt")   # load never runs an SVD
    geora.export_peft(model, "peft_dir")                   # a standard PEFT LoRA on the *unmodified* base

Choices the paper leaves open (each is tested in test_geora.py):
- Exactness. W is never rewritten. The forward is h = W x + s dW x with dW = B A - B0 A0, written
  cancellation-free as dW = (B - B0) A + B0 (A - A0) = P Q, P = [B - B0 | B0] (out x 2r), Q = [A ; A - A0]
  (2r x in), and evaluated in fp32. Algebraically this is the paper's W_res x + s B A x, but at init every
  term of P (Q x) is an exact zero, so a bf16 model is reproduced bit for bit. (Storing W_res in bf16, as
  PEFT's PiSSA path does, gave a 17% relative logit error on Qwen2.5-1.5B-Instruct in a public
  reproduction.) The same P, Q serve merge, the PEFT export and the geometry report.
- Reference policy. Under adapters_disabled a layer computes W x: exactly the initial policy, no model copy.
- Quantile. q_rho is the k-th smallest value, k = ceil(rho * numel) (the bottom rho fraction), per weight
  matrix; ties at the threshold are all kept (`<=`). It is exact on any size (torch.quantile refuses more
  than 2^24 elements): a random sample brackets the answer, kthvalue runs on the ~3% of entries inside.
- alpha defaults to r (s = 1). For other alpha S_r is split as S_r / s, so s B0 A0 is the rank-r part, as PEFT
  does for PiSSA. The rank of W_r equals the adapter rank.
- SVDs run in fp32 on the weight's device, one matrix at a time (cuSOLVER has no bf16 SVD). svd="lowrank" is
  a randomized SVD (niter power iterations, no oversampling, like PEFT's pissa_niter_N) whose draws come from
  a per-layer CPU torch.Generator, never the global RNG: the seed fixes A0, B0. It serves top-r factors only;
  milora, geora-tail and geora-random need the whole spectrum and always use the full SVD.
- Targets: the seven projections q,k,v,o,gate,up,down (never embeddings or lm_head) unless `targets` says.
- init: geora (default) | lora (B = 0, A Kaiming, no base change, no frozen copies) | pissa (top-r of W) |
  milora (bottom-r of W) | geora-random (r random singular triplets of W_geo) | geora-tail (bottom-r of W_geo).
  mask: union (default) | spec | euc | intersection.
- Cast the model to its training dtype before apply_geora: A, B, A0, B0 stay fp32 whatever the model's dtype.
- Decoding calls every layer once per token: inside `with geora.frozen_factors(model):` (what train.py and eval.py
  put around sampling) a layer builds P, Q once and reuses them. Explicit rather than a cache keyed on A and B,
  which an edit through .data would not invalidate. A, B, A0, B0 are dense (contiguous) tensors: FSDP2 shards
  only those.
"""

import contextlib
import json
import math
import os
import time
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
INITS = ("geora", "lora", "pissa", "milora", "geora-random", "geora-tail")
MASKS = ("union", "spec", "euc", "intersection")
SVDS = ("full", "lowrank")

# -----------------------------------------------------------------------------
# The method as pure functions on one fp32 matrix


def kth_smallest(x, k, generator=None):
    """Exact k-th smallest (1-based) entry of x. For big tensors: bracket the answer with a random sample,
    then run kthvalue on the entries inside the bracket only (about 3% of them at rho = 0.2)."""
    x = x.reshape(-1)
    n = x.numel()
    assert 1 <= k <= n
    if n <= 1 << 20:
        return x.kthvalue(k).values
    m = 1 << 14
    sample = x[torch.randint(n, (m,), generator=generator).to(x.device)].sort().values
    p = k / n
    margin = 5 * math.sqrt(p * (1 - p) / m) + 2 / m  # 5 sigma of the sample quantile's spread
    lo = sample[max(0, math.floor((p - margin) * m))]
    hi = sample[min(m - 1, math.ceil((p + margin) * m))]
    keep = x >= lo
    n_below = n - int(torch.count_nonzero(keep))  # count_nonzero: a bool .sum() would widen to int64 first
    inside = x[keep.logical_and_(x <= hi)]
    if n_below < k <= n_below + inside.numel():
        return inside.kthvalue(k - n_below).values
    return x.kthvalue(k).values  # the sample missed (probability ~1e-6): exact fallback


def low_magnitude_mask(x, rho, generator=None, out=None):
    """True where |x| is in the bottom rho fraction: |x| <= q_rho(|x|), q_rho the ceil(rho*n)-th smallest.
    out: a buffer shaped like x that receives |x| (may be x itself)."""
    a = x.abs() if out is None else torch.abs(x, out=out)
    k = max(1, math.ceil(rho * a.numel()))
    return a <= kth_smallest(a, k, generator)


def svd_top(W, r, svd="full", niter=4, generator=None):
    """Top-r singular triplets of W: U (out x r), S (r,), Vh (r x in). lowrank: seeded randomized SVD."""
    if svd == "full":
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        return U[:, :r], S[:r], Vh[:r]
    omega = torch.randn(W.shape[1], r, generator=generator).to(W)  # (in, r) drawn on CPU: device-independent
    Q = torch.linalg.qr(W @ omega).Q  # (out, r) basis of the range of W
    for _ in range(niter):  # power iterations sharpen the basis towards the top singular directions
        Q = torch.linalg.qr(W.T @ Q).Q
        Q = torch.linalg.qr(W @ Q).Q
    Ub, S, Vh = torch.linalg.svd(Q.T @ W, full_matrices=False)  # SVD of the small (r, in) projection
    return Q @ Ub, S, Vh


def geora_mask(W, r, rho, mask="union", svd="full", niter=4, generator=None, buf=None):
    """M = M_spec (op) M_euc, a bool matrix the shape of W. buf: a scratch matrix shaped like W, reused for
    W_r, |W_r| and |W| (on CPU a fresh 50 MB tensor costs more in page faults than the pass that fills it)."""
    buf = torch.empty_like(W) if buf is None else buf
    m_spec = m_euc = None
    if mask != "euc":
        U, S, Vh = svd_top(W, r, svd, niter, generator)
        m_spec = low_magnitude_mask(torch.matmul(U * S, Vh, out=buf), rho, generator, out=buf)  # W_r
    if mask != "spec":
        m_euc = low_magnitude_mask(W, rho, generator, out=buf)
    if mask == "spec":
        return m_spec
    if mask == "euc":
        return m_euc
    return m_spec | m_euc if mask == "union" else m_spec & m_euc


def init_factors(W, r, rho=0.2, scale=1.0, init="geora", mask="union", svd="full", niter=4, generator=None,
                 buf=None):
    """(A0 (r x in), B0 (out x r), kept mask fraction) for one fp32 weight W; s * B0 A0 is the chosen rank-r part.
    buf: an optional scratch matrix shaped like W (apply_geora reuses one per shape)."""
    kept = 1.0
    if init in ("pissa", "milora"):
        M = W
    else:  # the geora family decomposes the masked weight
        buf = torch.empty_like(W) if buf is None else buf
        keep = geora_mask(W, r, rho, mask, svd, niter, generator, buf)
        kept = torch.count_nonzero(keep).item() / keep.numel()
        # W_geo, in the scratch buffer (where, not W * keep: a float product would first copy the mask to a fresh
        # fp32 matrix, 25% slower on CPU)
        M = torch.where(keep, W, torch.zeros((), dtype=W.dtype, device=W.device), out=buf)
        del keep
    if init in ("pissa", "geora"):
        U, S, Vh = svd_top(M, r, svd, niter, generator)
    else:  # the bottom or random triplets need the whole spectrum
        U, S, Vh = torch.linalg.svd(M, full_matrices=False)
        if init == "geora-random":
            pick = torch.randperm(S.numel(), generator=generator)[:r].sort().values.to(S.device)
        else:
            pick = torch.arange(S.numel() - r, S.numel(), device=S.device)
        U, S, Vh = U[:, pick], S[pick], Vh[pick]
    root = (S / scale).sqrt()
    return root[:, None] * Vh, U * root, kept


# -----------------------------------------------------------------------------
# The layer


class GeoRALinear(nn.Module):
    """h = W x + s (B A - B0 A0) x. W (the original nn.Linear) and A0, B0 are frozen; A, B train."""

    def __init__(self, base, A0, B0, scale, A=None, B=None):
        super().__init__()
        self.base = base  # nn.Linear, untouched: its weight is the original W in its own dtype
        self.scale = scale
        self.disabled = False
        r, out = A0.shape[0], base.out_features
        assert A0.shape == (r, base.in_features) and (B0 is None or B0.shape == (out, r))
        dense = dict(memory_format=torch.contiguous_format)  # SVD factors come out transposed; FSDP needs dense
        self.A = nn.Parameter((A0 if A is None else A).detach().float().clone(**dense))  # (r, in)
        if B0 is None:  # plain LoRA: B starts at zero, nothing frozen to subtract
            self.B = nn.Parameter(torch.zeros(out, r, device=A0.device) if B is None else B.detach().float().clone())
            self.A0 = self.B0 = None
        else:
            self.B = nn.Parameter((B0 if B is None else B).detach().float().clone(**dense))  # (out, r)
            self.register_buffer("A0", A0.detach().float().clone(**dense))
            self.register_buffer("B0", B0.detach().float().clone(**dense))

    def factors(self):
        """(P (out x 2r), Q (2r x in)) with dW = B A - B0 A0 = P Q, written so that no term cancels.
        Inside frozen_factors(model) they are the ones built on entry (decoding calls every layer once per
        token; the four small kernels that build them need not run each time)."""
        if getattr(self, "_frozen_pq", None) is not None:
            return self._frozen_pq
        if self.A0 is None:
            return self.B, self.A
        return torch.cat([self.B - self.B0, self.B0], 1), torch.cat([self.A, self.A - self.A0], 0)

    def forward(self, x):
        y = self.base(x)
        if self.disabled:
            return y
        with torch.autocast(x.device.type, enabled=False):  # the adapter branch always runs in fp32
            P, Q = self.factors()
            d = F.linear(F.linear(x.to(Q.dtype), Q), P)  # (..., 2r) -> (..., out); exactly 0 at init
        return y + (self.scale * d).to(y.dtype)

    def delta(self):
        """s (B A - B0 A0) in fp32, (out x in)."""
        P, Q = self.factors()
        return self.scale * (P.detach() @ Q.detach())

    def residual(self):
        """W_res = W - s B0 A0 in fp32: the paper's frozen weight (for readers and export)."""
        W = self.base.weight.detach().float()
        return W if self.A0 is None else W - self.scale * (self.B0 @ self.A0)


# -----------------------------------------------------------------------------
# Whole models


def adapted(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, GeoRALinear)]


def _set_module(model, name, module):
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _install(model, new, config):
    """Freeze the whole model, then swap the adapted layers in (their A, B are the only trainable tensors)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in new.items():
        _set_module(model, name, module)
    model.geora_config = config


def _module_seed(seed, name):
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (1 << 62)


def apply_geora(model, rank=16, rho=0.2, alpha=None, targets=None, init="geora", mask="union", svd="full", niter=4,
                seed=0):
    """Adapt every targeted nn.Linear of `model` in place; freeze everything but the adapters. Returns a report.
    Validates everything and computes every factor before touching the model, so a failed call changes nothing."""
    t0 = time.perf_counter()
    alpha = rank if alpha is None else alpha
    targets = tuple(TARGETS if targets is None else ([targets] if isinstance(targets, str) else targets))
    if adapted(model):
        raise ValueError("model already has GeoRA adapters: merge(model) first, or start from a fresh base model")
    if init not in INITS or mask not in MASKS or svd not in SVDS:
        raise ValueError(f"init must be one of {INITS}, mask one of {MASKS}, svd one of {SVDS}; "
                         f"got init={init!r}, mask={mask!r}, svd={svd!r}")
    if not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"rank must be a positive int, got {rank!r}")
    if not 0 < rho <= 1:
        raise ValueError(f"rho must be in (0, 1], got {rho!r} (the paper uses 0.2)")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r} (default: alpha = rank, so the scale is 1)")
    if not isinstance(niter, int) or niter < 0:
        raise ValueError(f"niter must be an int >= 0, got {niter!r}")
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.split(".")[-1] in targets]
    if not found:
        raise ValueError(f"targets {list(targets)} match no nn.Linear in the model; pass module name suffixes "
                         f"such as {list(TARGETS)}")
    for name, lin in found:
        if not lin.weight.dtype.is_floating_point:
            raise ValueError(f"{name} has a {lin.weight.dtype} (quantized?) weight: load the model in "
                             f"bf16/fp16/fp32 before apply_geora; GeoRA needs the float weight for its SVD")
        if rank > min(lin.weight.shape):
            raise ValueError(f"rank {rank} exceeds min(out, in) = {min(lin.weight.shape)} of {name}: lower --rank")
    scale = alpha / rank
    new, kept = {}, []
    # fp32 scratch matrices, one or two per distinct shape, reused layer after layer: a fresh 55 MB buffer per matrix
    # costs more in page faults than the passes that fill it (on a Qwen2.5-1.5B: 21.5 s of init instead of 23.0 s)
    scratch = {}
    for name, lin in found:  # one matrix at a time in fp32: peak extra memory a few times the largest W
        gen = torch.Generator().manual_seed(_module_seed(seed, name))
        if init == "lora":  # PEFT's default LoRA init: Kaiming-uniform A, zero B
            A0 = torch.empty(rank, lin.in_features)
            nn.init.kaiming_uniform_(A0, a=math.sqrt(5), generator=gen)
            new[name] = GeoRALinear(lin, A0.to(lin.weight.device), None, scale)
            continue
        with torch.no_grad():
            def scratch_for(kind, shape=tuple(lin.weight.shape), dev=lin.weight.device):
                if (shape, dev, kind) not in scratch:
                    scratch[shape, dev, kind] = torch.empty(shape, device=dev)
                return scratch[shape, dev, kind]
            buf = scratch_for("buf") if init not in ("pissa", "milora") else None
            W = lin.weight if lin.weight.dtype == torch.float32 else scratch_for("w32").copy_(lin.weight)  # fp32 copy
            A0, B0, frac = init_factors(W, rank, rho, scale, init, mask, svd, niter, gen, buf=buf)
        new[name] = GeoRALinear(lin, A0, B0, scale)
        kept.append(frac)
        del A0, B0, W
    del scratch
    _install(model, new, dict(rank=rank, rho=rho, alpha=alpha, targets=list(targets), init=init, mask=mask, svd=svd,
                              niter=niter, seed=seed))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return dict(modules=len(new), trainable=trainable, total=sum(p.numel() for p in model.parameters()),
                kept_fraction=sum(kept) / len(kept) if kept else 1.0, scale=scale,
                seconds=time.perf_counter() - t0, **model.geora_config)


@contextlib.contextmanager
def adapters_disabled(model):
    """Every GeoRALinear computes W x inside this block: exactly the initial policy (the RL reference)."""
    layers = [m for _, m in adapted(model)]
    before = [m.disabled for m in layers]
    for m in layers:
        m.disabled = True
    try:
        yield model
    finally:
        for m, b in zip(layers, before):
            m.disabled = b


@contextlib.contextmanager
def frozen_factors(model):
    """Inside this block (sampling, evaluation: no update of A, B) every GeoRALinear builds its P, Q once and reuses
    them; the same values, so the same outputs bit for bit. Do not step an optimizer inside it."""
    layers = [m for _, m in adapted(model)]
    with torch.no_grad():
        for m in layers:
            m._frozen_pq = tuple(t.detach() for t in m.factors())
    try:
        yield model
    finally:
        for m in layers:
            m._frozen_pq = None


@torch.no_grad()
def merge(model):
    """Replace each GeoRALinear by a plain nn.Linear holding W + s (B A - B0 A0), summed in fp32, cast once."""
    for name, m in adapted(model):
        lin = m.base
        lin.weight.copy_((lin.weight.float() + m.delta()).to(lin.weight.dtype))
        _set_module(model, name, lin)
    model.__dict__.pop("geora_config", None)
    return model


def _atomic_write(path, write):
    """write(tmp) then rename: a crash leaves the old file or the new one, never half of one."""
    tmp = f"{path}.tmp{os.getpid()}"
    write(tmp)
    os.replace(tmp, path)


def _write_json(path, obj):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
    _atomic_write(path, write)


def save_adapter(model, out_dir):
    """Write A, B, A0, B0 and the config (seed and svd mode included) to out_dir, atomically per file."""
    from safetensors.torch import save_file
    if not adapted(model):
        raise ValueError("model has no GeoRA adapters: call apply_geora(model, ...) first")
    os.makedirs(out_dir, exist_ok=True)
    tensors = {}
    for name, m in adapted(model):
        for key in ("A", "B", "A0", "B0"):
            t = getattr(m, key)
            if t is not None:
                tensors[f"{name}.{key}"] = t.detach().float().cpu().contiguous()
    _atomic_write(os.path.join(out_dir, "geora_adapter.safetensors"), lambda p: save_file(tensors, p))
    config = dict(model.geora_config, modules=[n for n, _ in adapted(model)])
    _write_json(os.path.join(out_dir, "geora_config.json"), config)


def load_adapter(model, out_dir):
    """Put a saved adapter on an unadapted base model, exactly as saved; never runs an SVD."""
    from safetensors.torch import load_file
    path = os.path.join(out_dir, "geora_adapter.safetensors")
    if not os.path.exists(path):
        raise ValueError(f"no geora_adapter.safetensors in {out_dir!r}: pass a directory written by save_adapter")
    if adapted(model):
        raise ValueError("model already has GeoRA adapters: load into a fresh base model")
    with open(os.path.join(out_dir, "geora_config.json")) as f:
        config = json.load(f)
    tensors = load_file(path)
    scale = config["alpha"] / config["rank"]
    new = {}
    for name in config["modules"]:
        try:
            lin = model.get_submodule(name)
        except AttributeError:
            lin = None
        if not isinstance(lin, nn.Linear) or tensors[f"{name}.A"].shape[1] != lin.in_features:
            raise ValueError(f"adapter module {name} does not fit this model: load the base model it was trained on")
        dev = lin.weight.device
        get = lambda k: tensors[f"{name}.{k}"].to(dev) if f"{name}.{k}" in tensors else None
        A0 = get("A0")
        new[name] = GeoRALinear(lin, get("A") if A0 is None else A0, get("B0"), scale, A=get("A"), B=get("B"))
    _install(model, new, {k: v for k, v in config.items() if k != "modules"})
    return model


def export_peft(model, out_dir):
    """A standard PEFT LoRA adapter for the *unmodified* base: dW = s P Q with P = lora_B, Q = lora_A,
    rank 2r (r for init=lora) and lora_alpha scaled to keep the scale s. Loads with PeftModel.from_pretrained."""
    from safetensors.torch import save_file
    layers = adapted(model)
    if not layers:
        raise ValueError("model has no GeoRA adapters: call apply_geora(model, ...) first")
    tensors, width = {}, None
    for name, m in layers:
        P, Q = m.factors()
        width = Q.shape[0]
        tensors[f"base_model.model.{name}.lora_A.weight"] = Q.detach().float().cpu().contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = P.detach().float().cpu().contiguous()
    config = dict(peft_type="LORA", task_type="CAUSAL_LM", r=width, lora_alpha=layers[0][1].scale * width,
                  target_modules=sorted({n.split(".")[-1] for n, _ in layers}), lora_dropout=0.0, bias="none",
                  fan_in_fan_out=False, use_rslora=False, init_lora_weights=True,
                  base_model_name_or_path=getattr(getattr(model, "config", None), "_name_or_path", None))
    os.makedirs(out_dir, exist_ok=True)
    _atomic_write(os.path.join(out_dir, "adapter_model.safetensors"), lambda p: save_file(tensors, p))
    _write_json(os.path.join(out_dir, "adapter_config.json"), config)
    _write_json(os.path.join(out_dir, "geora_config.json"), model.geora_config)  # provenance; PEFT ignores it


@torch.no_grad()
def geometry_report(model, k=16):
    """Per adapted layer: rel_update = ||dW||_F / ||W||_F and s_head = ||dW V_k||_F / ||dW||_F, the share of the
    update in the top-k right singular directions of W (paper: GeoRA <= 0.02, PiSSA ~ 0.98). Uses only
    (2r x 2r) Gram matrices; V_k and ||W|| are computed once per layer and cached. 0.0 when dW is zero."""
    layers = {}
    for name, m in adapted(model):
        if getattr(m, "_geometry_k", None) != k:  # W is frozen: its top directions never change
            W = m.base.weight.float()
            kk = min(k, min(W.shape))
            gen = torch.Generator().manual_seed(_module_seed(0, name))
            m._top_v = svd_top(W, kk, "full" if min(W.shape) <= 2048 else "lowrank", 8, gen)[2].T  # (in, k)
            m._w_norm, m._geometry_k = W.norm().item(), k
        P, Q = (t.double() for t in m.factors())
        dw_sq = ((P.T @ P) * (Q @ Q.T)).sum().clamp_min(0).item() * m.scale ** 2  # ||P Q||_F^2 = <P'P, QQ'>
        head = (m.scale * P @ (Q @ m._top_v.double())).norm().item()  # ||dW V_k||_F, (out x k)
        dw = math.sqrt(dw_sq)
        layers[name] = dict(rel_update=dw / m._w_norm, s_head=head / dw if dw > 0 else 0.0)
    n = max(len(layers), 1)
    return dict(s_head=sum(v["s_head"] for v in layers.values()) / n,
                rel_update=sum(v["rel_update"] for v in layers.values()) / n, k=k, layers=layers)
