"""Tests of compare.py.

- The tiny world's CI sweep (2 methods, 1 seed, 1 rate, 2 steps on a briefly pretrained tiny base) and its
  resume: a second call runs nothing and gives the same results.
- The real-model path on a micro Qwen2 directory built here (hidden 32, 2 layers, the tiny tokenizer, taught
  in a second to answer " #### N"), with the local GSM8K and MATH-500 copies (skipped without ../shared/data):
  2 methods x 1 rate x 1 seed x 2 GRPO steps, evaluation on 3 problems of math500 and gsm8k, then the
  table, CSV and JSON; a rerun does no new work; a changed setting is refused.
"""

import csv
import json
import os
from pathlib import Path

import pytest
import torch

import compare

DATA = Path(__file__).resolve().parent.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data not present")


def test_compare_smoke_runs_and_resumes(tmp_path):
    argv = ["--smoke", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    results = compare.main(argv)
    assert {r["method"] for r in results} == {"geora", "lora"}
    for r in results:
        assert 0.0 <= r["acc"] <= 1.0 and 0.0 <= r["ood"] <= 1.0
        assert r["trainable"] > 0 and r["s_per_step"] > 0 and r["peak_rss_mb"] > 0
        assert [s for s, _ in r["curve"]] == [0, 2]  # evaluated before and after
        assert r["kl"] is None or r["kl"] >= 0  # None: every group had equal rewards (a 20-step base)
    table = (tmp_path / "out" / "compare.md").read_text()
    assert "| geora |" in table and "| lora |" in table
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["acc"] for r in saved] == [r["acc"] for r in results]
    stamps = {p: os.path.getmtime(p) for p in (tmp_path / "runs").glob("*/run.json")}
    again = compare.main(argv)  # finished runs are skipped
    assert {p: os.path.getmtime(p) for p in stamps} == stamps
    assert [r["acc"] for r in again] == [r["acc"] for r in results]


# ----------------------------------------------------------------------------- the job queue

def test_queue_keeps_one_job_per_gpu_and_stops_on_a_failure(tmp_path):
    """Jobs get CUDA_VISIBLE_DEVICES=<their slot's id>, never two at once on one id; a job that waits for
    another's output (an evaluation for its run) starts once it exists; a failure stops the rest."""
    import sys
    rec = ("import json, os, sys, time; t = time.time(); time.sleep(0.3); "
           "open(sys.argv[1], 'w').write(json.dumps([os.environ.get('CUDA_VISIBLE_DEVICES'), t, time.time()]))")
    job = lambda name, ready=lambda: True: dict(name=name, cmd=[sys.executable, "-c", rec, str(tmp_path / name)],
                                                 log=str(tmp_path / f"{name}.log"), ready=ready)
    jobs = [job("after-j0", lambda: (tmp_path / "j0").exists()), *[job(f"j{i}") for i in range(4)]]
    assert compare.run_queue(jobs, ["3", "5"], None) == 5
    got = {j["name"]: json.loads((tmp_path / j["name"]).read_text()) for j in jobs}
    assert {g for g, _, _ in got.values()} == {"3", "5"}
    for gpu in ("3", "5"):
        spans = sorted((a, b) for g, a, b in got.values() if g == gpu)
        assert all(b <= a2 for (_, b), (a2, _) in zip(spans, spans[1:])), spans
    assert got["after-j0"][1] >= got["j0"][2]
    bad = dict(name="bad", cmd=[sys.executable, "-c", "import sys; sys.exit(3)"], log=str(tmp_path / "bad.log"),
               ready=lambda: True)
    slow = dict(name="slow", cmd=[sys.executable, "-c", "import time; time.sleep(60)"],
                log=str(tmp_path / "slow.log"), ready=lambda: True)
    with pytest.raises(SystemExit, match=r"bad failed \(exit 3\); see .*bad.log\nstopped: slow"):
        compare.run_queue([bad, slow], ["0", "1"], None)


# ----------------------------------------------------------------------------- real-model path

def _micro_qwen(path):
    """A 2-layer Qwen2 with the tiny tokenizer (byte-level BPE: any text tokenizes; GSM8K prompts are
    100-600 tokens, so the context is 1024), taught in 15 AdamW steps to end GSM8K prompts with
    " #### 1|2|3" + EOS: short, well-formed completions."""
    import tiny
    from data import load_rows
    from test_train import teach_answer_format
    from transformers import Qwen2Config, Qwen2ForCausalLM
    tok = tiny.make_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    questions = [r["question"] for r in load_rows("gsm8k", "train", data_dir=str(DATA), limit=64)]
    teach_answer_format(model, tok, questions, steps=15, batch=8, answers=3)
    torch.set_num_threads(threads)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _real_argv(tmp_path, model, *extra):
    return ["--model", str(model), "--dataset", "gsm8k", "--data-dir", str(DATA), "--methods", "geora,full",
            "--rates", "1", "--seeds", "0", "--steps", "2", "--holdout", "4", "--jobs", "3",
            "--train-args", "--prompts-per-step 2 --group-size 4 --max-new-tokens 8 --micro-batch 8 --rank 4 "
                            "--no-gradient-checkpointing",
            "--eval-benchmarks", "math500", "--eval-extra", "gsm8k", "--eval-limit", "3",
            "--eval-max-new-tokens", "8", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), *extra]


@needs_data
def test_real_model_comparison_runs_resumes_and_refuses_changes(tmp_path):
    model = _micro_qwen(tmp_path / "micro")
    argv = _real_argv(tmp_path, model)
    summary = compare.main(argv)
    runs, out = tmp_path / "runs", tmp_path / "out"
    assert {r["method"] for r in summary["runs"]} == {"geora", "full"}
    for r in summary["runs"]:
        assert r["lr"] == {"geora": 1e-5, "full": 1e-6}[r["method"]]        # 1x train.LLM_LR, recorded
        for b in ("math500", "gsm8k"):
            assert r["eval"][b]["problems"] == 3 and 0.0 <= r[b] <= 1.0
        assert r["in_domain"] == r["math500"]                              # gsm8k is reported apart
        assert [s for s, _ in r["holdout_curve"]] == [0, 2]                # before and after training only
        assert [s for s, _ in r["reward_curve"]] == [1, 2]
        assert r["trainable"] > 0 and r["s_per_step"] > 0 and r["peak_mem_gb"] > 0
        assert r["peak_mem_source"] == "rss" and r["kl"] is not None and r["kl"] >= 0
        d = runs / f"{r['method']}-lr{r['lr']:g}-s0"
        settings = json.loads((d / "settings.json").read_text())
        assert settings["train"]["holdout"] == 4 and settings["train"]["lr"] == r["lr"]
        assert settings["eval"]["limit"] == 3 and "--holdout" in settings["train_argv"]
    full = next(r for r in summary["runs"] if r["method"] == "full")
    assert full["s_head"] is None and (runs / "full-lr1e-06-s0" / "merged").is_dir()   # evaluated merged
    assert json.loads((runs / "full-lr1e-06-s0" / "settings.json").read_text())["eval"]["model"].endswith("merged")
    assert summary["base"]["math500"] is not None and summary["best_lr"] == {"geora": 1e-5, "full": 1e-6}
    assert "holdout" in summary["selection"]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"method", "lr", "seed", "math500", "gsm8k", "in_domain", "kl"} <= set(rows[0])
    table = (out / "compare.md").read_text()
    for needle in ("| base model |", "| geora | 1e-05 |", "| full | 1e-06 |", "math500", "gsm8k", "in-domain avg"):
        assert needle in table, needle
    assert json.loads((out / "results.json").read_text())["best_lr"] == summary["best_lr"]

    # a rerun does no new work: nothing trained or evaluated again, the same numbers
    watched = [*runs.glob("*/run.json"), *runs.glob("*/eval/*.jsonl"), *runs.glob("*/eval/summary.json"),
               *runs.glob("*/settings.json"), *runs.glob("*/metrics.jsonl")]
    assert len(watched) >= 2 + 3 * 3 + 2
    stamps = {p: os.path.getmtime(p) for p in watched}
    again = compare.main(argv)
    assert {p: os.path.getmtime(p) for p in watched} == stamps
    assert [r["math500"] for r in again["runs"]] == [r["math500"] for r in summary["runs"]]

    # a changed setting for an existing run directory is refused, naming the key and the fix
    with pytest.raises(SystemExit, match=r"train steps: 2 -> 3(.|\n)*--runs"):
        compare.main(_real_argv(tmp_path, model, "--steps", "3"))
    with pytest.raises(SystemExit, match=r"eval max_new_tokens: 8 -> 9(.|\n)*delete RUN/eval"):
        compare.main(_real_argv(tmp_path, model, "--eval-max-new-tokens", "9"))
    assert {p: os.path.getmtime(p) for p in watched} == stamps


def test_real_model_flags_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(SystemExit, match="--train-args may not set --lr"):
        compare.main(["--model", "m", "--train-args", "--lr 1e-3", "--runs", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="--holdout must be >= 1"):
        compare.main(["--model", "m", "--holdout", "0", "--runs", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="--eval-temperature > 0"):
        compare.main(["--model", "m", "--eval-n", "4", "--runs", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="need --model"):
        compare.main(["--preset", "paper"])
    with pytest.raises(SystemExit, match="not both"):
        compare.main(["--model", "m", "--gpus", "0,1", "--jobs", "2", "--runs", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()
