"""Tests for grpo.py, train.py and tiny.py (CPU, about a minute or two).

    python -m pytest -q test_train.py

The training runs use a micro Qwen2 (hidden 32, 2 layers) taught the answer format in a second,
on a JSONL file whose golds it guesses right about half the time, so GRPO has reward contrast:
the pretrained tiny world itself is never built here (too slow for a test).
"""

import json
import math
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

import geora
import grpo
import tiny
import train
from data import format_prompt

HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------- advantages and loss

def test_group_advantages_hand_values():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    adv = grpo.group_advantages(r, 4, eps=0.0)
    # group 1: mean .25, Bessel std sqrt(.25 * 4 / 3 * .75) = 0.5; group 2: mean .75, std 0.5
    assert torch.allclose(adv, torch.tensor([1.5, -0.5, -0.5, -0.5, 0.5, 0.5, -1.5, 0.5]))
    mean_only = grpo.group_advantages(r, 4, scale=False)
    assert torch.allclose(mean_only, torch.tensor([0.75, -0.25, -0.25, -0.25, 0.25, 0.25, -0.75, 0.25]))
    same = grpo.group_advantages(torch.tensor([1.0, 1.0, 0.0, 0.0]), 2)
    assert torch.equal(same, torch.zeros(4))           # no contrast, no signal
    eps = grpo.group_advantages(torch.tensor([1.0, 0.0]), 2, eps=1e-4)
    assert torch.allclose(eps, torch.tensor([0.5, -0.5]) / (math.sqrt(0.5) + 1e-4))


def _loss_inputs():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.5, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([2.0, -1.0])
    return logp, mask, adv


def test_aggregations_hand_values():
    logp, mask, adv = _loss_inputs()
    # on-policy: ratio 1, per-token loss = -adv; row 1: -2 x 3 tokens, row 2: +1 x 1 token
    loss, m = grpo.grpo_loss(logp, logp.detach(), None, adv, mask, agg="token-mean")
    assert loss.item() == pytest.approx((-6 + 1) / 4)
    assert m["clip_frac"] == 0 and m["tokens"] == 4
    loss, _ = grpo.grpo_loss(logp, logp.detach(), None, adv, mask, agg="seq-mean")
    assert loss.item() == pytest.approx((-2 + 1) / 2)
    loss, _ = grpo.grpo_loss(logp, logp.detach(), None, adv, mask, agg="dr-grpo")
    assert loss.item() == pytest.approx((-6 + 1) / (2 * 3))
    loss, _ = grpo.grpo_loss(logp, logp.detach(), None, adv, mask, agg="token-mean", denom=10.0)
    assert loss.item() == pytest.approx(-5 / 10)
    # gradient of token-mean: d loss / d logp = -adv / n_tokens on masked tokens, 0 elsewhere
    loss, _ = grpo.grpo_loss(logp, logp.detach(), None, adv, mask)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.5, -0.5, -0.5], [0.25, 0.0, 0.0]]))


@pytest.mark.parametrize("adv_sign", [1.0, -1.0])
def test_ratio_clipping_loss_and_gradient(adv_sign):
    # three tokens with ratios 0.5, 1.0, 1.5 (clip 0.2): exp(logp - old)
    old = torch.zeros(1, 3)
    ratios = torch.tensor([[0.5, 1.0, 1.5]])
    logp = ratios.log().clone().requires_grad_(True)
    adv = torch.tensor([adv_sign])
    mask = torch.ones(1, 3)
    loss, m = grpo.grpo_loss(logp, old, None, adv, mask, clip_low=0.2, clip_high=0.2)
    loss.backward()
    g = logp.grad[0]
    if adv_sign > 0:   # min(r A, clip(r) A): 0.5 stays (pessimistic), 1.5 is clipped to 1.2
        expected = -(0.5 + 1.0 + 1.2) / 3
        assert g[0].item() == pytest.approx(-0.5 / 3) and g[2].item() == 0.0   # clipped: no gradient
        assert m["clip_frac"] == pytest.approx(1 / 3)
    else:              # A < 0: min(-r, -clip(r)): 0.5 is clipped to 0.8, 1.5 stays
        expected = -(-0.8 - 1.0 - 1.5) / 3
        assert g[0].item() == 0.0 and g[2].item() == pytest.approx(1.5 / 3)
        assert m["clip_frac"] == pytest.approx(1 / 3)
    assert loss.item() == pytest.approx(expected)
    assert g[1].item() == pytest.approx(-adv_sign / 3)                          # ratio 1: plain PG
    # clip-higher: a wider upper clip lets the 1.5 token through for A > 0
    logp2 = ratios.log().clone().requires_grad_(True)
    loss2, m2 = grpo.grpo_loss(logp2, old, None, torch.tensor([1.0]), mask, clip_low=0.2, clip_high=0.6)
    assert loss2.item() == pytest.approx(-(0.5 + 1.0 + 1.5) / 3) and m2["clip_frac"] == 0


def test_kl_zero_on_reference_positive_otherwise():
    logp, mask, adv = _loss_inputs()
    _, m = grpo.grpo_loss(logp, logp.detach(), logp.detach(), adv, mask, beta=0.1)
    assert m["kl"] == 0.0 and m["kl_max"] == 0.0
    ref = logp.detach() + torch.tensor([[0.3, -0.2, 0.0], [1.0, 50.0, 0.0]])  # 50: masked, clamped
    loss, m = grpo.grpo_loss(logp, logp.detach(), ref, adv, mask, beta=0.1)
    k3 = lambda d: math.exp(d) - d - 1
    assert m["kl"] == pytest.approx((k3(0.3) + k3(-0.2) + 0 + k3(1.0)) / 4, rel=1e-6)
    assert m["kl"] > 0 and math.isfinite(m["kl_max"]) and m["kl_max"] == pytest.approx(k3(1.0), rel=1e-6)
    base, _ = grpo.grpo_loss(logp, logp.detach(), ref, adv, mask, beta=0.0)
    assert loss.item() == pytest.approx(base.item() + 0.1 * m["kl"], rel=1e-6)
    huge = logp.detach() + 1e4                                                   # clamped: finite
    loss, m = grpo.grpo_loss(logp, logp.detach(), huge, adv, mask, beta=0.1)
    assert math.isfinite(loss.item())


# ----------------------------------------------------------------------------- log-probs and masks

def _micro_model(vocab, seed=0, hidden=32, layers=2):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=0,
                      eos_token_id=1, bos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 0, 1
    return model


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_matches_naive(temperature):
    model = _micro_model(50)
    torch.manual_seed(1)
    ids = torch.randint(2, 50, (3, 9))
    attn = torch.ones(3, 9, dtype=torch.long)
    attn[1, :3] = 0                                 # left padding
    attn[2, :1] = 0
    ids[attn == 0] = 0
    L = 4
    logp, ent = grpo.token_logprobs(model, ids, attn, L, temperature, chunk_tokens=5)  # 12 tokens, 3 chunks
    logp.sum().backward()
    got_grad = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits / temperature  # (B, T, V)
    full = torch.log_softmax(logits.float(), -1)[:, -L - 1:-1]                  # predicts last L tokens
    naive = full.gather(-1, ids[:, -L:, None]).squeeze(-1)
    naive_ent = -(full.exp() * full).sum(-1)
    assert torch.allclose(logp, naive, atol=1e-5)
    assert torch.allclose(ent, naive_ent, atol=1e-5)
    naive.sum().backward()
    for n, p in model.named_parameters():
        assert torch.allclose(got_grad[n], p.grad, atol=1e-5), n


def test_completion_mask_eos_rules():
    c = torch.tensor([[5, 6, 1, 0, 0],      # EOS at 2: mask through it, pad after excluded
                      [1, 0, 0, 0, 0],      # EOS first: only the EOS token counts
                      [5, 6, 7, 8, 9],      # no EOS: truncated, every token counts
                      [5, 2, 6, 1, 1]])     # second EOS id (2) ends it; later EOS excluded
    mask, trunc = grpo.completion_mask(c, [1, 2])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert trunc.tolist() == [False, False, True, False]


def test_generate_masks_and_recomputed_logprobs():
    tok = tiny.make_tokenizer()
    model = _micro_model(len(tok))
    prompts = [format_prompt(tok, r["question"]) for r in tiny.tiny_rows("test", 3)]
    torch.manual_seed(0)
    r = grpo.generate(model, tok, prompts, n=2, temperature=1.0, max_new_tokens=6)
    B, L = r["mask"].shape
    assert B == 6 and r["input_ids"].shape[1] == r["attention_mask"].shape[1]
    comp = r["input_ids"][:, -L:]
    for i in range(B):
        eos = (comp[i] == tok.eos_token_id).nonzero()
        n = int(eos[0]) + 1 if len(eos) else L
        assert r["mask"][i].sum() == n and bool(r["truncated"][i]) == (len(eos) == 0)
        assert r["texts"][i] == tok.decode(comp[i, :n], skip_special_tokens=True)
    # the rows of one prompt are adjacent, and share the prompt
    assert torch.equal(r["input_ids"][0, :-L], r["input_ids"][1, :-L])


# ----------------------------------------------------------------------------- tiny world

def test_tiny_world_splits_and_tokenizer(tmp_path):
    from transformers import AutoTokenizer
    test = tiny.tiny_rows("test")
    assert len(test) == 200 and test == tiny.tiny_rows("test", seed=123)       # fixed
    assert len({r["question"] for r in test}) == 200
    held = tiny.heldout_questions()
    train_q = {r["question"] for r in tiny.tiny_rows("train", 5000, seed=1)}
    assert not train_q & held
    for fam in tiny.FAMILIES[1:]:
        rows = tiny.tiny_rows("test", 20, family=fam)
        assert len(rows) == 20 and not {r["question"] for r in rows} & {r["question"] for r in test}
    with pytest.raises(ValueError):
        tiny.tiny_rows("test", 201)
    tok = tiny.make_tokenizer()
    tok.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    loaded = AutoTokenizer.from_pretrained(tmp_path)                            # the path train/eval use
    assert loaded.padding_side == "left" and loaded.chat_template is None
    for r in tiny.tiny_rows("train", 50, seed=2) + tiny.tiny_rows("test", 20, family="mul"):
        text = format_prompt(loaded, r["question"]) + " 3+4=7, 7-2=5 #### 5"
        ids = loaded.encode(text, add_special_tokens=False)
        assert ids == tok.encode(text, add_special_tokens=False) and loaded.decode(ids) == text
    assert len(tok.encode(format_prompt(tok, "x"), add_special_tokens=False)) < 10  # instruction: 1 token


# ----------------------------------------------------------------------------- training runs

def teach_answer_format(model, tok, questions, steps, batch, answers, lr=1e-2, seed=0):
    """A few AdamW steps of supervised answers " #### k" + EOS (k uniform in 1..answers) after the prompts of
    `questions`: the micro models of the tests then answer in the format, right about 1/answers of the time."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    pad = tok.pad_token_id
    for _ in range(steps):
        seqs, labels = [], []
        for i in torch.randint(len(questions), (batch,), generator=gen).tolist():
            p = tok.encode(format_prompt(tok, questions[i]), add_special_tokens=False)
            a = tok.encode(f" #### {int(torch.randint(1, answers + 1, (1,), generator=gen))}",
                           add_special_tokens=False) + [tok.eos_token_id]
            seqs.append(p + a)
            labels.append([-100] * len(p) + a)
        T = max(map(len, seqs))
        ids = torch.tensor([[pad] * (T - len(s)) + s for s in seqs])
        lab = torch.tensor([[-100] * (T - len(s)) + s for s in labels])
        attn = torch.tensor([[0] * (T - len(s)) + [1] * len(s) for s in seqs])
        logits = model(input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 lab[:, 1:].reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A micro Qwen2 + the tiny tokenizer, taught in a second to answer " #### 1" or " #### 2" at
    random, and a JSONL of tiny-world questions whose golds are 1 or 2: about half the samples
    are right, so nearly every group has reward contrast and GRPO has a gradient."""
    d = tmp_path_factory.mktemp("world")
    tok = tiny.make_tokenizer()
    model = _micro_model(len(tok))
    questions = [r["question"] for r in tiny.tiny_rows("train", 64, seed=3)]
    teach_answer_format(model, tok, questions, steps=30, batch=16, answers=2)
    model.save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    with open(d / "data.jsonl", "w") as f:
        for i, q in enumerate(questions):
            f.write(json.dumps({"question": q, "answer": f"#### {1 + i % 2}"}) + "\n")
    return d


def _args(world, out, *extra):
    return ["--model", str(world / "model"), "--dataset", str(world / "data.jsonl"),
            "--eval-dataset", str(world / "data.jsonl"), "--eval-size", "8", "--out", str(out),
            "--prompts-per-step", "4", "--group-size", "8", "--max-new-tokens", "12",
            "--micro-batch", "16", "--rank", "4", "--eval-every", "100", "--save-every", "2",
            "--lr", "1e-2", "--no-gradient-checkpointing", "--kl-every", "1", *extra]   # kl on every step


def _trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _lines(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("method", ["geora", "lora", "pissa", "milora", "full"])
def test_smoke_three_steps_each_method(world, tmp_path, method):
    from transformers import AutoModelForCausalLM
    res = train.main(_args(world, tmp_path, "--method", method, "--steps", "3", "--merge",
                           *(["--lr", "1e-3"] if method == "full" else [])))
    lines = _lines(tmp_path)
    steps = [l for l in lines if "reward" in l]
    assert [l["step"] for l in steps] == [1, 2, 3]
    for key in ("reward", "no_answer", "kl", "entropy", "response_len", "frac_zero_std", "grad_norm",
                "clip_frac", "gen_s", "train_s", "tokens_per_s"):
        assert key in steps[0], key
    assert any(l["frac_zero_std"] < 1 for l in steps), "no reward contrast: the test world is broken"
    assert any(l["grad_norm"] > 0 for l in steps)
    evals = [l for l in lines if "eval_acc" in l]
    assert [l["step"] for l in evals] == [0, 3] and res["before"] == evals[0]["eval_acc"]
    base = AutoModelForCausalLM.from_pretrained(world / "model")
    if method == "full":
        from safetensors.torch import load_file
        ck = load_file(os.path.join(train.latest_checkpoint(str(tmp_path)), "model.safetensors"))
        changed = [k for k, v in ck.items() if not torch.equal(v, base.state_dict()[k])]
        assert changed and steps[0]["kl"] is None
    else:
        assert evals[-1]["rel_update"] > 0 and "s_head" in evals[-1]
        assert all(l["kl"] is not None and l["kl"] >= 0 for l in steps)
        assert os.path.exists(tmp_path / "geora_adapter.safetensors")
        assert os.path.exists(tmp_path / "peft" / "adapter_config.json")
        geora.load_adapter(base, str(tmp_path))                                 # eval.py's path
        assert geora.geometry_report(base)["rel_update"] > 0
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
        ids = torch.randint(2, 50, (2, 7))
        with torch.no_grad():
            assert torch.allclose(base(ids).logits, merged(ids).logits, atol=1e-5)


@pytest.mark.parametrize("method,agg,beta", [("geora", "seq-mean", "0.1"), ("full", "dr-grpo", "0.1"),
                                             ("full", "token-mean", "0")])
def test_smoke_kl_penalty_and_aggregations(world, tmp_path, method, agg, beta):
    train.main(_args(world, tmp_path, "--method", method, "--agg", agg, "--beta", beta,
                     "--steps", "2", "--lr", "1e-3", "--log-kl"))
    steps = [l for l in _lines(tmp_path) if "reward" in l]
    assert len(steps) == 2 and all(math.isfinite(l["loss"]) for l in steps)
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-6)    # first step: policy == reference
    assert steps[1]["kl"] > 0                                  # after one update it has moved
    if method == "full":  # with its frozen copy, full fine-tuning reports the adapters' geometry too
        evals = [l for l in _lines(tmp_path) if "eval_acc" in l]
        assert evals[0]["rel_update"] == 0 and evals[0]["s_head"] == 0
        assert evals[-1]["rel_update"] > 0 and 0 < evals[-1]["s_head"] <= 1


def test_full_geometry_measures_the_update_like_geora():
    """dW along W0's top right singular direction has S_head 1, along its bottom one ~0; rel_update is
    ||dW|| / ||W0|| averaged over the seven projections (hand-computed here)."""
    import copy
    model = _micro_model(50, hidden=64)   # every projection wider than k = 16: a bottom direction exists outside the top
    ref = copy.deepcopy(model)
    assert train.full_geometry(model, ref) == {"s_head": 0.0, "rel_update": 0.0}
    rels = {}
    for which, want in ((0, 1.0), (-1, 0.0)):
        with torch.no_grad():
            for name, lin in model.named_modules():
                if name.split(".")[-1] in geora.TARGETS:
                    W0 = ref.get_submodule(name).weight
                    v = torch.linalg.svd(W0, full_matrices=False).Vh[which]           # (in,)
                    u = torch.randn(W0.shape[0], generator=torch.Generator().manual_seed(len(name)))
                    lin.weight.copy_(W0 + 0.01 * torch.outer(u, v))
                    rels[name] = (0.01 * u.norm() / W0.norm()).item()
        g = train.full_geometry(model, ref)
        assert g["s_head"] == pytest.approx(want, abs=1e-4)
        assert g["rel_update"] == pytest.approx(sum(rels.values()) / len(rels), rel=1e-4)


def test_resume_is_exact(world, tmp_path):
    from transformers import AutoModelForCausalLM
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train.main(_args(world, straight, "--steps", "4"))
    train.main(_args(world, resumed, "--steps", "2"))
    train.main(_args(world, resumed, "--steps", "4", "--resume"))

    def adapter(d):
        m = AutoModelForCausalLM.from_pretrained(world / "model")
        geora.load_adapter(m, str(d))
        return _trainable(m)
    a, b = adapter(straight), adapter(resumed)
    init = _init(world)
    moved = max((a[k] - init[k]).abs().max().item() for k in a)
    assert moved > 1e-4, "training did not move the adapter: the exactness check would be empty"
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    sa = [l for l in _lines(straight) if "reward" in l]
    sb = [l for l in _lines(resumed) if "reward" in l]
    assert [l["step"] for l in sb] == [1, 2, 3, 4]
    assert [l["reward"] for l in sa] == [l["reward"] for l in sb]
    with pytest.raises(ValueError, match="--rank"):
        train.main(_args(world, resumed, "--steps", "5", "--resume", "--rank", "2"))
    for flag, value in (("--beta", "0.1"), ("--temperature", "0.7"), ("--max-new-tokens", "10")):
        with pytest.raises(ValueError, match=flag):  # the objective and the rollouts define the run
            train.main(_args(world, resumed, "--steps", "5", "--resume", flag, value))
    # a new --lr is used, not just logged: AdamW's restored group would otherwise keep the old rate
    train.main(_args(world, resumed, "--steps", "6", "--resume", "--lr", "3e-3", "--save-every", "1"))
    trainer = torch.load(os.path.join(train.latest_checkpoint(str(resumed)), "trainer.pt"), weights_only=False)
    assert [g["lr"] for g in trainer["optimizer"]["param_groups"]] == [3e-3]
    assert [l["lr"] for l in _lines(resumed) if l.get("step") == 6 and "reward" in l] == [3e-3]


def _init(world):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(world / "model")
    geora.apply_geora(m, rank=4)
    return _trainable(m)


def test_nan_loss_stops_and_keeps_last_checkpoint(world, tmp_path, monkeypatch):
    train.main(_args(world, tmp_path, "--steps", "2"))
    real = grpo.grpo_loss

    def nan_loss(*a, **k):
        loss, m = real(*a, **k)
        return loss * float("nan"), m
    monkeypatch.setattr(grpo, "grpo_loss", nan_loss)
    with pytest.raises(SystemExit, match="step 3"):
        train.main(_args(world, tmp_path, "--steps", "4", "--resume"))
    assert train.latest_checkpoint(str(tmp_path)).endswith("ckpt-000002")
    from transformers import AutoModelForCausalLM
    geora.load_adapter(AutoModelForCausalLM.from_pretrained(world / "model"),
                       os.path.join(train.latest_checkpoint(str(tmp_path)), "adapter"))


def test_dataset_without_usable_rows_errors(world, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": ""}) for i in range(5)))
    with pytest.raises(ValueError, match="usable"):
        train.main(_args(world, tmp_path / "out", "--dataset", str(bad), "--steps", "1"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_processes_keep_adapters_identical(world, tmp_path):
    out = tmp_path / "ddp"
    a, b = _torchrun(tmp_path, _args(world, out, "--steps", "2", "--device", "cpu"))
    init = _init(world)
    assert a.keys() == b.keys() and any(not torch.equal(a[k], init[k]) for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [l for l in _lines(out) if "reward" in l]
    assert [l["step"] for l in steps] == [1, 2]


# ----------------------------------------------------------------------------- sampling is scoring

def test_gumbel_sampler_draws_the_softmax():
    """Gumbel-max over the hashed noise reproduces softmax(logits / T): 40,000 keyed draws from a
    5-token distribution land within 4 sigma of every probability, and the draw is a pure function
    of (key, position): the same key twice gives the same noise, another key other noise."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -3.0])
    T = 0.7
    p = torch.softmax(logits / T, -1).double()
    keys = torch.tensor([grpo.sample_key(7, i) for i in range(40_000)])
    g = grpo.gumbel_noise(keys, 3, 5)                                     # (N, 5)
    draws = (logits.double() / T + g).argmax(-1)
    freq = torch.bincount(draws, minlength=5).double() / len(keys)
    sigma = (p * (1 - p) / len(keys)).sqrt()
    assert ((freq - p).abs() < 4 * sigma + 1e-4).all(), (freq, p)
    assert torch.equal(g[:3], grpo.gumbel_noise(keys[:3], 3, 5))
    assert not torch.equal(g[:3], grpo.gumbel_noise(keys[:3], 4, 5))
    assert torch.isfinite(g).all()
    u = grpo.gumbel_noise(torch.tensor([0, 2**32 - 1]), 0, 10_000)
    assert torch.isfinite(u).all() and u.max() < 40 and u.min() > -4    # 52-bit uniforms: no 0 or 1


def test_top_p_filter_keeps_the_smallest_sufficient_set():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]]).log_softmax(-1)
    p = logits.exp()[0]
    kept = lambda top_p: torch.isfinite(grpo.top_p_filter(logits, top_p))[0].tolist()
    assert kept(1.0) == [True] * 4
    assert kept(float(p[0]) - 1e-6) == [True, False, False, False]
    assert kept(float(p[0] + p[1]) - 1e-6) == [True, True, False, False]
    assert kept(float(p[0] + p[1]) + 1e-6) == [True, True, True, False]


def _chatty_checkpoint(tmp_path):
    """A saved micro model whose generation_config.json carries an Instruct checkpoint's sampling
    defaults and every other field transformers turns into a logits processor, a decoding mode or a
    stopping rule: each one would change what generate() draws (or where it stops)."""
    tok = tiny.make_tokenizer()
    model = _micro_model(len(tok), seed=4)
    g = model.generation_config
    g.do_sample, g.temperature, g.top_k, g.top_p, g.repetition_penalty = True, 0.7, 20, 0.8, 1.1
    g.no_repeat_ngram_size, g.min_new_tokens, g.suppress_tokens = 2, 3, [5, 6]
    g.min_length, g.max_length, g.bad_words_ids, g.begin_suppress_tokens = 30, 12, [[7], [8, 9]], [10, 11]
    g.forced_bos_token_id, g.forced_eos_token_id, g.exponential_decay_length_penalty = 12, 1, (2, 1.5)
    g.epsilon_cutoff, g.eta_cutoff, g.typical_p, g.min_p = 3e-4, 3e-4, 0.9, 0.05
    g.guidance_scale, g.renormalize_logits, g.num_beams, g.length_penalty = 1.5, True, 2, 2.0
    g.encoder_repetition_penalty, g.stop_strings, g.return_dict_in_generate = 1.2, ["apple"], True
    model.save_pretrained(tmp_path / "chatty")
    tok.save_pretrained(tmp_path / "chatty")
    from transformers import AutoModelForCausalLM
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "chatty")
    assert loaded.generation_config.repetition_penalty == 1.1 and loaded.generation_config.top_k == 20
    assert loaded.generation_config.forced_bos_token_id == 12 and loaded.generation_config.num_beams == 2
    loaded.generation_config.sequence_bias = [[[13], 4.0]]   # (its JSON form does not load back in transformers 5)
    return loaded, tok


def _stops_only_at_eos_or_budget(r, eos, budget):
    """Every completion ends on its first EOS or runs the whole budget: no stopping rule cut it short."""
    for i, n in enumerate(r["mask"].sum(1).long().tolist()):
        last = int(r["input_ids"][i, r["input_ids"].shape[1] - r["n_completion"] + n - 1])
        assert n == budget or last in eos, (i, n, last)


def test_generate_ignores_the_checkpoint_generation_config(tmp_path):
    model, tok = _chatty_checkpoint(tmp_path)
    prompts = [format_prompt(tok, r["question"]) for r in tiny.tiny_rows("test", 3)]
    N = 10
    # greedy through grpo.generate == a hand-written argmax loop over the model's own logits
    r = grpo.generate(model, tok, prompts, greedy=True, max_new_tokens=N)
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, attn = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        for _ in range(N):
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            nxt = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, -1].argmax(-1)
            ids, attn = torch.cat([ids, nxt[:, None]], 1), torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
    L = r["n_completion"]
    hand = ids[:, -N:]
    for i in range(len(prompts)):
        n = int(r["mask"][i].sum())
        assert torch.equal(r["input_ids"][i, -L:][:n], hand[i, :n]), i
    _stops_only_at_eos_or_budget(r, [tok.eos_token_id], N)
    # the test can fail: the checkpoint's own settings do change plain greedy generate()
    plain = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], do_sample=False,
                           max_new_tokens=N, pad_token_id=0, tokenizer=tok, return_dict_in_generate=False)
    assert not torch.equal(plain, ids)
    assert model.generation_config.repetition_penalty == 1.1           # restored after the call
    # sampled: the sampler's own log-probs are exactly what token_logprobs scores
    s = grpo.generate(model, tok, prompts, n=4, temperature=0.8, max_new_tokens=N, seed=1)
    logp, _ = grpo.token_logprobs(model, s["input_ids"], s["attention_mask"], s["n_completion"], 0.8)
    m = s["mask"]
    assert m.sum() > 20
    _stops_only_at_eos_or_budget(s, [tok.eos_token_id], N)
    assert ((logp - s["logprobs"]).abs() * m).max() < 1e-5


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_chunked_rollouts_equal_one_call(temperature):
    tok = tiny.make_tokenizer()
    model = _micro_model(len(tok), seed=2)
    prompts = [format_prompt(tok, r["question"]) for r in tiny.tiny_rows("test", 5)]
    one = grpo.generate(model, tok, prompts, n=3, temperature=temperature, max_new_tokens=10, seed=5)
    for bs in (1, 4):
        chunked = grpo.generate(model, tok, prompts, n=3, temperature=temperature, max_new_tokens=10,
                                seed=5, batch_size=bs)
        assert chunked["texts"] == one["texts"]
        for k in ("input_ids", "attention_mask", "mask", "truncated"):
            assert torch.equal(chunked[k], one[k]), k
        assert torch.allclose(chunked["logprobs"] * one["mask"], one["logprobs"] * one["mask"], atol=1e-5)
    other = grpo.generate(model, tok, prompts, n=3, temperature=temperature, max_new_tokens=10, seed=6)
    assert other["texts"] != one["texts"]


def test_chunked_head_equals_full_logits_and_gradients():
    """token_logprobs applies the LM head chunk by chunk inside checkpoints: log-probs equal the
    whole-logits computation to 1e-6 in fp32 for any chunk size, gradients up to summation order."""
    model = _micro_model(300, hidden=48)
    torch.manual_seed(3)
    ids = torch.randint(2, 300, (4, 11))
    attn = torch.ones_like(ids)
    attn[0, :4] = 0
    ids[attn == 0] = 0
    L = 6
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits.float()[:, -L - 1:-1]
    ref = torch.log_softmax(logits, -1).gather(-1, ids[:, -L:, None]).squeeze(-1)
    (ref * torch.linspace(-1, 1, L)).sum().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    for chunk in (1, 7, 24, None):
        model.zero_grad()
        logp, _ = grpo.token_logprobs(model, ids, attn, L, chunk_tokens=chunk)
        assert (logp - ref).abs().max() < 1e-6, chunk
        (logp * torch.linspace(-1, 1, L)).sum().backward()
        for n, p in model.named_parameters():
            assert torch.allclose(p.grad, want[n], rtol=1e-5, atol=2e-6), (chunk, n)   # sum order only
    assert isinstance(model.lm_head, torch.nn.Linear)                   # the stand-in is gone


# ----------------------------------------------------------------------------- defaults and presets

def test_mission_command_trains_on_gsm8k_with_llm_defaults():
    args = train.parse_args(["--model", "Qwen/Qwen2.5-1.5B", "--rank", "16", "--rho", "0.2"])
    assert args.dataset == "gsm8k" and train.EVAL_SETS[args.dataset] == ("gsm8k", "test")
    for k, v in train.LLM_DEFAULTS.items():
        assert getattr(args, k) == v, k
    assert args.lr == train.LLM_LR["geora"] and args.method == "geora" and args.rank == 16
    assert args.rho == 0.2 and args.group_size == 8 and args.out == "out/run-geora"
    assert args.gradient_checkpointing is True and args.max_prompt_tokens is None   # set from the model
    tiny_args = train.parse_args([])
    assert tiny_args.dataset == "tiny" and tiny_args.max_new_tokens == 48 and tiny_args.lr == train.TINY_LR["geora"]
    assert train.parse_args(["--model", "m", "--dataset", "tiny"]).max_new_tokens == 48


def test_paper_preset_resolves_and_flags_override():
    a = train.parse_args(["--model", "Qwen/Qwen2.5-1.5B-Instruct", "--preset", "paper"])
    want = dict(rank=16, alpha=32.0, rho=0.2, lr=1e-6, group_size=8, prompts_per_step=128, beta=1e-3,
                max_prompt_tokens=1024, max_new_tokens=4096, temperature=1.0, clip_low=0.2, clip_high=0.2,
                gradient_checkpointing=True, method="geora", dataset="gsm8k")
    assert {k: getattr(a, k) for k in want} == want
    b = train.parse_args(["--model", "m", "--preset", "paper", "--lr", "3e-6", "--max-new-tokens", "512",
                          "--no-gradient-checkpointing", "--beta", "0"])
    assert (b.lr, b.max_new_tokens, b.gradient_checkpointing, b.beta, b.rank) == (3e-6, 512, False, 0.0, 16)
    with pytest.raises(SystemExit):
        train.parse_args(["--preset", "nope"])


def test_long_prompts_are_dropped_and_counted(world, tmp_path, capsys):
    rows = [{"question": q, "answer": "#### 1"} for q in ["short one"] * 6 + ["word " * 300] * 3]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    args = train.parse_args(_args(world, tmp_path / "o", "--dataset", str(path), "--eval-dataset", str(path),
                                  "--max-prompt-tokens", "60"))
    tok = tiny.make_tokenizer()
    train_rows, evals = train.load_data(args, tok, context=256)
    assert len(train_rows) == 6 and all(len(r["question"]) < 20 for r in train_rows)
    out = capsys.readouterr().out
    assert "6 training prompts" in out and "3 dropped as longer than --max-prompt-tokens 60" in out
    assert len(evals["eval"]) == 6
    args.prompts_per_step = 8
    with pytest.raises(ValueError, match="--max-prompt-tokens"):
        train.load_data(args, tok, context=256)
    args = train.parse_args(_args(world, tmp_path / "o", "--max-new-tokens", "12"))
    train.load_data(args, tok, context=256)
    assert args.max_prompt_tokens == 256 - 12                              # default: the context left
    with pytest.raises(ValueError, match="--max-new-tokens"):
        train.load_data(train.parse_args(_args(world, tmp_path / "o", "--max-new-tokens", "300")), tok, 256)
    # prompt + answer budgets past the context: the paper preset's 1024 prompt tokens here, or explicit flags
    for extra in (["--preset", "paper"], ["--max-prompt-tokens", "200", "--max-new-tokens", "100"]):
        with pytest.raises(ValueError, match="context.*: lower --max-prompt-tokens or --max-new-tokens"):
            train.load_data(train.parse_args(_args(world, tmp_path / "o", *extra)), tok, 256)


def test_holdout_rows_never_train_and_are_the_eval_set(world, tmp_path):
    args = train.parse_args(_args(world, tmp_path / "o", "--holdout", "10"))
    args.eval_dataset = None
    tr, ev = train.load_data(args, tiny.make_tokenizer(), context=256)
    held = {r["id"] for r in ev["eval"][:10]}
    assert len(held) == 8 and not held & {r["id"] for r in tr}          # eval-size 8 of the 10
    assert len(tr) == 64 - 10
    tr2, ev2 = train.load_data(train.parse_args(_args(world, tmp_path / "o", "--holdout", "10", "--seed", "3")),
                               tiny.make_tokenizer(), context=256)
    assert {r["id"] for r in tr2} == {r["id"] for r in tr}              # the same draw for every seed


# ----------------------------------------------------------------------------- loop defects

def test_beta0_metrics_cover_every_completion(world, tmp_path):
    """Half the prompts have an unreachable gold: their groups carry no signal. The logged entropy
    and KL must still describe all completions: equal to a run at a vanishing beta, where every
    completion goes through the loss."""
    path = tmp_path / "half.jsonl"
    qs = [r["question"] for r in tiny.tiny_rows("train", 16, seed=5)]
    path.write_text("\n".join(json.dumps({"question": q, "answer": f"#### {1 + i % 2 if i % 4 < 2 else 999}"})
                              for i, q in enumerate(qs)))
    lines = {}
    for beta in ("0", "1e-12"):
        out = tmp_path / f"b{beta}"
        train.main(_args(world, out, "--dataset", str(path), "--eval-dataset", str(path), "--steps", "2",
                         "--beta", beta, "--prompts-per-step", "8"))
        lines[beta] = [l for l in _lines(out) if "reward" in l]
    a, b = lines["0"], lines["1e-12"]
    assert a[0]["frac_zero_std"] >= 0.25                                  # there were signal-free groups
    assert [l["reward"] for l in a] == [l["reward"] for l in b]           # same keyed rollouts
    for k in ("entropy", "kl", "clip_frac", "response_len"):
        for x, y in zip(a, b):
            assert x[k] == pytest.approx(y[k], rel=1e-4, abs=1e-7), k
    assert a[1]["kl"] > 0


def _rt(rank=0, world=1):
    import argparse
    import contextlib
    return argparse.Namespace(rank=rank, world=world, device=torch.device("cpu"), master=rank == 0,
                              fsdp_generate=None, synced_gpus=False, autocast=contextlib.nullcontext())


def test_eval_decodes_rollout_batch_prompts_per_call_and_memory_counts_them(world, tmp_path, monkeypatch):
    """Decoding costs per step, not per row: greedy evaluation goes --rollout-batch prompts at a time (it
    went 32 at a time, 8x the decoding steps at the LLM defaults), and the memory estimate that sized
    --rollout-batch counts the held-out prompts, which may be longer than every training prompt."""
    from transformers import AutoConfig
    args = train.parse_args(_args(world, tmp_path, "--rollout-batch", "40"))
    tok = tiny.make_tokenizer()
    short, long_ = [{"question": "q", "gold": "1"}], [{"question": "word " * 50, "gold": "1"}]
    seen, real = {}, train.memory.estimate
    monkeypatch.setattr(train.memory, "estimate", lambda *a, **k: seen.update(k) or real(*a, **k))
    train.plan_memory(args, AutoConfig.from_pretrained(world / "model"), short, tok, _rt(), lambda *a: None,
                      {"eval": long_})
    assert seen["prompt_tokens"] == len(tok.encode(format_prompt(tok, long_[0]["question"]), add_special_tokens=False))
    sizes = []
    monkeypatch.setattr(train.grpo, "evaluate", lambda *a, **k: sizes.append(k["batch_size"]) or (0.0, []))
    train.evaluate(torch.nn.Linear(1, 1), tok, {"eval": short * 50}, args, _rt())
    assert sizes == [40]


def test_resume_with_more_processes_than_wrote_the_checkpoint(tmp_path):
    """Rank 1 of 2 resuming a one-process checkpoint: the saved RNG list has no entry for it (this was
    an IndexError); the optimizer state loads, the RNG streams start afresh, and it says so. The same
    count restores this rank's RNG state."""
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    (tmp_path / "ckpt").mkdir()
    torch.manual_seed(7)
    torch.save({"optimizer": opt.state_dict(), "rng": [train.rng_state()]}, tmp_path / "ckpt" / "trainer.pt")
    saved = torch.get_rng_state()
    for rank, world in ((1, 2), (0, 1)):
        torch.manual_seed(99)
        fresh = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
        said = []
        args = train.parse_args(["--steps", "1", "--lr", "0.1"])       # a replicated (not --fsdp) run, same rate
        train.load_trainer_state(args, None, fresh, str(tmp_path / "ckpt"), _rt(rank, world), said.append)
        assert fresh.state_dict()["state"][0]["step"] == 1
        if world == 2:
            assert said and "1 processes, now 2" in said[0] and not torch.equal(torch.get_rng_state(), saved)
        else:
            assert not said and torch.equal(torch.get_rng_state(), saved)


def test_gradient_checkpointing_changes_nothing_but_memory(world, tmp_path):
    """The LLM default: recomputing activations in backward gives the same update."""
    a = _trainable(train.main(_args(world, tmp_path / "a", "--steps", "2"))["model"])
    b = _trainable(train.main(_args(world, tmp_path / "b", "--steps", "2", "--gradient-checkpointing"))["model"])
    init = _init(world)
    assert any(not torch.equal(a[k], init[k]) for k in a)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k


def test_weight_decay_pulls_svd_adapters_towards_their_init(world, tmp_path):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(world / "model")
    geora.apply_geora(m, rank=4)
    lora = AutoModelForCausalLM.from_pretrained(world / "model")
    geora.apply_geora(lora, rank=4, init="lora")
    with torch.no_grad():
        for model in (m, lora):
            for _, layer in geora.adapted(model):
                layer.A.add_(1.0)
                layer.B.add_(1.0)
    train.decay_adapters(m, 0.25)
    train.decay_adapters(lora, 0.25)
    for _, layer in geora.adapted(m):
        assert torch.allclose(layer.A - layer.A0, torch.full_like(layer.A, 0.75), atol=1e-6)
        assert torch.allclose(layer.B - layer.B0, torch.full_like(layer.B, 0.75), atol=1e-6)
    for _, layer in geora.adapted(lora):
        assert torch.allclose(layer.B, torch.full_like(layer.B, 0.75))  # B0 = 0: towards zero
    # in a run: lr * wd = 1 snaps A back to A0 before every AdamW update, so A stays within ~lr of A0
    res = train.main(_args(world, tmp_path, "--steps", "2", "--weight-decay", "100", "--lr", "1e-2"))
    moved = [(layer.A - layer.A0).abs().max().item() for _, layer in geora.adapted(res["model"])]
    assert 0 < max(moved) < 0.05


def _torchrun(tmp_path, argv, nproc=2, tag="run"):
    """train.main under torchrun with nproc gloo processes; each rank dumps its trainable tensors."""
    script = tmp_path / f"worker_{tag}.py"
    script.write_text(
        "import os, sys, torch\n"
        f"sys.path.insert(0, {HERE!r})\n"
        "import train\n"
        "res = train.main(sys.argv[1:])\n"
        "torch.save({n: p.detach() for n, p in res['model'].named_parameters() if p.requires_grad},\n"
        f"           os.path.join({str(tmp_path)!r}, '{tag}-rank%s.pt' % os.environ['RANK']))\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--master_port={_free_port()}", str(script), *argv]
    p = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return [torch.load(tmp_path / f"{tag}-rank{r}.pt") for r in range(nproc)]


def test_process_count_changes_nothing(world, tmp_path):
    """Step 1 has reward contrast, step 2 has none anywhere (unreachable golds). Two processes must
    not step AdamW on the empty step (its moments would move the adapter), must match one process,
    and a checkpoint written by two processes resumes in one (world size recorded, sampling keyed)."""
    n_rows, per = 8, 4
    order = train.prompt_indices(0, n_rows, 2 * per, 0)                 # rows of steps 1 and 2
    qs = [r["question"] for r in tiny.tiny_rows("train", n_rows, seed=6)]
    gold = {row: (f"#### {1 + k % 2}" if k < per else "#### 999") for k, row in enumerate(order)}
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"question": q, "answer": gold[i]}) for i, q in enumerate(qs)))
    common = ["--dataset", str(path), "--eval-dataset", str(path), "--prompts-per-step", str(per),
              "--save-every", "1", "--device", "cpu"]
    two = tmp_path / "two"
    one_step = _torchrun(tmp_path, _args(world, two, *common, "--steps", "1"), tag="s1")
    shutil.copytree(two, tmp_path / "two-copy")
    two_steps = _torchrun(tmp_path, _args(world, two, *common, "--steps", "2", "--resume"), tag="s2")
    steps = [l for l in _lines(two) if "reward" in l]
    assert steps[0]["frac_zero_std"] < 1 and steps[1]["frac_zero_std"] == 1 and steps[1]["grad_norm"] == 0
    init = _init(world)
    assert any(not torch.equal(one_step[0][k], init[k]) for k in init)    # step 1 trained
    for k in init:                                                           # step 2 changed nothing
        assert torch.equal(two_steps[0][k], one_step[0][k]), k
        assert torch.equal(two_steps[1][k], two_steps[0][k]), k
    single = _trainable(train.main(_args(world, tmp_path / "one", *common, "--steps", "2"))["model"])
    resumed = _trainable(train.main(_args(world, tmp_path / "two-copy", *common, "--steps", "2", "--resume"))["model"])
    # Equal up to summation order. AdamW's first step moves every entry by ~lr * sign(grad), so an
    # entry whose gradient is ~1e-9 (rounding-sized) may move either way: count those, bound the rest.
    for other in (single, resumed):
        close = sum(int(torch.isclose(other[k], two_steps[0][k], atol=1e-6, rtol=0).sum()) for k in init)
        total = sum(v.numel() for v in init.values())
        assert close >= 0.99 * total, (close, total)
        assert max((other[k] - two_steps[0][k]).abs().max().item() for k in init) <= 2.5e-2
    assert [l["reward"] for l in _lines(tmp_path / "one") if "reward" in l] == [l["reward"] for l in steps]
    ck = json.loads(open(os.path.join(train.latest_checkpoint(str(two)), "state.json")).read())
    assert ck["world"] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_two_steps_bf16_log_memory_and_score_what_was_sampled(world, tmp_path):
    """On a GPU: bf16 autocast, mem_gb logged, and the sampler's log-probs agree with token_logprobs
    (bf16 kernels differ between decoding and scoring: a loose bound, on the mean)."""
    res = train.main(_args(world, tmp_path, "--steps", "2", "--device", "cuda"))
    steps = [l for l in _lines(tmp_path) if "reward" in l]
    assert len(steps) == 2 and all(l["mem_gb"] > 0 for l in steps)
    model = res["model"]
    tok = tiny.make_tokenizer()
    prompts = [format_prompt(tok, r["question"]) for r in tiny.tiny_rows("test", 4)]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        r = grpo.generate(model, tok, prompts, n=4, max_new_tokens=12, seed=3)
        logp, _ = grpo.token_logprobs(model, r["input_ids"], r["attention_mask"], r["n_completion"])
    m = r["mask"].to(logp.device)
    assert ((logp - r["logprobs"].to(logp.device)).abs() * m).sum() / m.sum() < 0.05


def test_tiny_base_is_the_same_whatever_thread_count_builds_it(tmp_path):
    """train.py ran the build on two threads and eval.py on one, and got two bases: the build now pins
    one thread, and gives back the caller's setting."""
    before = torch.get_num_threads()
    shas = []
    for threads in (2, 1):
        torch.set_num_threads(threads)
        out = tiny.build_tiny(str(tmp_path / f"t{threads}"), steps=3)
        info = json.loads(open(os.path.join(out, "tiny.json")).read())
        assert info["threads"] == tiny.BUILD_THREADS and torch.get_num_threads() == threads
        shas.append(info["sha256"])
    torch.set_num_threads(before)
    assert shas[0] == shas[1]


def test_shipped_tiny_base_is_what_tiny_py_builds():
    """tiny-base/ is committed: its weights are the ones tiny.json's hash names, and a rebuild's first
    CHECK_STEPS pretraining steps (one thread, the full build's schedule) reproduce tiny.json's early hash, or,
    on another CPU model, its per-tensor fingerprint."""
    from transformers import AutoModelForCausalLM
    info = json.loads(open(os.path.join(tiny.TINY_BASE, "tiny.json")).read())
    shipped = AutoModelForCausalLM.from_pretrained(tiny.TINY_BASE, dtype=torch.float32)
    assert tiny.weights_sha256(shipped) == info["sha256"]
    before = torch.get_num_threads()
    torch.set_num_threads(tiny.BUILD_THREADS)
    try:
        tok = tiny.make_tokenizer()
        early = tiny.pretrain(tiny.make_model(tok, info["seed"]), tok, seed=info["seed"], steps=info["steps"],
                              stop_after=tiny.CHECK_STEPS, log_every=0)
    finally:
        torch.set_num_threads(before)
    # bit for bit on the CPU that built the base (its hash); on another CPU model the vector units round
    # differently, so the rebuild is held to the per-tensor fingerprint instead (a wrong seed, schedule or data
    # order moves it by far more than 1e-4)
    if tiny.weights_sha256(early) != info[f"sha256_step{tiny.CHECK_STEPS}"]:
        for (s, a), (s0, a0) in zip(tiny.fingerprint(early), info[f"fingerprint_step{tiny.CHECK_STEPS}"], strict=True):
            assert abs(s - s0) <= 1e-4 * a0 + 1e-6 and abs(a - a0) <= 1e-4 * a0, (s, a, s0, a0)
