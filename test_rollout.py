"""rollout.generate (the static-cache, slot-refilling, compiled decode loop) against grpo.generate, in fp32 on CPU:
the same tokens, the same log-probs, the same result dict; for no adapter, LoRA and GeoRA; greedy and sampled; rows
ending at different lengths; fewer slots than completions; a Qwen2.5-1.5B-shaped model with its full vocabulary."""
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import geora
import grpo
import rollout


class IdTokenizer:
    """Token ids in, token ids out: the models here draw from vocabularies no real tokenizer of ours covers."""
    pad_token_id, eos_token_id = 0, None

    def batch_decode(self, ids, skip_special_tokens=True):
        return [" ".join(map(str, row)) for row in ids.tolist()]


def _model(vocab, hidden, inter, layers, heads, kv, seed=0):
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=512,
                      tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=None,
                      attn_implementation="eager")
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(cfg).eval()


def _adapt(model, method, targets=None):
    """Adapters away from their initial point (at init B A - B0 A0 = 0 and the branch would change nothing)."""
    if method != "none":
        geora.apply_geora(model, rank=4, rho=0.2, init=method, targets=targets, svd="lowrank", seed=0)
        g = torch.Generator().manual_seed(1)
        for m in model.modules():
            if isinstance(m, geora.GeoRALinear):
                with torch.no_grad():
                    m.A.add_(0.05 * torch.randn(m.A.shape, generator=g))
                    m.B.add_(0.05 * torch.randn(m.B.shape, generator=g))
    return model


def _prompts(vocab, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = [3 + (5 * i) % 11 for i in range(n)]                     # ragged prompts: left padding in the eager path
    return [torch.randint(2, vocab, (L,), generator=g).tolist() for L in lens]


def _ragged_eos(model, tok, prompts, kw):
    """Make a token the eager path draws mid-completion the EOS, so rows end at different lengths."""
    r = grpo.generate(model, tok, prompts, **kw)
    comp = r["input_ids"][:, -r["n_completion"]:]
    model.generation_config.eos_token_id = [int(comp[0, 2]), int(comp[-1, 4])]
    return model


def _check_same(model, tok, prompts, kw, **engine):
    ref = grpo.generate(model, tok, prompts, **kw)
    out = rollout.generate(model, tok, prompts, **kw, **engine)
    assert torch.equal(out["input_ids"], ref["input_ids"])
    assert torch.equal(out["attention_mask"], ref["attention_mask"])
    assert torch.equal(out["mask"], ref["mask"]) and torch.equal(out["truncated"], ref["truncated"])
    assert out["n_completion"] == ref["n_completion"] and out["texts"] == ref["texts"]
    m = ref["mask"].bool()
    assert (out["logprobs"] - ref["logprobs"])[m].abs().max() <= 1e-5
    lens = ref["mask"].sum(1)
    return ref, lens


@pytest.mark.parametrize("method", ["none", "lora", "geora"])
@pytest.mark.parametrize("greedy", [False, True])
def test_static_loop_equals_eager_generate(method, greedy):
    model = _adapt(_model(97, 64, 96, 2, 4, 2), method)
    tok, prompts = IdTokenizer(), _prompts(97, 6)
    kw = dict(n=3, max_new_tokens=20, greedy=greedy, temperature=0.9,
              keys=[grpo.sample_key(5, i) for i in range(18)], batch_size=7)
    _ragged_eos(model, tok, prompts, kw)
    with geora.frozen_factors(model):
        # 5 slots for 18 completions: slots are refilled as rows end; check every 3 steps
        ref, lens = _check_same(model, tok, prompts, kw | {"batch_size": 5}, compile=False, check_every=3)
    assert lens.min() < lens.max(), "the test needs rows that end at different lengths"
    assert ref["truncated"].any() and not ref["truncated"].all()


def test_top_p_and_compaction_equal_eager():
    # 32 slots for 32 rows: nothing to refill, so the tail is compacted to 8 slots as rows end
    model = _adapt(_model(61, 32, 64, 2, 4, 2, seed=3), "geora")
    tok, prompts = IdTokenizer(), _prompts(61, 8, seed=2)
    kw = dict(n=4, max_new_tokens=24, top_p=0.8, temperature=1.0, keys=[grpo.sample_key(9, i) for i in range(32)])
    _ragged_eos(model, tok, prompts, kw)
    stats = {}
    _check_same(model, tok, prompts, kw, compile=False, check_every=2, stats=stats)
    assert stats["useful"] <= stats["slot_steps"] and stats["decode_steps"] > 0


def test_compiled_step_equals_eager_generate():
    # torch.compile (inductor's C++ backend here) of the step; GeoRA adapter, sampled, fewer slots than rows
    model = _adapt(_model(53, 32, 64, 1, 4, 2, seed=4), "geora")
    tok, prompts = IdTokenizer(), _prompts(53, 4, seed=4)
    kw = dict(n=2, max_new_tokens=10, temperature=1.0, keys=[grpo.sample_key(1, i) for i in range(8)])
    _ragged_eos(model, tok, prompts, kw)
    stats = {}
    with geora.frozen_factors(model):
        _check_same(model, tok, prompts, kw | {"batch_size": 4}, compile=True, check_every=4, stats=stats)
    assert model._rollout_state.compiled is not None and not model._rollout_state.failed
    assert stats["compile_s"] > 0


def test_qwen25_15b_shapes_with_full_vocabulary():
    # 2 layers of Qwen2.5-1.5B (hidden 1536, 12 heads / 2 KV heads, MLP 8960) and its 151,936-token vocabulary
    model = _adapt(_model(151936, 1536, 8960, 2, 12, 2, seed=5), "geora", targets=("q_proj", "v_proj"))
    tok, prompts = IdTokenizer(), _prompts(151936, 3, seed=5)
    kw = dict(n=2, max_new_tokens=6, temperature=1.0, keys=[grpo.sample_key(2, i) for i in range(6)])
    _ragged_eos(model, tok, prompts, kw)
    with geora.frozen_factors(model):
        _check_same(model, tok, prompts, kw | {"batch_size": 4}, compile=False, check_every=2)


def test_gumbel_noise_takes_a_position_per_row():
    keys = torch.tensor([grpo.sample_key(0, i) for i in range(3)])
    per_row = grpo.gumbel_noise(keys, torch.tensor([4, 0, 7]), 50)
    for i, p in enumerate([4, 0, 7]):
        assert torch.equal(per_row[i], grpo.gumbel_noise(keys, p, 50)[i])


def test_unsupported_model_falls_back_to_grpo_generate():
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=32, n_layer=1, n_head=4, eos_token_id=1)).eval()
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = 1, 0
    tok, prompts = IdTokenizer(), _prompts(40, 2)
    kw = dict(n=1, max_new_tokens=4, keys=[7, 8])
    ref = grpo.generate(model, tok, prompts, **kw)
    with pytest.warns(UserWarning, match="gpt2"):
        out = rollout.generate(model, tok, prompts, **kw)
    assert torch.equal(out["input_ids"], ref["input_ids"])
