"""Tests for geora.py: the method against brute force and Eckart-Young, exactness at init in fp32 and bf16,
the reference policy, merge / PEFT export / save-load round trips, and bad input. CPU, seconds.
Run: python -m pytest -q test_geora.py"""

import math

import pytest
import torch
import torch.nn as nn
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

import geora

VOCAB = 97


def tiny_qwen(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return Qwen2ForCausalLM(cfg).to(dtype).eval()


def tiny_llama(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).to(dtype).eval()


IDS = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(ids).logits


def train_steps(model, n=3, lr=1e-2):
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for i in range(n):
        out = model(IDS, labels=IDS)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


# ---------------------------------------------------------------- 1. masks and the exact quantile

def brute_mask(x, rho):
    a = x.abs().flatten()
    k = max(1, math.ceil(rho * a.numel()))
    tau = a.sort().values[k - 1]
    return x.abs() <= tau


@pytest.mark.parametrize("shape,rho", [((7, 5), 0.2), ((33, 64), 0.2), ((64, 33), 0.5), ((10, 10), 1.0),
                                       ((1, 9), 0.01)])
def test_low_magnitude_mask_matches_brute_force(shape, rho):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    m = geora.low_magnitude_mask(x, rho)
    assert torch.equal(m, brute_mask(x, rho))
    assert m.sum().item() == max(1, math.ceil(rho * x.numel()))  # no ties: exactly the bottom rho fraction


def test_mask_ties_keep_every_tied_entry():
    x = torch.tensor([[0.0, 1.0, 1.0, 1.0, 2.0], [3.0, -1.0, 4.0, 5.0, 6.0]])  # 10 entries, k = 2 -> tau = 1
    m = geora.low_magnitude_mask(x, 0.2)
    assert torch.equal(m, brute_mask(x, 0.2))
    assert m.sum().item() == 5  # 0 and all four |x| == 1


@pytest.mark.parametrize("values", ["continuous", "ties"])
def test_kth_smallest_exact_on_large_tensors(values):
    g = torch.Generator().manual_seed(0)
    n = (1 << 21) + 3  # above the direct kthvalue cutoff: exercises the sampled bracket
    x = torch.rand(n, generator=g) if values == "continuous" else torch.randint(0, 5, (n,), generator=g).float()
    s = x.sort().values
    for k in (1, 7, n // 5, n // 2, n - 1, n):
        assert geora.kth_smallest(x, k, torch.Generator().manual_seed(k)).item() == s[k - 1].item()


def test_mask_above_torch_quantile_limit():
    x = torch.randn(4097, 4097, generator=torch.Generator().manual_seed(5))  # 2^24 + 8193 entries
    assert x.numel() > 1 << 24
    with pytest.raises(RuntimeError):
        torch.quantile(x.abs().flatten(), 0.2)  # the trap geora.py avoids
    m = geora.low_magnitude_mask(x, 0.2)
    k = math.ceil(0.2 * x.numel())
    tau = x.abs().flatten().kthvalue(k).values
    assert torch.equal(m, x.abs() <= tau)


def test_union_and_intersection_combine_spec_and_euc():
    W = torch.randn(40, 24, generator=torch.Generator().manual_seed(2))
    spec = geora.geora_mask(W, 4, 0.2, "spec")
    euc = geora.geora_mask(W, 4, 0.2, "euc")
    U, S, Vh = torch.linalg.svd(W)
    assert torch.equal(spec, brute_mask(U[:, :4] @ torch.diag(S[:4]) @ Vh[:4], 0.2))
    assert torch.equal(euc, brute_mask(W, 0.2))
    assert torch.equal(geora.geora_mask(W, 4, 0.2, "union"), spec | euc)
    assert torch.equal(geora.geora_mask(W, 4, 0.2, "intersection"), spec & euc)
    frac = (spec | euc).float().mean().item()
    assert 0.2 < frac < 0.4  # two nearly independent 20% masks: ~36% kept


# ---------------------------------------------------------------- 2. Eckart-Young

@pytest.mark.parametrize("init,alpha", [("geora", 4), ("geora", 8), ("pissa", 4)])
def test_factors_are_best_rank_r_approximation(init, alpha):
    W = torch.randn(50, 30, generator=torch.Generator().manual_seed(4))
    r, s = 4, alpha / 4
    A0, B0, _ = geora.init_factors(W, r, 0.2, s, init)
    target = W * geora.geora_mask(W, r, 0.2) if init == "geora" else W
    S = torch.linalg.svdvals(target)
    err = (target - s * B0 @ A0).norm()
    assert err.item() == pytest.approx(S[r:].square().sum().sqrt().item(), rel=1e-4)
    assert torch.allclose(torch.linalg.svdvals(s * B0 @ A0)[:r], S[:r], rtol=1e-4)


def test_tail_and_milora_take_the_bottom_triplets():
    W = torch.randn(30, 20, generator=torch.Generator().manual_seed(6))
    A0, B0, _ = geora.init_factors(W, 3, init="milora")
    S = torch.linalg.svdvals(W)
    assert torch.allclose(torch.linalg.svdvals(B0 @ A0)[:3], S[-3:], rtol=1e-4)


def test_lowrank_svd_is_seeded_and_accurate():
    W = torch.randn(200, 120, generator=torch.Generator().manual_seed(7))
    W[:, :3] *= 20  # a clear top of the spectrum
    run = lambda seed: geora.svd_top(W, 3, "lowrank", 4, torch.Generator().manual_seed(seed))
    U1, S1, V1 = run(0)
    U2, S2, V2 = run(0)
    assert torch.equal(U1, U2) and torch.equal(S1, S2) and torch.equal(V1, V2)
    assert not torch.equal(S1, run(1)[1])
    assert torch.allclose(S1, torch.linalg.svdvals(W)[:3], rtol=1e-3)


# ---------------------------------------------------------------- 3. function preservation at init

@pytest.mark.parametrize("make", [tiny_qwen, tiny_llama])
@pytest.mark.parametrize("init", geora.INITS)
@pytest.mark.parametrize("svd", geora.SVDS)
def test_function_preserved_at_init(make, init, svd):
    for dtype in (torch.float32, torch.bfloat16):
        model = make(dtype)
        ref = logits(model)
        geora.apply_geora(model, rank=4, init=init, svd=svd, alpha=8 if init == "geora" else None)
        out = logits(model)
        if dtype == torch.float32:
            assert (out - ref).abs().max().item() <= 1e-5
        else:
            assert torch.equal(out, ref), "bf16 must be bit-identical at init"


def test_storing_residual_in_bf16_would_not_be_exact():
    """The trap: W_res = W - s B0 A0 rounded to bf16 changes the model (why geora.py never stores it)."""
    model = tiny_qwen(torch.bfloat16)
    ref = logits(model).float()
    geora.apply_geora(model, rank=4, init="pissa")
    for _, m in geora.adapted(model):
        m.base.weight.data = m.residual().to(torch.bfloat16)  # PEFT-style: bf16 residual + bf16 B0 A0
        m.A0 = m.A0.bfloat16().float()
        m.B0 = m.B0.bfloat16().float()
        m.A.data, m.B.data = m.A0.clone(), m.B0.clone()
        m.A0 = m.B0 = None  # forward becomes W_res x + s B A x
    assert not torch.equal(logits(model).float(), ref)


# ---------------------------------------------------------------- 4. trainable parameters and gradients

def test_only_adapters_train():
    model = tiny_qwen()
    rep = geora.apply_geora(model, rank=4)
    lin = {n: m for n, m in geora.adapted(model)}
    assert rep["modules"] == len(lin) == 14  # 7 projections x 2 layers
    expected = sum(4 * (m.base.in_features + m.base.out_features) for m in lin.values())
    assert rep["trainable"] == expected
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {f"{n}.{k}" for n in lin for k in ("A", "B")}
    assert not any("embed" in n or "lm_head" in n for n in lin)
    before = logits(model)
    model(IDS, labels=IDS).loss.backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if p.requires_grad)
    train_steps(model, 1)
    assert not torch.allclose(logits(model), before)


def test_frozen_factors_reuse_p_q_with_the_same_outputs_and_only_inside_the_block():
    """Sampling reuses each layer's P, Q inside frozen_factors: outputs equal the unfrozen ones bit for bit, and an
    update after the block (even through .data, which no version counter sees) shows in the next forward."""
    model = tiny_qwen()
    geora.apply_geora(model, rank=4)
    train_steps(model, 1)                                               # B != B0: P, Q carry real terms
    want = logits(model)
    with geora.frozen_factors(model):
        m = geora.adapted(model)[0][1]
        assert m.factors()[0] is m.factors()[0]                         # built once, reused
        assert torch.equal(logits(model), want)
    for _, m in geora.adapted(model):
        m.B.data.copy_(m.B.data * 1.5)
    after = logits(model)
    assert not torch.equal(after, want)
    assert all(getattr(m, "_frozen_pq", None) is None for _, m in geora.adapted(model))


def test_forward_equals_papers_residual_form_after_training():
    model = tiny_qwen()
    geora.apply_geora(model, rank=4, alpha=8)
    train_steps(model, 3)
    x = torch.randn(5, 64)
    for _, m in geora.adapted(model):
        if m.base.in_features != 64:
            continue
        paper = x @ m.residual().T + m.scale * (x @ m.A.T) @ m.B.T + (0 if m.base.bias is None else m.base.bias)
        assert torch.allclose(m(x), paper, atol=1e-5)


# ---------------------------------------------------------------- 5. peer cross-check with PEFT's PiSSA

@pytest.mark.parametrize("alpha", [4, 8])
def test_pissa_residual_matches_peft(alpha):
    peft = pytest.importorskip("peft")
    base = tiny_qwen()
    ours = tiny_qwen()
    geora.apply_geora(ours, rank=4, alpha=alpha, init="pissa")
    cfg = peft.LoraConfig(r=4, lora_alpha=alpha, init_lora_weights="pissa", target_modules=list(geora.TARGETS))
    theirs = peft.get_peft_model(base, cfg)
    mine = dict(geora.adapted(ours))
    n = 0
    for name, mod in theirs.named_modules():
        if hasattr(mod, "lora_A") and name.endswith(geora.TARGETS):
            key = name.replace("base_model.model.", "", 1)
            W_res = mod.base_layer.weight.detach()
            assert (mine[key].residual() - W_res).norm() / mine[key].base.weight.norm() <= 1e-5
            n += 1
    assert n == 14
    # no masking (rho = 1 keeps every entry): GeoRA's path reduces to PiSSA exactly
    mask_free = tiny_qwen()
    geora.apply_geora(mask_free, rank=4, alpha=alpha, rho=1.0)
    for name, m in geora.adapted(mask_free):
        assert torch.equal(m.A0, mine[name].A0) and torch.equal(m.B0, mine[name].B0)


# ---------------------------------------------------------------- 6. the reference policy

def test_adapters_disabled_is_the_base_model_exactly():
    for dtype in (torch.float32, torch.bfloat16):
        base = logits(tiny_qwen(dtype))
        model = tiny_qwen(dtype)
        geora.apply_geora(model, rank=4, init="pissa")
        train_steps(model, 3)
        assert not torch.allclose(logits(model).float(), base.float())
        with geora.adapters_disabled(model):
            assert torch.equal(logits(model), base)
        assert not torch.allclose(logits(model).float(), base.float())  # re-enabled on exit


# ---------------------------------------------------------------- 7. merge and PEFT export

def test_merge_equals_unmerged_forward():
    model = tiny_qwen()
    geora.apply_geora(model, rank=4, alpha=8)
    train_steps(model, 3)
    before = logits(model)
    merged = geora.merge(model)
    assert not geora.adapted(merged)
    assert all(type(m) is nn.Linear for n, m in merged.named_modules() if n.endswith("q_proj"))
    assert (logits(merged) - before).abs().max().item() <= 1e-5


@pytest.mark.parametrize("init", ["geora", "lora"])
def test_peft_export_reproduces_trained_model(tmp_path, init):
    peft = pytest.importorskip("peft")
    model = tiny_qwen()
    geora.apply_geora(model, rank=4, alpha=8, init=init)
    train_steps(model, 3)
    want = logits(model)
    geora.export_peft(model, tmp_path)
    loaded = peft.PeftModel.from_pretrained(tiny_qwen(), tmp_path).eval()
    assert (logits(loaded) - want).abs().max().item() <= 1e-5
    assert (logits(loaded.get_base_model()) - want).abs().max().item() <= 1e-5


# ---------------------------------------------------------------- 8. save and load

def test_save_load_round_trip_is_bitwise_and_runs_no_svd(tmp_path, monkeypatch):
    model = tiny_qwen()
    geora.apply_geora(model, rank=4, svd="lowrank", seed=3)
    train_steps(model, 2)
    geora.save_adapter(model, tmp_path)
    boom = lambda *a, **k: (_ for _ in ()).throw(AssertionError("load must not run an SVD"))
    monkeypatch.setattr(torch.linalg, "svd", boom)
    monkeypatch.setattr(geora, "svd_top", boom)
    loaded = geora.load_adapter(tiny_qwen(), tmp_path)
    for (n1, a), (n2, b) in zip(geora.adapted(model), geora.adapted(loaded)):
        assert n1 == n2
        for k in ("A", "B", "A0", "B0"):
            assert torch.equal(getattr(a, k), getattr(b, k))
    assert torch.equal(logits(loaded), logits(model))
    assert loaded.geora_config == model.geora_config
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == \
           {n for n, p in model.named_parameters() if p.requires_grad}


def test_lowrank_init_is_deterministic_per_seed():
    def factors(seed):
        m = tiny_qwen()
        geora.apply_geora(m, rank=4, svd="lowrank", seed=seed)
        return [x.A0 for _, x in geora.adapted(m)]
    a, b, c = factors(0), factors(0), factors(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


# ---------------------------------------------------------------- geometry report

def test_geometry_report_measures_head_share_and_update_norm():
    model = tiny_qwen()
    geora.apply_geora(model, rank=4)
    rep = geora.geometry_report(model, k=4)
    assert rep["rel_update"] == 0 and rep["s_head"] == 0  # no update yet
    name, m = geora.adapted(model)[0]
    Vk = torch.linalg.svd(m.base.weight.float())[2][:4]  # (k, in): top right singular vectors of W
    with torch.no_grad():
        m.A += 0.1 * torch.randn(4, 4) @ Vk  # update inside span(V_k): dW = B0 (A - A0)
    layer = geora.geometry_report(model, k=4)["layers"][name]
    assert layer["s_head"] == pytest.approx(1.0, abs=1e-4)
    assert layer["rel_update"] == pytest.approx((m.delta().norm() / m.base.weight.norm()).item(), rel=1e-5)
    with torch.no_grad():
        m.A.copy_(m.A0)
        m.A += 0.1 * torch.randn(4, 64) @ (torch.eye(64) - Vk.T @ Vk)  # orthogonal to span(V_k)
    assert geora.geometry_report(model, k=4)["layers"][name]["s_head"] == pytest.approx(0.0, abs=1e-4)


# ---------------------------------------------------------------- 9. bad input

@pytest.mark.parametrize("kwargs,words", [
    (dict(rank=0), "rank"), (dict(rank=65), "rank"), (dict(rank=2.5), "rank"), (dict(rho=0.0), "rho"),
    (dict(rho=1.5), "rho"), (dict(alpha=0), "alpha"), (dict(alpha=-1), "alpha"), (dict(targets=["nope"]), "targets"),
    (dict(init="dora"), "init"), (dict(mask="xor"), "mask"), (dict(svd="fast"), "svd"),
])
def test_bad_input_raises_and_changes_nothing(kwargs, words):
    model = tiny_qwen()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=words):
        geora.apply_geora(model, **{"rank": 4, **kwargs})
    assert not geora.adapted(model)
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_quantized_weight_and_applying_twice_are_refused():
    model = tiny_qwen()
    q = model.model.layers[0].mlp.down_proj
    q.weight = nn.Parameter(q.weight.detach().to(torch.int8), requires_grad=False)
    with pytest.raises(ValueError, match="quantized"):
        geora.apply_geora(model, rank=4)
    assert not geora.adapted(model)
    model = tiny_qwen()
    geora.apply_geora(model, rank=4)
    with pytest.raises(ValueError, match="already"):
        geora.apply_geora(model, rank=4)
    with pytest.raises(ValueError, match="save_adapter|geora_adapter"):
        geora.load_adapter(tiny_qwen(), "/nonexistent-dir")


# ---------------------------------------------------------------- the CUDA bf16 path (runs only where a GPU is)

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("svd", geora.SVDS)
def test_cuda_bf16_exact_at_init_and_trains_under_autocast(svd):
    model = tiny_qwen(torch.bfloat16).cuda()
    ids = IDS.cuda()
    ref = logits(model, ids)
    geora.apply_geora(model, rank=4, svd=svd)
    m = geora.adapted(model)[0][1]
    assert m.A.device.type == "cuda" and m.A.dtype == torch.float32 and m.base.weight.dtype == torch.bfloat16
    assert torch.equal(logits(model, ids), ref)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model(ids, labels=ids).loss.backward()
    opt.step()
    assert not torch.equal(logits(model, ids), ref)
    with geora.adapters_disabled(model):
        assert torch.equal(logits(model, ids), ref)
