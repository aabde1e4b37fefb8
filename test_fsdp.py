"""Tests for train.py --fsdp (FSDP2) on CPU: two gloo processes under one torchrun launch.

    python -m pytest -q test_fsdp.py

One launch runs a list of train.main calls in the same process group (train.py reuses a group it
did not create), each rank saving its trainable tensors after each run; the checks then compare
runs in this process. Sampling is keyed, so a run with and without --fsdp draws the same rollouts
and their updates may differ only by summation order. After the runs the same launch probes what a run
cannot show: bf16 exactness under sharding, rollouts when ranks stop at different lengths (all-gathers
counted), the reference's root after a forward, a checkpoint written before any optimizer step. The group
has a 120 s timeout, so a deadlock fails the launch instead of hanging it.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

import geora
import tiny
from test_train import _free_port, _micro_model, teach_answer_format, world  # noqa: F401  (a fixture)

HERE = os.path.dirname(os.path.abspath(__file__))

WORKER = r'''
import argparse, datetime, json, os, sys, torch, torch.distributed as dist
sys.path.insert(0, {here!r})
import geora, grpo, memory, train
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))   # a deadlock fails, not hangs
rank = dist.get_rank()
plan = json.load(open(sys.argv[1]))
estimate, forced = memory.estimate, []
for tag, argv in plan["runs"]:
    if tag == "copy":  # a finished run's directory, copied to resume elsewhere
        if rank == 0:
            import shutil
            shutil.copytree(*argv)
        dist.barrier()
        continue
    def sharded_rollouts(*a, **k):   # what the estimate picks when the whole model does not fit beside the cache
        forced.append(tag)
        return dict(estimate(*a, **k), fsdp_generate="sharded")
    train.memory.estimate = sharded_rollouts if tag.endswith("-sharded-rollouts") else estimate
    res = train.main(argv)
    params = {{n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
               for n, p in res["model"].named_parameters() if p.requires_grad}}
    torch.save(params, os.path.join(plan["dir"], f"{{tag}}-rank{{rank}}.pt"))

# init exactness under sharding, bf16: logits of the sharded model == the unsharded model's, bit for bit,
# and adapters_disabled is exactly the base (W) before and after the adapter moves
from transformers import AutoModelForCausalLM
ids = torch.randint(2, 50, (2, 9), generator=torch.Generator().manual_seed(0))
base = AutoModelForCausalLM.from_pretrained(plan["model"], dtype=torch.bfloat16)
with torch.no_grad():
    want_base = base(ids).logits
m = AutoModelForCausalLM.from_pretrained(plan["model"], dtype=torch.bfloat16)
geora.apply_geora(m, rank=4)
with torch.no_grad():
    want = m(ids).logits
import copy
unsharded = copy.deepcopy(m)
args = train.parse_args(["--model", plan["model"], "--fsdp", "--rank", "4"])
train.shard(m, args, torch.device("cuda"))   # the policy train.py picks on CUDA (the device only picks it)
with torch.no_grad():
    got = m(ids).logits
    with geora.adapters_disabled(m):
        got_base = m(ids).logits
    for model in (m, unsharded):
        for _, layer in geora.adapted(model):
            layer.B.add_(0.05)
    train.reshard(m)
    moved, want_moved = m(ids).logits, unsharded(ids).logits
    with geora.adapters_disabled(m):
        moved_base = m(ids).logits
fp32 = all(getattr(layer, k).dtype == torch.float32 and type(getattr(layer, k)) in (torch.Tensor, torch.nn.Parameter)
           for _, layer in geora.adapted(m) for k in ("A", "B", "A0", "B0"))
torch.save(dict(exact=torch.equal(got, want) and torch.equal(want, want_base),
                base=torch.equal(got_base, want_base) and torch.equal(moved_base, want_base),
                moved=not torch.equal(moved, want) and torch.equal(moved, want_moved), fp32=fp32, dtype=str(got.dtype)),
           os.path.join(plan["dir"], f"exact-rank{{rank}}.pt"))

# rollouts when ranks stop at different lengths (rank 0's every token is EOS, rank 1's none): no deadlock either way;
# unsharded, every unit all-gathers once for the whole rollout (its first forward), sharded once per forward
import torch.distributed.fsdp._fully_shard._fsdp_param_group as param_group
gathers, all_gather = [0], param_group.foreach_all_gather
def counted(*a, **k):
    gathers[0] += 1
    return all_gather(*a, **k)
param_group.foreach_all_gather = counted
import tiny
tok = tiny.make_tokenizer()
probe = {{}}
for mode in ("unsharded", "sharded"):
    m = AutoModelForCausalLM.from_pretrained(plan["model"])
    geora.apply_geora(m, rank=4)
    train.shard(m, args, torch.device("cpu"))
    m.generation_config.eos_token_id = list(range(len(tok))) if rank == 0 else [len(tok) + 5]
    gathers[0] = 0
    with train.rollout_mode(m, argparse.Namespace(fsdp_generate=mode)), geora.frozen_factors(m):
        r = grpo.generate(m, tok, ["a b c", "d e"], n=2, max_new_tokens=12, keys=list(range(4)), batch_size=2,
                          synced_gpus=mode == "sharded")
    probe[mode] = dict(length=r["n_completion"], gathers=gathers[0], units=len(train.fsdp_modules(m)))
param_group.foreach_all_gather = all_gather

# full fine-tuning's frozen KL reference never runs backward: its root must not stay gathered after a forward
from torch.distributed.tensor import DTensor
ref = AutoModelForCausalLM.from_pretrained(plan["model"]).eval().requires_grad_(False)
full_args = train.parse_args(["--model", plan["model"], "--fsdp", "--method", "full", "--out",
                              os.path.join(plan["dir"], "save-probe")])
train.shard(ref, full_args, torch.device("cpu"))
with torch.no_grad():
    ref(ids)
ref_resharded = all(isinstance(p, DTensor) for p in ref.parameters())

# a sharded checkpoint written before any optimizer step leaves AdamW as it was (no state, no step counted),
# as without --fsdp, and so does loading it
model = AutoModelForCausalLM.from_pretrained(plan["model"])
train.shard(model, full_args, torch.device("cpu"))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
rt = argparse.Namespace(rank=rank, world=2, master=rank == 0)
os.makedirs(full_args.out, exist_ok=True)
train.save_checkpoint(full_args, model, opt, dict(step=1, args=vars(full_args)), rt)
saved_untouched = not opt.state
weights = [p.detach().clone() for p in model.parameters()]
with torch.no_grad():
    for p in model.parameters():
        p.zero_()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
train.load_trainer_state(full_args, model, opt, os.path.join(full_args.out, "ckpt-000001"), rt, print)
reloaded = all(torch.equal(a.to_local(), b.to_local()) for a, b in zip(weights, model.parameters()))
torch.save(dict(probe=probe, forced=forced, ref_resharded=ref_resharded, saved_untouched=saved_untouched,
                loaded_untouched=not opt.state, reloaded=reloaded), os.path.join(plan["dir"], f"probe-rank{{rank}}.pt"))
dist.destroy_process_group()
'''


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """A micro Qwen2 taught to answer '#### 1' or '#### 2', and one torchrun launch of 2 processes that
    trains it every way the checks need."""
    d = tmp_path_factory.mktemp("fsdp")
    tok = tiny.make_tokenizer()
    model = _micro_model(len(tok), seed=1)
    qs = [r["question"] for r in tiny.tiny_rows("train", 32, seed=4)]
    teach_answer_format(model, tok, qs, steps=25, batch=16, answers=2)   # rewards with contrast
    model.save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    (d / "data.jsonl").write_text("\n".join(json.dumps({"question": q, "answer": f"#### {1 + i % 2}"})
                                            for i, q in enumerate(qs)))
    common = ["--model", str(d / "model"), "--dataset", str(d / "data.jsonl"), "--eval-dataset", str(d / "data.jsonl"),
              "--eval-size", "4", "--prompts-per-step", "4", "--group-size", "4", "--max-new-tokens", "8",
              "--micro-batch", "8", "--rank", "4", "--eval-every", "100", "--save-every", "2", "--device", "cpu",
              "--no-gradient-checkpointing"]
    out = lambda tag: ["--out", str(d / tag)]
    geo, full = common + ["--lr", "1e-2"], common + ["--method", "full", "--lr", "1e-3"]
    runs = [("ddp-geora", geo + out("ddp-geora") + ["--steps", "2"]),
            ("fsdp-geora", geo + out("fsdp-geora") + ["--steps", "2", "--fsdp", "--merge"]),
            ("fsdp-geora-4", geo + out("fsdp-geora-4") + ["--steps", "4", "--fsdp"]),
            ("fsdp-geora-sharded-rollouts", geo + out("fsdp-geora-sharded-rollouts") + ["--steps", "2", "--fsdp"]),
            ("copy", [str(d / "fsdp-geora"), str(d / "fsdp-geora-resumed")]),
            ("fsdp-geora-resumed", geo + out("fsdp-geora-resumed") + ["--steps", "4", "--fsdp", "--resume"]),
            ("ddp-full", full + out("ddp-full") + ["--steps", "2"]),
            ("fsdp-full", full + out("fsdp-full") + ["--steps", "2", "--fsdp", "--merge"]),
            ("fsdp-full-4", full + out("fsdp-full-4") + ["--steps", "4", "--fsdp"]),
            ("copy", [str(d / "fsdp-full"), str(d / "fsdp-full-resumed")]),
            ("fsdp-full-resumed", full + out("fsdp-full-resumed") + ["--steps", "4", "--fsdp", "--resume"])]
    plan = d / "plan.json"
    plan.write_text(json.dumps({"runs": runs, "dir": str(d), "model": str(d / "model")}))
    script = d / "worker.py"
    script.write_text(WORKER.format(here=HERE))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           str(script), str(plan)]
    p = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    load = lambda tag, rank=0: torch.load(d / f"{tag}-rank{rank}.pt")
    return d, load


def _close(a, b, tol):
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a) <= tol


def _steps(d, tag):
    with open(d / tag / "metrics.jsonl") as f:
        return [json.loads(l) for l in f if '"reward"' in l]


def test_fsdp_adapter_equals_replicated_run(launched):
    d, load = launched
    a, b = load("ddp-geora"), load("fsdp-geora")
    init = _micro_init(d)
    assert any(not torch.equal(a[k], init[k]) for k in a), "the adapter never moved: the check would be empty"
    assert _close(a, b, 1e-5)
    assert _close(b, load("fsdp-geora", 1), 0)                              # replicated on both ranks
    assert [l["reward"] for l in _steps(d, "ddp-geora")] == [l["reward"] for l in _steps(d, "fsdp-geora")]
    for x, y in zip(_steps(d, "ddp-geora"), _steps(d, "fsdp-geora")):   # AdamW hides a gradient's scale;
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-5)    # its logged norm does not


def test_fsdp_sharded_rollouts_equal_replicated_run(launched):
    """Rollouts with units resharded after every forward and generate(synced_gpus=True): the same run."""
    d, load = launched
    assert "fsdp-geora-sharded-rollouts" in torch.load(d / "probe-rank0.pt")["forced"]
    assert _close(load("ddp-geora"), load("fsdp-geora-sharded-rollouts"), 1e-5)
    assert [l["reward"] for l in _steps(d, "ddp-geora")] == \
        [l["reward"] for l in _steps(d, "fsdp-geora-sharded-rollouts")]


def test_rollouts_when_ranks_stop_at_different_lengths(launched):
    """Rank 0 stops after one token, rank 1 runs to the limit; both rollout modes finish (a deadlock would time the
    worker out). Unsharded: one all-gather per unit for the whole rollout (two generate calls), none per token.
    Sharded: one per layer per forward, and rank 0 keeps stepping with rank 1 (synced_gpus)."""
    d, _ = launched
    p0, p1 = (torch.load(d / f"probe-rank{r}.pt")["probe"] for r in (0, 1))
    for mode in ("unsharded", "sharded"):
        assert p0[mode]["length"] == 1 and p1[mode]["length"] == 12, (p0, p1)
    assert p0["unsharded"]["gathers"] == p1["unsharded"]["gathers"] == p0["unsharded"]["units"] == 3
    assert p0["sharded"]["gathers"] == p1["sharded"]["gathers"] >= 2 * 12 * 2     # 2 calls x 12 forwards x 2 layers


def test_sharded_reference_reshards_after_forward(launched):
    """Full fine-tuning's KL reference never runs backward, so FSDP's root default (stay gathered after forward,
    for backward) would keep its embedding and LM head whole on every GPU for the whole run."""
    d, _ = launched
    assert all(torch.load(d / f"probe-rank{r}.pt")["ref_resharded"] for r in (0, 1))


def test_sharded_checkpoint_before_any_step_leaves_adamw_alone(launched):
    """get_state_dict initialises an optimizer without state by an AdamW step at lr 0 (step count 1): the next real
    step would then use the second step's bias correction, unlike the same run without --fsdp."""
    d, _ = launched
    for r in (0, 1):
        probe = torch.load(d / f"probe-rank{r}.pt")
        assert probe["saved_untouched"] and probe["loaded_untouched"] and probe["reloaded"], probe


def test_fsdp_full_equals_replicated_run(launched):
    d, load = launched
    a, b = load("ddp-full"), load("fsdp-full")
    from transformers import AutoModelForCausalLM
    base = {n: p.detach() for n, p in AutoModelForCausalLM.from_pretrained(d / "model").named_parameters()}
    assert max((a[k] - base[k]).abs().max().item() for k in a) > 1e-4     # trained
    assert _close(a, b, 1e-5)
    for x, y in zip(_steps(d, "ddp-full"), _steps(d, "fsdp-full")):     # sum, not FSDP's default mean
        assert x["grad_norm"] > 0 and x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-5)


@pytest.mark.parametrize("tag", ["fsdp-geora", "fsdp-full"])
def test_fsdp_resume_is_exact(launched, tag):
    d, load = launched
    assert _close(load(f"{tag}-4"), load(f"{tag}-resumed"), 1e-6)
    assert [l["step"] for l in _steps(d, f"{tag}-resumed")] == [1, 2, 3, 4]


def test_sharded_bf16_init_is_exact_and_reference_is_w(launched):
    """bf16 base, sharded with the policy train.py picks on CUDA: logits equal the unsharded model's bit for bit at
    init and after B moves (A, B, A0, B0 plain fp32 tensors, the adapter branch in fp32), adapters_disabled is W."""
    d, _ = launched
    for rank in (0, 1):
        r = torch.load(d / f"exact-rank{rank}.pt")
        assert r["dtype"] == "torch.bfloat16" and r["exact"] and r["base"] and r["moved"] and r["fp32"], r


def test_sharded_run_exports_reload_with_peft_and_merge(launched):
    d, _ = launched
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    ids = torch.randint(2, 50, (2, 7), generator=torch.Generator().manual_seed(1))
    mine = geora.load_adapter(AutoModelForCausalLM.from_pretrained(d / "model"), str(d / "fsdp-geora"))
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(d / "model"), str(d / "fsdp-geora" / "peft"))
    merged = AutoModelForCausalLM.from_pretrained(d / "fsdp-geora" / "merged")
    base = AutoModelForCausalLM.from_pretrained(d / "model")
    with torch.no_grad():
        want = mine(ids).logits
        assert not torch.allclose(want, base(ids).logits, atol=1e-4)     # a trained adapter
        assert torch.allclose(peft(ids).logits, want, atol=1e-5)
        assert torch.allclose(merged(ids).logits, want, atol=1e-5)
    full = AutoModelForCausalLM.from_pretrained(d / "fsdp-full" / "merged")   # full FT: gathered weights
    _, load = launched
    got = dict(full.named_parameters())
    for k, v in load("fsdp-full").items():
        assert torch.allclose(got[k], v, atol=1e-6), k


def _micro_init(d):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(d / "model")
    geora.apply_geora(m, rank=4)
    return {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fsdp_one_process_smoke(world, tmp_path):
    """One GPU still runs every FSDP code path (NCCL, bf16 mixed precision for full fine-tuning)."""
    d = world
    for method in ("geora", "full"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", f"--master_port={_free_port()}",
               os.path.join(HERE, "train.py"), "--model", str(d / "model"), "--dataset", str(d / "data.jsonl"),
               "--eval-size", "4", "--eval-dataset", str(d / "data.jsonl"), "--prompts-per-step", "4",
               "--group-size", "4", "--max-new-tokens", "8", "--rank", "4", "--steps", "2", "--fsdp",
               "--method", method, "--lr", "1e-3", "--out", str(tmp_path / method), "--device", "cuda"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        steps = _steps(tmp_path, method)
        assert len(steps) == 2 and all(l["mem_gb"] > 0 for l in steps)
