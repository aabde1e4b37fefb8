"""Tests for memory.py and the bounded-memory paths of train.py / grpo.py (CPU, under a minute).

    python -m pytest -q test_memory.py
"""

import json
import os
import subprocess
import sys

import pytest
import torch

import geora
import grpo
import memory
import train
from test_train import _args, _lines, world  # noqa: F401  (world is a fixture)

HERE = os.path.dirname(os.path.abspath(__file__))


def _small(model_type, tied, head_dim=None):
    from transformers import AutoConfig, AutoModelForCausalLM
    spec = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, tie_word_embeddings=tied)
    if head_dim:
        spec["head_dim"] = head_dim
    cfg = AutoConfig.for_model(model_type, **spec)
    return cfg, AutoModelForCausalLM.from_config(cfg)


@pytest.mark.parametrize("model_type,tied,head_dim", [("qwen2", True, None), ("qwen2", False, None),
                                                      ("qwen3", False, 32), ("llama", False, None)])
def test_counts_match_real_models(model_type, tied, head_dim):
    cfg, model = _small(model_type, tied, head_dim)
    s = memory.shapes(cfg)
    if model_type != "llama":       # Llama has no q/k/v bias: counted as Qwen3 (no bias, no q/k norm)
        assert s["params"] == sum(p.numel() for p in model.parameters())
    rep = geora.apply_geora(model, rank=4, init="lora")
    assert memory.adapter_params(s, 4) == rep["trainable"]


def test_config_table_counts_the_published_sizes():
    # parameter counts of the real checkpoints (their model cards): 1.54B, 7.62B, 8.19B, 14.77B, 32.76B
    want = {"qwen2.5-1.5b": 1.54, "qwen2.5-7b": 7.62, "qwen3-8b": 8.19, "qwen2.5-14b": 14.77, "qwen2.5-32b": 32.76}
    for name, billions in want.items():
        assert memory.shapes(memory.CONFIGS[name])["params"] / 1e9 == pytest.approx(billions, abs=0.01), name
    # the KV-cache figures: ~28 KB per token for Qwen2.5-1.5B and ~147 KB for Qwen3-8B, in bf16
    kv = lambda name: memory.estimate(memory.CONFIGS[name], device="cuda", budget=1e12)["kv_per_token"]
    assert kv("qwen2.5-1.5b") == 28 * 2 * 2 * 128 * 2 and kv("qwen3-8b") == 36 * 2 * 8 * 128 * 2


def test_estimate_picks_the_largest_rollout_batch_that_fits():
    cfg = memory.CONFIGS["qwen2.5-1.5b"]
    kw = dict(device="cuda", rollouts=1024, micro_batch=4, prompt_tokens=1024, new_tokens=4096)
    big, small = memory.estimate(cfg, budget=70e9, **kw), memory.estimate(cfg, budget=20e9, **kw)
    assert big["fits"] and small["fits"] and 1 <= small["rollout_batch"] < big["rollout_batch"] <= 1024
    for est in (big, small):
        assert est["total"] <= est["budget"]
        one_more = memory.estimate(cfg, budget=est["budget"], rollout_batch=est["rollout_batch"] + 1, **kw)
        assert est["rollout_batch"] == 1024 or not one_more["fits"]
    assert memory.estimate(cfg, budget=80e9, **dict(kw, rollouts=16))["rollout_batch"] == 16  # all of them
    tight = memory.estimate(cfg, budget=2e9, **kw)
    assert not tight["fits"] and tight["total"] > tight["budget"]
    # checkpointing and the micro-batch move the scoring term the right way
    ckpt = memory.estimate(cfg, budget=80e9, **kw)["scoring"]
    assert memory.estimate(cfg, budget=80e9, gradient_checkpointing=False, **kw)["scoring"] > 3 * ckpt
    assert memory.estimate(cfg, budget=80e9, **dict(kw, micro_batch=8))["scoring"] > ckpt
    # FSDP divides the weights and, for full fine-tuning, the trainable state
    full = dict(kw, rollouts=128)
    one = memory.estimate(memory.CONFIGS["qwen2.5-7b"], "full", budget=1e12, **full)
    four = memory.estimate(memory.CONFIGS["qwen2.5-7b"], "full", budget=1e12, world=4, fsdp=True, **full)
    assert four["trainable_state"] == pytest.approx(one["trainable_state"] / 4)
    assert four["weights"] == pytest.approx(one["weights"] / 4) and four["fsdp_generate"] == "unsharded"


def test_fsdp_gathered_copies_are_in_the_dtype_fsdp_gathers():
    """Units are gathered in the compute dtype: bf16 on CUDA (full fine-tuning's fp32 masters too, by its
    MixedPrecisionPolicy), fp32 with --dtype fp32 or on CPU; full fine-tuning's reference gathers its own root
    while it scores."""
    s = memory.shapes(memory.CONFIGS["qwen2.5-7b"])
    layer = (s["params"] - s["root_params"]) / s["layers"]
    kw = dict(rollouts=8, micro_batch=1, prompt_tokens=256, new_tokens=256, world=4, fsdp=True, budget=1e13)
    for method, device, dtype, nbytes in [("geora", "cuda", "auto", 2), ("full", "cuda", "auto", 2),
                                          ("geora", "cuda", "fp32", 4), ("full", "cuda", "fp32", 4),
                                          ("geora", "cpu", "auto", 4), ("full", "cpu", "bf16", 2)]:
        est = memory.estimate(memory.CONFIGS["qwen2.5-7b"], method, device=device, dtype=dtype, **kw)
        assert est["gathered"] == pytest.approx((2 * layer + s["root_params"]) * nbytes), (method, device, dtype)
        assert est["fsdp_generate"] == "unsharded"              # the whole model gathered beside its shard
        assert est["sampling"] == pytest.approx(est["rollout_batch"] * est["sampling_row"] + s["params"] * nbytes
                                                - est["gathered"]), (method, device, dtype)
        ref = memory.estimate(memory.CONFIGS["qwen2.5-7b"], method, device=device, dtype=dtype, ref_copy=True, **kw)
        if method == "full":
            assert ref["scoring"] == pytest.approx(est["scoring"] + s["root_params"] * nbytes)


def test_fits_table_covers_the_models():
    table = memory.fits_table()
    for name in memory.CONFIGS:
        assert f"| {name} |" in table
    assert "| qwen2.5-1.5b | 1.5B | geora | yes, chunks of" in table        # the mission model fits one card
    assert "| qwen2.5-7b | 7.6B | full | no (" in table                   # ~122 GB of trainable state on one
    assert table.count("| qwen2.5-32b | 32.8B | full | no (") == 1


def test_a_run_that_cannot_fit_stops_before_loading_the_model(world, tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "device_memory", lambda device: 1e6)
    monkeypatch.setattr(train, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(ValueError) as e:
        train.main(_args(world, tmp_path, "--steps", "1"))
    for flag in ("--rollout-batch", "--micro-batch", "--gradient-checkpointing", "--max-new-tokens"):
        assert flag in str(e.value)


def test_estimate_is_printed_and_rollout_batch_filled(world, tmp_path, capsys):
    res = train.main(_args(world, tmp_path, "--steps", "1"))
    out = capsys.readouterr().out
    assert "memory estimate per process" in out and "rollout batch 32" in out   # 4 prompts x 8: all at once
    setup = next(l for l in _lines(tmp_path) if l.get("setup"))
    assert setup["rollout_batch"] == 32 and setup["est_mem_gb"] > 0 and setup["trainable"] > 0
    step = next(l for l in _lines(tmp_path) if "reward" in l)
    assert step["mem_gb"] > 0.05                                          # CPU: the step's peak RSS
    assert res["model"] is not None


def test_out_of_memory_is_a_message_and_keeps_the_checkpoint(world, tmp_path, monkeypatch):
    train.main(_args(world, tmp_path, "--steps", "2"))
    real, real_packed = grpo.token_logprobs, grpo.packed_token_logprobs

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(grpo, "token_logprobs", oom)
    monkeypatch.setattr(grpo, "packed_token_logprobs", oom)   # the default scoring path
    with pytest.raises(SystemExit) as e:
        train.main(_args(world, tmp_path, "--steps", "4", "--resume"))
    msg = str(e.value)
    assert "out of memory at step 3" in msg and "--rollout-batch" in msg and "--micro-batch" in msg
    assert "ckpt-000002" in msg
    monkeypatch.setattr(grpo, "token_logprobs", real)
    monkeypatch.setattr(grpo, "packed_token_logprobs", real_packed)
    train.main(_args(world, tmp_path, "--steps", "3", "--resume"))            # and it resumes from there
    assert [l["step"] for l in _lines(tmp_path) if "reward" in l] == [1, 2, 3]


def test_chunked_head_lowers_the_scoring_peak(tmp_path):
    """One micro-batch of 4 x 256 completion tokens with Qwen's 151,936-token vocabulary (a 2-layer,
    hidden-64 model, so the logits dominate): the peak RSS of token_logprobs forward + backward, in
    fresh processes, with the chunked head against whole logits (the previous implementation)."""
    script = tmp_path / "peak.py"
    script.write_text(
        "import sys, json, torch\n"
        f"sys.path.insert(0, {HERE!r})\n"
        "import grpo, bench\n"
        "from transformers import Qwen2Config, Qwen2ForCausalLM\n"
        "torch.manual_seed(0)\n"
        "cfg = Qwen2Config(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,\n"
        "                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)\n"
        "model = Qwen2ForCausalLM(cfg)\n"
        "ids = torch.randint(0, 151936, (4, 272)); attn = torch.ones_like(ids)\n"
        "fn = grpo.token_logprobs if sys.argv[1] == 'chunked' else bench._logprobs_whole_logits\n"
        "kw = {'chunk_bytes': 1 << 26} if sys.argv[1] == 'chunked' else {}\n"
        "def rss(f):\n"
        "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(f)) * 1024\n"
        "base = rss('VmRSS'); open('/proc/self/clear_refs', 'w').write('5')\n"
        "logp, _ = fn(model, ids, attn, 256, **kw); logp.sum().backward()\n"
        "print(json.dumps(rss('VmHWM') - base))\n")
    peak = {}
    for kind in ("whole", "chunked"):
        p = subprocess.run([sys.executable, str(script), kind], capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1"))
        assert p.returncode == 0, p.stderr[-2000:]
        peak[kind] = json.loads(p.stdout.strip().splitlines()[-1])
    logits = 4 * 256 * 151936 * 4                                          # one fp32 copy of the whole logits
    assert peak["whole"] > logits                                          # the baseline does hold them
    assert peak["chunked"] < 0.5 * peak["whole"], peak
