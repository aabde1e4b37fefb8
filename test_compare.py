"""Tests of compare.py.

- The tiny world's CI sweep (2 methods, 1 seed, 1 rate, 2 steps on a briefly pretrained tiny base) and its
  resume: a second call runs nothing and gives the same results.
- The real-model path on a micro Qwen2 directory built here (hidden 32, 2 layers, the tiny tokenizer, taught
  in a second to answer " #### N"), with the local GSM8K and MATH-500 copies (skipped without ../shared/data):
  2 methods x 1 rate x 1 seed x 2 GRPO steps, evaluation on 3 problems of math500 and gsm8k, then the
  table, CSV and JSON; a rerun does no new work (nor does --report); a changed setting is refused.
- The job queue: one job per GPU id at a time; a failed job leaves the others running and queued alone.
- The command line as train.py's and eval.py's own parsers read it (no job runs); the rate picked on the
  holdout split, not the benchmarks; both modes' figure code on a stand-in for matplotlib (optional).
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

def test_queue_keeps_one_job_per_gpu(tmp_path):
    """Jobs get CUDA_VISIBLE_DEVICES=<their slot's id>, never two at once on one id; a job that waits for
    another's output (an evaluation for its run) starts once it exists."""
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


def test_queue_failure_leaves_the_other_jobs_alone(tmp_path):
    """A failed job (a run whose loss turned non-finite at a high rate, say) neither stops the jobs running
    beside it (hours of GPU work since their last checkpoint) nor the ones queued after it; a job that
    waits for the failed one is skipped; the call then ends with every failure and its log named."""
    import sys
    touch = lambda name, pause: dict(name=name, log=str(tmp_path / f"{name}.log"), ready=lambda: True,
                                     cmd=[sys.executable, "-c", f"import time; time.sleep({pause}); "
                                                                f"open({str(tmp_path / name)!r}, 'w').close()"])
    bad = dict(name="bad", cmd=[sys.executable, "-c", "import sys; sys.exit(3)"], log=str(tmp_path / "bad.log"),
               ready=lambda: True)
    waits = dict(touch("eval bad", 0), ready=lambda: (tmp_path / "bad").exists())   # never: bad failed
    jobs = [waits, bad, touch("beside", 1.5), touch("queued", 0)]
    with pytest.raises(SystemExit, match=r"(?s)bad failed \(exit 3\); see .*bad.log.*not started.*eval bad"):
        compare.run_queue(jobs, ["0", "1"], None)
    assert (tmp_path / "beside").exists() and (tmp_path / "queued").exists()
    assert not (tmp_path / "eval bad").exists()


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
    assert full["s_head"] is not None and full["rel_update"] is not None   # measured against its frozen copy
    assert (runs / "full-lr1e-06-s0" / "merged").is_dir()                        # evaluated merged
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
    reported = compare.main([*argv, "--report"])                       # the tables alone, from what finished
    assert reported["best_lr"] == summary["best_lr"] and len(reported["runs"]) == 2

    # a changed setting for an existing run directory is refused, naming the key and the fix
    with pytest.raises(SystemExit, match=r"train steps: 2 -> 3(.|\n)*--runs"):
        compare.main(_real_argv(tmp_path, model, "--steps", "3"))
    with pytest.raises(SystemExit, match=r"eval max_new_tokens: 8 -> 9(.|\n)*delete RUN/eval"):
        compare.main(_real_argv(tmp_path, model, "--eval-max-new-tokens", "9"))
    assert {p: os.path.getmtime(p) for p in watched} == stamps


def test_real_model_flags_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(SystemExit, match="--train-args may not set --lr"):
        compare.main(["--model", "m", "--train-args", "--lr 1e-3", "--runs", str(tmp_path / "r")])
    # an abbreviation argparse would expand (--eval-dataset: a benchmark as the selection split) is refused too
    with pytest.raises(SystemExit, match="--train-args may not set --eval-d"):
        compare.main(["--model", "m", "--train-args", "--eval-d math500", "--runs", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="--holdout must be >= 1"):
        compare.main(["--model", "m", "--holdout", "0", "--runs", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="--eval-temperature > 0"):
        compare.main(["--model", "m", "--eval-n", "4", "--runs", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="need --model"):
        compare.main(["--preset", "paper"])
    with pytest.raises(SystemExit, match="not both"):
        compare.main(["--model", "m", "--gpus", "0,1", "--jobs", "2", "--runs", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


@needs_data
def test_real_model_flags_reach_train_and_eval(tmp_path, monkeypatch):
    """The command line as train.py and eval.py parse it (no job runs): --preset, --steps, --rates on the
    preset's lr, the holdout split, --merge for full fine-tuning, the GeoRA ablations' --init; --eval-n,
    --eval-temperature, --eval-top-p, --eval-limit, and --eval-max-new-tokens defaulting to the preset's
    budget; --gpus as the queue's slots."""
    import eval as evalpy
    import train
    seen = {}

    def queue(jobs, slots, threads):
        seen.update(jobs=jobs, slots=slots)
        raise SystemExit("queued")
    monkeypatch.setattr(compare, "run_queue", queue)
    argv = ["--model", "Org/Model", "--data-dir", str(DATA), "--preset", "paper", "--methods", "geora-tail,full",
            "--rates", "1,3", "--seeds", "4", "--steps", "7", "--gpus", "2,5", "--eval-n", "8",
            "--eval-temperature", "0.6", "--eval-top-p", "0.95", "--eval-limit", "2", "--runs", str(tmp_path / "r")]
    with pytest.raises(SystemExit, match="queued"):
        compare.main(argv)
    assert seen["slots"] == ["2", "5"]
    trains = {j["name"]: j["cmd"][j["cmd"].index("--worker") + 2:] for j in seen["jobs"] if j["name"][:5] == "train"}
    evals = {j["name"]: j["cmd"][2:] for j in seen["jobs"] if j["name"][:4] == "eval"}
    assert len(trains) == 4 and len(evals) == 5                       # 2 methods x 2 rates, + the base model
    for name, argv_ in trains.items():
        t = train.parse_args(argv_)
        factor = 3 if "3e-06" in name else 1
        assert (t.preset, t.steps, t.lr, t.seed, t.holdout, t.eval_size, t.eval_every, t.dataset, t.max_new_tokens) \
            == ("paper", 7, factor * 1e-6, 4, 500, 500, 7, "gsm8k", 4096), name
        assert (t.method, t.init, t.merge, t.log_kl) == (("full", "full", True, True) if "full" in name
                                                         else ("geora", "geora-tail", False, False))
    got = {}
    monkeypatch.setattr(evalpy, "run", lambda tag, model, adapter, benches, out, a: got.update(
        {out: (model, adapter, benches, a)}) or {"benchmarks": {}, "out": out})
    for cmd in evals.values():
        evalpy.main(cmd)
    assert len(got) == 5
    for out, (model, adapter, benches, a) in got.items():
        run = os.path.dirname(out)
        assert benches == ["math500", "aime24", "amc23", "olympiadbench", "minerva", "gsm8k"]
        assert (a.n, a.temperature, a.top_p, a.limit, a.max_new_tokens, a.data_dir) == (8, 0.6, 0.95, 2, 4096,
                                                                                         str(DATA))
        if run.endswith("base"):
            assert (model, adapter) == ("Org/Model", None)
        elif "full" in run:
            assert (model, adapter) == (os.path.join(run, "merged"), None)
        else:
            assert (model, adapter) == ("Org/Model", run)


def test_rate_is_selected_on_the_holdout_split_not_the_benchmarks():
    """Per method, the rate with the best mean final holdout accuracy over seeds (ties: the smaller rate),
    even where a reported benchmark would pick another."""
    row = lambda m, lr, hold, bench: dict(method=m, lr=lr, holdout_acc=hold, in_domain=bench, math500=bench)
    runs = [row("geora", 1e-6, 0.50, 0.9), row("geora", 1e-6, 0.40, 0.9),     # benchmarks favour 1e-6
            row("geora", 3e-6, 0.60, 0.1), row("geora", 3e-6, 0.40, 0.1),     # holdout mean 0.5 > 0.45
            row("lora", 3e-6, 0.30, 0.2), row("lora", 1e-6, 0.30, 0.8)]       # a holdout tie: the smaller
    by, best = compare.select_rates(runs)
    assert best == {"geora": 3e-6, "lora": 1e-6} and len(by["geora"][3e-6]) == 2


class _Plot:
    """A stand-in for matplotlib.pyplot (not installed here): records every call, writes savefig's file."""
    def __init__(self, calls):
        self.calls = calls

    def subplots(self, *a, **k):
        self.calls.append(("subplots", a, k))
        return _Plot(self.calls), tuple(_Plot(self.calls) for _ in range(2)) if a[1:] == (2,) else _Plot(self.calls)

    def savefig(self, path, **k):
        self.calls.append(("savefig", (path,), k))
        open(path, "w").close()

    def __getattr__(self, name):
        return lambda *a, **k: self.calls.append((name, a, k))


def test_figures_plot_the_sweep(tmp_path, monkeypatch):
    """Both modes' figure code (matplotlib is optional, so CI would otherwise never run it): the files, and the
    accuracy-vs-rate points at every rate of every method; the curves at each method's selected rate."""
    calls = []
    monkeypatch.setattr(compare, "_pyplot", lambda: _Plot(calls))
    curve = lambda v: [(s, v) for s in range(1, 5)]
    runs = [dict(method=m, lr=lr, seed=s, factor=lr / 1e-6, math500=a, in_domain=a, holdout_acc0=0.2, holdout_acc=h,
                 kl=0.01, s_head=None, rel_update=None, trainable=10, s_per_step=1.0, peak_mem_gb=1.0,
                 peak_mem_source="cuda", reward_curve=curve(h), kl_curve=[(1, None), *curve(0.1)[1:]])
            for m, lr, a, h in (("geora", 1e-6, 0.5, 0.3), ("geora", 3e-6, 0.4, 0.6), ("full", 1e-6, 0.1, 0.2))
            for s in (0, 1)]
    summary = dict(settings=dict(model="M", dataset="gsm8k", preset=None, steps=4, holdout=8, rates=[1, 3],
                                 seeds=[0, 1], in_domain=["math500"], extra=[], eval=dict(n=1, temperature=0.0,
                                 top_p=1.0, max_new_tokens=8, limit=None)), base=None, runs=runs)
    compare.report_real(summary, str(tmp_path))
    assert {p.name for p in tmp_path.iterdir()} == {"compare.md", "acc_vs_lr.png", "reward_kl_vs_step.png"}
    bars = [(a[0], a[1]) for name, a, _ in calls if name == "errorbar"]
    assert ([1e-6, 3e-6], [pytest.approx(0.5), pytest.approx(0.4)]) in bars and ([1e-6], [pytest.approx(0.2)]) in bars
    lines = [(a[0], a[1]) for name, a, _ in calls if name == "plot"]
    assert ([1, 2, 3, 4], [pytest.approx(0.6)] * 4) in lines                  # geora's reward at its rate, 3e-6
    tiny = [dict(method="geora", lr=lr, seed=0, acc0=0.4, acc=acc, ood0=0.1, ood=0.1, kl=0.0, s_head=0.0,
                 rel_update=0.0, trainable=1, s_per_step=1.0, peak_rss_mb=1.0, curve=[(0, 0.4), (2, acc)],
                 kl_curve=[(1, 0.0), (2, None)]) for lr, acc in ((1e-4, 0.5), (3e-4, 0.7))]
    calls.clear()
    (tmp_path / "tiny").mkdir()
    compare.report(tiny, str(tmp_path / "tiny"), [1, 3])
    assert {p.name for p in (tmp_path / "tiny").iterdir()} == {"compare.md", "acc_vs_step.png", "acc_vs_lr.png"}
    assert ([0, 2], [0.4, 0.7]) in [(a[0], a[1]) for name, a, _ in calls if name == "plot"]   # at the best rate


@pytest.mark.skipif(torch.cuda.is_available(), reason="the thread count applies to CPU jobs")
def test_cpu_jobs_share_the_cores_and_a_lone_job_keeps_them(tmp_path, monkeypatch):
    """Jobs side by side (the tiny world, --jobs N) get one thread each; one real-model job alone (--model,
    --jobs 1) keeps every core. The worker runs in this process with a stand-in for train.main."""
    import sys
    import train
    monkeypatch.setattr(train, "main", lambda argv: {"model": torch.nn.Linear(2, 2)})
    probe = dict(name="p", log=str(tmp_path / "p.log"), ready=lambda: True, cmd=[
        sys.executable, "-c", f"import os; open({str(tmp_path / 'env')!r}, 'w').write(os.environ['COMPARE_THREADS'])"])
    compare.run_queue([probe], [None, None], 1)
    monkeypatch.setenv("COMPARE_THREADS", (tmp_path / "env").read_text())
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        compare.worker(str(tmp_path), [])
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        monkeypatch.delenv("COMPARE_THREADS")                              # run_queue(..., cpu_threads=None)
        compare.worker(str(tmp_path), [])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "run.json").read_text())["trainable"] == 6
