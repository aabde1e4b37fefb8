"""Packed scoring (grpo.packed_token_logprobs, grpo.token_batches) against the padded path, and --kl-every.

    python -m pytest -q test_packing.py

fp32 on CPU, on the shipped tiny base: log-probs within 1e-5 and gradients within 1e-4 (relative) of
grpo.token_logprobs for GeoRA, LoRA and full fine-tuning, with left-padded prompts and completions of different
lengths that share packed rows, under both attention backends the packing supports without flash-attn.
"""

import copy
import json

import pytest
import torch

import geora
import grpo
import train

# (left padding, completion length) per row: rows of 3 to 16 real tokens, several packed into one row
ROWS = [(0, 7), (7, 2), (6, 2), (3, 4), (5, 2), (8, 2), (2, 5), (6, 4)]


@pytest.fixture(scope="module")
def base():
    from transformers import AutoModelForCausalLM
    import tiny
    return AutoModelForCausalLM.from_pretrained(tiny.TINY_BASE, dtype=torch.float32)


def batch(P=9, L=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 200, (len(ROWS), P + L), generator=g)
    attn = torch.ones_like(ids)
    for i, (pad, c) in enumerate(ROWS):
        attn[i, :pad] = 0
        attn[i, P + c:] = 0
    return ids * attn, attn, L


def policy(base, method, impl):
    m = copy.deepcopy(base)
    m.set_attn_implementation(impl)
    if method == "full":
        m.requires_grad_(True)
    else:
        geora.apply_geora(m, rank=4, init=method)
        for _, mod in geora.adapted(m):      # move the adapter off its init so gradients reach every factor
            torch.nn.init.normal_(mod.B, std=0.02)
    return m


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("method", ["geora", "lora", "full"])
def test_packed_equals_padded(base, method, impl):
    m = policy(base, method, impl)
    ids, attn, L = batch()
    mask = attn[:, -L:].float()
    w = torch.randn(mask.shape, generator=torch.Generator().manual_seed(1))
    got = []
    for fn in (grpo.token_logprobs, grpo.packed_token_logprobs):
        m.zero_grad(set_to_none=True)
        logp, ent = fn(m, ids, attn, L)
        (logp * mask * w).sum().backward()
        grads = [p.grad.clone() for p in m.parameters() if p.grad is not None]
        got.append((logp.detach() * mask, ent * mask, grads))
    (a, ea, ga), (b, eb, gb) = got
    assert (a - b).abs().max() <= 1e-5 and (ea - eb).abs().max() <= 1e-5
    assert len(ga) == len(gb) > 0
    for x, y in zip(ga, gb):
        assert (x - y).norm() <= 1e-4 * x.norm() + 1e-12


def test_rows_really_share_a_packed_row(base):
    """The batch above packs: fewer packed rows than sequences (else the test above proves nothing)."""
    _, attn, _ = batch()
    lens = attn.sum(1).tolist()
    # hidden size 1: rows as long as the longest sequence; the tiny model's: rows of up to 2 x hidden tokens
    for hidden, longest in ((1, max(lens)), (base.config.hidden_size, None)):
        where, rows, R = grpo.pack_rows(lens, hidden)
        assert rows < len(lens) and (longest is None or R == longest)
        spans = sorted((r, o, o + n) for (r, o), n in zip(where, lens))
        assert all(a[0] != b[0] or a[2] <= b[1] for a, b in zip(spans, spans[1:]))   # no overlap within a row


def test_packing_without_the_document_mask_would_differ(base, monkeypatch):
    """If sequences in a row could attend to each other the result changes: the equality above is not vacuous."""
    m = policy(base, "geora", "sdpa")
    ids, attn, L = batch()
    mask = attn[:, -L:].float()
    ref = grpo.packed_token_logprobs(m, ids, attn, L)[0].detach()
    real_eq = torch.Tensor.__eq__
    monkeypatch.setattr(torch.Tensor, "__eq__", lambda x, y: real_eq(x, y) | True if x.dim() == 3 else real_eq(x, y))
    leaky = grpo.packed_token_logprobs(m, ids, attn, L)[0].detach()
    assert ((ref - leaky).abs() * mask).max() > 1e-3


def test_token_batches():
    lens = [9, 1, 5, 3, 7, 2, 12]
    batches = grpo.token_batches(lens, 10)
    assert sorted(i for b in batches for i in b) == list(range(len(lens)))
    assert all(sum(lens[i] for i in b) <= 10 or len(b) == 1 for b in batches)
    assert [6] in batches                                       # longer than the budget: alone
    assert sorted(map(sorted, batches)) == [[0, 1], [2, 5], [3, 4], [6]]   # first-fit decreasing: 12 | 9+1 | 7+3 | 5+2


@pytest.mark.parametrize("kl_every,expect", [(1, [1, 2, 3, 4, 5]), (2, [2, 4, 5]), (10, [5])])
def test_kl_every(kl_every, expect):
    args = train.parse_args(["--steps", "5", "--kl-every", str(kl_every)])
    assert [s + 1 for s in range(5) if train.kl_step(args, s)] == expect
    args = train.parse_args(["--steps", "5", "--kl-every", str(kl_every), "--beta", "0.01"])
    assert all(train.kl_step(args, s) for s in range(5))           # the loss needs the reference every step
    args = train.parse_args(["--steps", "5", "--method", "full"])
    assert not any(train.kl_step(args, s) for s in range(5))       # no reference without --log-kl


def test_train_logs_kl_on_kl_steps_only(tmp_path):
    out = tmp_path / "run"
    train.main(["--steps", "3", "--prompts-per-step", "4", "--eval-size", "0", "--kl-every", "2", "--out", str(out)])
    steps = [json.loads(l) for l in open(out / "metrics.jsonl") if '"gen_s"' in l]
    assert [s["kl"] is not None for s in steps] == [False, True, True]
