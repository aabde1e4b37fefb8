"""
The paper's comparison as one resumable command: GeoRA vs LoRA, PiSSA, MiLoRA, full fine-tuning (and two
GeoRA ablations) under GRPO, over a learning-rate sweep and several seeds. Two modes.

    python compare.py                     # tiny world: 7 methods x 3 rates x 3 seeds, about an hour on 2 cores
    python compare.py --smoke             # tiny world, 2 methods x 1 rate x 1 seed x 2 steps: what CI runs
    python compare.py --methods geora,pissa --seeds 0 --steps 40   # any subset
    python compare.py --model Qwen/Qwen2.5-1.5B-Instruct --dataset gsm8k --preset paper --gpus 0,1,2,3
    python compare.py --model M --dataset math --rates 1 --seeds 0 --eval-n 8 --eval-temperature 0.6
    python compare.py --model M ... --report                # tables and figures from what has finished

Every run is `train.py` in its own process (so its peak memory is its own) with the same settings for every
method: only the method and the learning rate change. Per-run outputs go to --runs, one directory per
(method, rate, seed) named METHOD-lrLR-sSEED; the summary goes to --out.

Tiny world (the default: no --model). train.py's offline tiny world, rank 16, 16 prompts x 8 samples per
step, --steps 60 with an evaluation every --eval-every 20 steps. Measured per run (OUT/metrics.jsonl and the
worker): held-out greedy accuracy on the RL task over steps, KL to the initial policy, out-of-domain accuracy
on the families RL never trains on (`mul`, `total`: forgetting), S_head and relative update norm
(geora.geometry_report), trainable parameters, seconds per step, peak RSS. Outputs: results.json,
results.csv, compare.md (mean +- std over seeds at each method's best rate, and the whole rate sweep),
acc_vs_step.png and acc_vs_lr.png. The tiny world has no separate model-selection split: the best rate is
picked on the held-out set the table reports, which flatters every method alike. Rates are 0.3x, 1x, 3x each
method's tuned tiny-world default (train.TINY_LR).

Real model (--model M, with --dataset gsm8k|math|deepmath|PATH.jsonl, default gsm8k): per run, train.py on
M, then eval.py on the trained model; the base model M is evaluated once too (the table's first row).
Choices:
- Rates. --rates are factors of a base rate per method: with --preset paper the preset's lr (1e-6, the same
  for every method, as the paper is reported), otherwise train.LLM_LR[method] (the GeoRA ablations use
  GeoRA's). The absolute lr of every run is in its directory name, settings.json, results.csv and results.json.
- Model selection, so that the table flatters no one: train.py --holdout N (default 500) keeps a fixed draw
  of N rows of the *training* set (the same rows for every method, rate and seed) out of training and
  measures greedy accuracy on them before and after training (`eval_acc`). Each method's rate is the one with
  the highest mean final holdout accuracy over seeds (ties: the smaller rate). The reported benchmarks never
  choose anything. With --dataset gsm8k the selection split is N GSM8K train problems and GSM8K test is
  reported; with --dataset math it is N MATH train problems (none of them in MATH-500).
- Evaluation. eval.py, greedy by default (--eval-n, --eval-temperature, --eval-top-p for avg@n),
  --eval-max-new-tokens defaulting to the training budget (train.py's resolved --max-new-tokens; the paper
  preset's 4096), --eval-limit N for the first N problems of each benchmark (smoke runs). Adapters are
  evaluated as `eval.py --model M --adapter RUN`; full fine-tuning is trained with --merge and evaluated as
  `--model RUN/merged`. The in-domain average is over --eval-benchmarks (default math500, aime24, amc23,
  olympiadbench, minerva); --eval-extra (default gsm8k) is reported beside it, outside the average. Every
  benchmark is loaded before anything starts, so a missing one costs no GPU time.
- Metrics per run: per-benchmark accuracy (avg@n) and its in-domain mean; holdout accuracy; KL to the initial
  policy = the last step's `kl` (k3 per token over all completions; full fine-tuning keeps a frozen copy
  with --log-kl so its KL is measured like the adapters'); S_head and relative update from the final eval
  line; trainable parameters; seconds per step = median of gen_s + train_s; peak memory = the largest
  `mem_gb` in metrics.jsonl (a step's peak: CUDA max allocated, or the peak RSS on a CPU), else the
  worker's torch.cuda.max_memory_allocated, else its peak RSS (`peak_mem_source` says cuda or rss).
- Defaults: --steps and the rest of train.py's settings are train.py's own (the preset's, else its LLM
  defaults); --eval-every defaults to the run's length (train.py evaluates the holdout before the first step
  and after the last: the selection needs the final accuracy, and the reward/KL curves come from every
  step's line). More train.py flags go in --train-args "..." (say "--max-new-tokens 1024 --rollout-batch 256"),
  checked by train.py's own parser before anything starts; the flags compare.py sets itself are refused there.
- Outputs in --out: results.csv (one row per run: method, lr, seed, a column per benchmark, in_domain,
  holdout and the metrics above), results.json (also the base model's scores, every curve and every
  benchmark's full eval summary), compare.md (the paper-shaped table at each method's selected rate, mean +-
  std over seeds, and the in-domain average at every rate), acc_vs_lr.png (in-domain average and holdout
  accuracy vs learning rate) and reward_kl_vs_step.png (reward and KL vs step at each method's selected rate).
  Default --runs/--out: runs/compare-MODEL-DATASET and results/compare-MODEL-DATASET.
Both modes:
- Scheduling. --gpus 0,1,2,3: one job per listed GPU at a time, with CUDA_VISIBLE_DEVICES=<id> in the job's
  environment (repeat an id to share a GPU); training and evaluation jobs go through the same queue, and an
  evaluation takes the next free GPU as soon as its run has finished. Without --gpus: --jobs processes side by
  side (default 2 in the tiny world, 1 with --model), on whatever device each finds, one CPU thread each (the
  tiny world always; with --model when --jobs > 1, a lone job keeping every core). A failed job stops nothing
  else (killing the jobs beside it would lose their work since their last checkpoint); its evaluation is
  skipped, and once the rest has finished the call exits with every failure's log named: RUN/log.txt for
  training, RUN/eval-log.txt for evaluation. --report then tabulates what finished.
- Resume. Finished training = RUN/run.json, written atomically by the worker after train.py returns; an
  interrupted run continues from its last checkpoint (train.py --resume). Finished evaluation = RUN/eval's
  summary.json holding every benchmark with the expected number of problems and samples; an interrupted one
  continues where it stopped (eval.py keeps finished lines). A rerun with nothing left does no work.
- Settings. RUN/settings.json records the train.py argv, train.py's resolved settings and the eval settings.
  Rerunning with a different setting for an existing run is refused, naming the keys and the fix (another
  --runs, or delete the directory; delete only RUN/eval to re-evaluate a trained run with new eval settings).
  Settings that change speed or memory only (--micro-batch, --rollout-batch, --gradient-checkpointing,
  --device, --wandb, --eval-batch-size) may change between calls; settings train.py did not have when a run
  was made are not compared.
- Known limit: a run whose loss turns non-finite stops train.py (that run fails, the others go on) and fails
  again on every rerun: drop or lower that rate, or read the rest with --report.
"""

import argparse
import csv
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time

from data import load_rows, read_jsonl

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("geora", "lora", "pissa", "milora", "full", "geora-random", "geora-tail")
PAPER_METHODS = ("geora", "lora", "pissa", "milora", "full")  # the paper's main table
RATE_FACTORS = (0.3, 1.0, 3.0)
IN_DOMAIN = "math500,aime24,amc23,olympiadbench,minerva"
EXTRA = "gsm8k"
DEFAULT_HOLDOUT = 500
# train.py flags compare.py sets for every run: --train-args may not pass them
OWN_FLAGS = ("--model", "--method", "--init", "--lr", "--seed", "--out", "--dataset", "--data-dir", "--preset",
             "--steps", "--holdout", "--eval-size", "--eval-every", "--eval-dataset", "--merge", "--log-kl",
             "--resume", "--reward", "--reward-weights")
# resolved train.py settings that change speed or memory, never results: not compared on a rerun
RUNTIME_KEYS = ("micro_batch", "micro_batch_tokens", "kl_every", "rollout_batch", "gradient_checkpointing", "device", "wandb", "resume", "config",
                "wandb_name", "wandb_entity", "tensorboard", "log_completions", "keep_checkpoints", "save_peft_every")
# results.csv columns besides the benchmarks: a benchmark may not take one of these names
RUN_KEYS = ("method", "lr", "seed", "factor", "in_domain", "holdout_acc0", "holdout_acc", "kl", "s_head",
            "rel_update", "trainable", "s_per_step", "peak_mem_gb", "peak_mem_source", "train_wall_s")


# ----------------------------------------------------------------------------- one run (both modes)

def run_args(method, lr, seed, steps, eval_every, out, base):
    """train.py flags of one tiny-world run."""
    m = method if method in PAPER_METHODS else "geora"
    a = ["--model", base, "--dataset", "tiny", "--method", m, "--lr", f"{lr:g}", "--seed", str(seed),
         "--steps", str(steps), "--eval-every", str(eval_every), "--save-every", str(steps), "--out", out]
    if m != method:
        a += ["--init", method]
    if method == "full":
        a += ["--log-kl"]
    return a


def reward_flags(args):
    """--reward / --reward-weights, passed to every train.py run and every eval.py call alike."""
    return [*(["--reward", args.reward] if args.reward else []),
            *(["--reward-weights", args.reward_weights] if args.reward_weights else [])]


def config_keys(train_args):
    """The keys of a --config FILE named in --train-args (compare.py checks them against its own flags)."""
    import train
    toks = shlex.split(train_args or "")
    path = train._config_flag(toks)
    return [] if path is None else list(train.read_config(path))


def worker(out, argv):
    """Run train.main in this process; record its wall/CPU seconds and peak memory in OUT/run.json (the
    marker of a finished run, written atomically)."""
    import torch
    threads = os.environ.get("COMPARE_THREADS")  # run_queue's share of the cores: jobs side by side get one each
    if threads and not torch.cuda.is_available():  # (a lone real-model job on a CPU gets no limit: every core)
        torch.set_num_threads(int(threads))
    import train
    t0, c0 = time.time(), time.process_time()
    res = train.main(argv)
    trainable = sum(p.numel() for p in res["model"].parameters() if p.requires_grad)
    info = dict(wall_s=time.time() - t0, cpu_s=time.process_time() - c0, trainable=trainable,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        info["cuda_peak_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
    atomic_json(os.path.join(out, "run.json"), info)


def atomic_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def resolve_train(argv):
    """train.py's resolved settings for these flags (its own parser and defaults), JSON-ready."""
    import train
    try:
        return vars(train.parse_args(argv))
    except ValueError as e:
        raise SystemExit(f"error: train.py refuses these settings: {e}") from None
    except SystemExit:  # its parser printed the reason
        raise SystemExit(f"error: train.py's parser rejected {shlex.join(argv)} (reason above): "
                         f"check --train-args") from None


# ----------------------------------------------------------------------------- settings files

def settings_diff(old, new, with_eval):
    """['key: old -> new', ...] for the settings that define a run (see RUNTIME_KEYS)."""
    diff = []
    for k in ("method", "lr", "seed"):
        if old.get(k) != new.get(k):
            diff.append(f"{k}: {old.get(k)!r} -> {new.get(k)!r}")
    ot, nt = old.get("train") or {}, new.get("train") or {}
    for k in sorted(set(ot) & set(nt) - set(RUNTIME_KEYS)):
        if ot[k] != nt[k]:
            diff.append(f"train {k}: {ot[k]!r} -> {nt[k]!r}")
    if with_eval:
        oe, ne = old.get("eval") or {}, new.get("eval") or {}
        for k in sorted(set(oe) | set(ne)):
            if oe.get(k) != ne.get(k):
                diff.append(f"eval {k}: {oe.get(k)!r} -> {ne.get(k)!r}")
    return diff


def check_settings(plan):
    """Refuse (SystemExit) when an existing run directory was made with other settings. Eval settings
    count only once that run has an evaluation (RUN/eval): before that they are just rewritten."""
    bad = []
    for p in plan:
        path = os.path.join(p["dir"], "settings.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            old = json.load(f)
        diff = settings_diff(old, p["settings"], os.path.isdir(os.path.join(p["dir"], "eval")))
        if diff:
            bad.append((p["dir"], diff))
    if not bad:
        return
    eval_only = all(d.startswith("eval ") for _, diff in bad for d in diff)
    lines = "\n".join(f"  {d}: {'; '.join(diff)}" for d, diff in bad[:8])
    more = f"\n  ... and {len(bad) - 8} more" if len(bad) > 8 else ""
    fix = ("delete RUN/eval in each to re-evaluate the trained runs with the new evaluation settings, "
           "pass another --runs DIR, or rerun with the settings they were made with" if eval_only else
           "pass another --runs DIR, delete those directories to start them over, or rerun with the settings "
           "they were made with")
    raise SystemExit(f"error: {len(bad)} run director{'y holds a run' if len(bad) == 1 else 'ies hold runs'} "
                     f"made with other settings:\n{lines}{more}\nfix: {fix}")


def write_settings(p):
    os.makedirs(p["dir"], exist_ok=True)
    atomic_json(os.path.join(p["dir"], "settings.json"), p["settings"])


# ----------------------------------------------------------------------------- the job queue

def run_queue(jobs, slots, cpu_threads):
    """Run every job once, at most one per slot. jobs: dicts with name, cmd, log, ready() -> bool and an
    optional prepare() called just before the start. slots: a CUDA device id (str) per slot, or None for
    a slot on whatever device the job finds. cpu_threads: each job's share of the cores (the worker's
    torch threads, and OMP_NUM_THREADS unless the caller set it), or None for no limit. The first job in
    `jobs` that is ready takes a free slot, so list evaluations first: each starts as soon as its run has
    finished. A failed job stops nothing else: stopping the jobs beside it would throw away their work
    since their last checkpoint (hours of GPU time at the paper's setting), and one diverging rate would
    block the whole sweep on every rerun. Jobs that wait for a failed one never become ready and are
    skipped; once nothing else can run, the call ends (SystemExit) naming every failure's log. Ctrl-C stops
    every running job (each resumes on the next call). Returns the number started."""
    pending, running, free, started, failed = list(jobs), [], list(range(len(slots))), 0, []
    try:
        while pending or running:
            for item in list(running):
                proc, job, slot, log = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                free.append(slot)
                free.sort()
                log.close()
                if proc.returncode:
                    failed.append(f"{job['name']} failed (exit {proc.returncode}); see {job['log']}")
                    print(f"   FAILED: {failed[-1]} (the other jobs go on)", flush=True)
                    continue
                print(f"   done: {job['name']}", flush=True)
            for job in [j for j in pending if j["ready"]()]:
                if not free:
                    break
                slot = free.pop(0)
                pending.remove(job)
                started += 1
                if job.get("prepare"):
                    job["prepare"]()
                env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
                if slots[slot] is not None:
                    env["CUDA_VISIBLE_DEVICES"] = slots[slot]
                if cpu_threads:
                    env["COMPARE_THREADS"] = str(cpu_threads)
                    if "OMP_NUM_THREADS" not in os.environ:
                        env["OMP_NUM_THREADS"] = str(cpu_threads)
                os.makedirs(os.path.dirname(job["log"]), exist_ok=True)
                log = open(job["log"], "a")
                log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(job['cmd'])}\n")
                log.flush()
                where = f" (GPU {slots[slot]})" if slots[slot] is not None else ""
                print(f"== [{started}/{len(jobs)}] {job['name']}{where}", flush=True)
                running.append((subprocess.Popen(job["cmd"], stdout=log, stderr=subprocess.STDOUT, env=env,
                                                 cwd=HERE), job, slot, log))
            if pending and not running and not any(j["ready"]() for j in pending):
                if failed:  # they wait for a run that failed
                    break
                raise RuntimeError(f"{len(pending)} jobs wait for runs that never finish")  # a planning bug
            time.sleep(0.2)
    finally:  # stopping early (Ctrl-C, an error here): the running jobs stop too; all of them resume later
        for proc, _, _, log in running:
            proc.terminate()
        for proc, _, _, log in running:
            proc.wait()
            log.close()
    if failed:
        skipped = f"\nnot started (they need a failed run): {', '.join(j['name'] for j in pending)}" if pending else ""
        raise SystemExit(f"error: {len(failed)} of {started} jobs failed:\n  " + "\n  ".join(failed) + skipped
                         + "\nevery other job finished and is kept. Fix the cause and rerun the same command: it "
                           "retries only what is missing (a run whose loss turned non-finite fails again: drop or "
                           "lower that rate); add --report for the tables of what has finished")
    return started


def slots_of(args, default_jobs):
    """(slots, threads per CPU job) from --gpus / --jobs."""
    if args.gpus is not None:
        if args.jobs is not None:
            raise SystemExit("error: pass --gpus (one job per listed GPU) or --jobs, not both")
        gpus = [g.strip() for g in args.gpus.split(",")]
        if not all(gpus):
            raise SystemExit(f"error: --gpus {args.gpus!r}: give device ids separated by commas, e.g. 0,1,2,3")
        return gpus, max(1, (os.cpu_count() or 1) // len(gpus))
    jobs = default_jobs if args.jobs is None else args.jobs
    if jobs < 1:
        raise SystemExit("error: --jobs must be >= 1")
    return [None] * jobs, 1 if default_jobs > 1 or jobs > 1 else None


# ----------------------------------------------------------------------------- tiny world

def summarize_run(out, method, lr, seed):
    lines = read_jsonl(os.path.join(out, "metrics.jsonl"))
    with open(os.path.join(out, "run.json")) as f:
        info = json.load(f)
    evals = [l for l in lines if "eval_acc" in l]
    steps = [l for l in lines if "reward" in l]
    last = evals[-1]
    ood = [v for k, v in last.items() if k.startswith("eval_acc_tiny-")]
    ood0 = [v for k, v in evals[0].items() if k.startswith("eval_acc_tiny-")]
    per_step = [l["gen_s"] + l["train_s"] for l in steps]
    return dict(method=method, lr=lr, seed=seed, acc0=evals[0]["eval_acc"], acc=last["eval_acc"],
                ood0=sum(ood0) / len(ood0), ood=sum(ood) / len(ood),
                kl=next((l["kl"] for l in reversed(steps) if l["kl"] is not None), None), s_head=last.get("s_head"),
                rel_update=last.get("rel_update"), trainable=info["trainable"],
                s_per_step=statistics.median(per_step), peak_rss_mb=info["peak_rss_mb"],
                curve=[(l["step"], l["eval_acc"]) for l in evals], kl_curve=[(l["step"], l["kl"]) for l in steps if l["kl"] is not None])  # --kl-every: measured steps


def mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(xs, pct=False, digits=3):
    m, s = mean_std(xs)
    if m is None:
        return "n/a"
    return f"{100 * m:.1f} ± {100 * s:.1f}" if pct else f"{m:.{digits}f} ± {s:.{digits}f}"


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: figures skipped (pip install matplotlib)")
        return None
    return plt


def report(results, out, rates):
    by = {}
    for r in results:
        by.setdefault(r["method"], {}).setdefault(r["lr"], []).append(r)
    best = {m: max(lrs, key=lambda lr: statistics.mean(r["acc"] for r in lrs[lr])) for m, lrs in by.items()}
    md = ["| method | best lr | held-out acc % (before -> after) | out-of-domain acc % (before -> after) | KL to init |"
          " S_head | rel. update | trainable | s/step | peak RSS MB |", "|---" * 10 + "|"]
    for m in by:
        rs = by[m][best[m]]
        md.append(f"| {m} | {best[m]:g} | {fmt([r['acc0'] for r in rs], True)} -> {fmt([r['acc'] for r in rs], True)} "
                  f"| {fmt([r['ood0'] for r in rs], True)} -> {fmt([r['ood'] for r in rs], True)} "
                  f"| {fmt([r['kl'] for r in rs], digits=4)} | {fmt([r['s_head'] for r in rs])} "
                  f"| {fmt([r['rel_update'] for r in rs], digits=4)} | {rs[0]['trainable']:,} "
                  f"| {statistics.median(r['s_per_step'] for r in rs):.2f} "
                  f"| {statistics.median(r['peak_rss_mb'] for r in rs):.0f} |")
    md += ["", "Final held-out accuracy % (mean ± std over seeds) at each rate (lr: accuracy):", "",
           "| method | " + " | ".join(f"{f:g}x default lr" for f in rates) + " |", "|---" * (1 + len(rates)) + "|"]
    for m in by:
        cells = [f"{lr:g}: {fmt([r['acc'] for r in by[m][lr]], True)}" for lr in sorted(by[m])]
        md.append(f"| {m} | " + " | ".join(cells) + " |")
    with open(os.path.join(out, "compare.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    plt = _pyplot()
    if plt is None:
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for m in by:
        rs = by[m][best[m]]
        steps = [s for s, _ in rs[0]["curve"]]
        a1.plot(steps, [statistics.mean(r["curve"][i][1] for r in rs) for i in range(len(steps))], marker="o",
                label=f"{m} (lr {best[m]:g})")
        ks = [s for s, _ in rs[0]["kl_curve"]]
        kl = [statistics.mean((r["kl_curve"][i][1] or 0.0) for r in rs) for i in range(len(ks))]
        a2.plot(ks, kl, label=m)
    a1.set(xlabel="GRPO step", ylabel="held-out greedy accuracy", title="accuracy at each method's best rate")
    a2.set(xlabel="GRPO step", ylabel="KL to the initial policy (k3, per token)", title="drift from the base")
    a1.legend(fontsize=7)
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "acc_vs_step.png"), dpi=110)
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in by:
        lrs = sorted(by[m])
        means = [statistics.mean(r["acc"] for r in by[m][lr]) for lr in lrs]
        errs = [mean_std([r["acc"] for r in by[m][lr]])[1] for lr in lrs]
        ax.errorbar(lrs, means, yerr=errs, marker="o", capsize=3, label=m)
    ax.set(xscale="log", xlabel="learning rate", ylabel="final held-out accuracy", title="learning-rate sensitivity")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "acc_vs_lr.png"), dpi=110)


def tiny_main(args):
    import train
    import tiny
    if args.smoke:
        args.methods, args.seeds, args.rates, args.steps, args.eval_every = "geora,lora", "0", "1", 2, 2
    args.steps = 60 if args.steps is None else args.steps
    args.eval_every = 20 if args.eval_every is None else args.eval_every
    methods, rates, seeds = parse_lists(args, METHODS)
    runs, out = os.path.abspath(args.runs or "runs/compare"), os.path.abspath(args.out or "results/compare")
    slots, threads = slots_of(args, default_jobs=2)
    os.makedirs(out, exist_ok=True)
    # built once, before the workers start (they would race to build it); the smoke run pretrains a few steps only
    base = os.path.abspath(tiny.build_tiny(os.path.join(runs, "tiny-base-smoke"), steps=20) if args.smoke
                           else tiny.build_tiny())
    plan = []
    for seed in seeds:  # seeds outermost: a partial sweep covers every method
        for m in methods:
            for f in rates:
                lr = float(f"{f * train.DEFAULT_LR['geora' if m.startswith('geora') else m]:g}")
                d = os.path.join(runs, f"{m}-lr{lr:g}-s{seed}")
                argv = run_args(m, lr, seed, args.steps, args.eval_every, d, base) + reward_flags(args)
                plan.append(dict(method=m, lr=lr, seed=seed, dir=d, argv=argv, settings=dict(
                    method=m, lr=lr, seed=seed, train_argv=argv, train=resolve_train(argv))))
    check_settings(plan)
    done = lambda p: os.path.exists(os.path.join(p["dir"], "run.json"))
    todo = [p for p in plan if not done(p)]
    if args.report:  # summarise what has finished, run nothing
        plan, todo = [p for p in plan if done(p)], []
        if not plan:
            raise SystemExit(f"error: no finished run in {runs} for this plan")
    print(f"{len(plan)} runs, {len(plan) - len(todo)} already done, {len(slots)} at a time", flush=True)
    run_queue([train_job(p, f"{p['method']} lr {p['lr']:g} seed {p['seed']}") for p in todo], slots, threads)
    results = [summarize_run(p["dir"], p["method"], p["lr"], p["seed"]) for p in plan]
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    keys = [k for k in results[0] if k not in ("curve", "kl_curve")]
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(results)
    report(results, out, rates)
    return results


def train_job(p, name):
    """The training job of a planned run: compare.py --worker RUN <train.py flags>, resuming from the
    run's last checkpoint when an earlier call was interrupted."""
    resume = ["--resume"] if os.path.exists(os.path.join(p["dir"], "latest")) else []
    return dict(name=name, log=os.path.join(p["dir"], "log.txt"), ready=lambda: True,
                prepare=lambda: write_settings(p),
                cmd=[sys.executable, os.path.join(HERE, "compare.py"), "--worker", p["dir"], *p["argv"], *resume])


def parse_lists(args, allowed):
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in allowed]
    if bad or not methods:
        raise SystemExit(f"error: unknown method(s) {bad}; choose from {','.join(allowed)}")
    try:
        rates = [float(x) for x in args.rates.split(",")]
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise SystemExit("error: --rates takes numbers (factors of each method's base rate, e.g. 0.3,1,3) and "
                         "--seeds integers (e.g. 0,1,2)") from None
    if not all(f > 0 for f in rates):
        raise SystemExit("error: --rates must be > 0")
    return methods, rates, seeds


# ----------------------------------------------------------------------------- real model

def stem(name):
    """The benchmark's name in eval.py's summary (and as a results.csv column)."""
    return os.path.basename(name)[:-len(".jsonl")] if name.endswith(".jsonl") else name


def real_plan(args):
    """(runs, base, probe): every run's directory, train.py argv, resolved settings and eval settings;
    the base model's evaluation; train.py's resolved settings shared by every run (steps, budgets)."""
    import train
    methods, rates, seeds = parse_lists(args, METHODS)
    extra = shlex.split(args.train_args or "")
    common = [*extra, "--model", args.model, "--dataset", args.dataset]  # extras first: ours win
    common += ["--data-dir", args.data_dir] if args.data_dir else []
    common += ["--preset", args.preset] if args.preset else []
    common += ["--steps", str(args.steps)] if args.steps else []
    common += ["--holdout", str(args.holdout), "--eval-size", str(args.holdout)]
    common += reward_flags(args)
    probe = resolve_train(common)
    eval_every = args.eval_every or probe["steps"]
    max_new = args.eval_max_new_tokens or probe["max_new_tokens"]
    benches = [*args.eval_benchmarks, *args.eval_extra]

    def eval_settings(model, adapter):
        e = dict(model=model, adapter=adapter, benchmarks=benches, data_dir=args.data_dir, n=args.eval_n,
                 temperature=args.eval_temperature, top_p=args.eval_top_p, max_new_tokens=max_new,
                 limit=args.eval_limit, seed=0)
        # the run's prompt and reward, as train.py resolved them (only when set: older settings.json still match)
        e.update({k: v for k, v in (("reward", probe.get("reward")), ("reward_weights", probe.get("reward_weights")),
                                    ("system_prompt", probe.get("system_prompt")),
                                    ("chat_template", None if probe.get("chat_template", True) else False))
                  if v is not None})
        return e

    plan = []
    for seed in seeds:  # seeds outermost: a partial sweep covers every method
        for m in methods:
            base_lr = (train.PRESETS[args.preset].get("lr") if args.preset else None) or \
                train.LLM_LR["geora" if m.startswith("geora") else m]
            for f in rates:
                lr = float(f"{f * base_lr:g}")
                d = os.path.join(args.runs, f"{m}-lr{lr:g}-s{seed}")
                argv = [*common, "--method", m if m in PAPER_METHODS else "geora", "--lr", f"{lr:g}",
                        "--seed", str(seed), "--out", d, "--eval-every", str(eval_every)]
                argv += ["--init", m] if m not in PAPER_METHODS else []
                argv += ["--merge", "--log-kl"] if m == "full" else []
                ev = eval_settings(os.path.join(d, "merged") if m == "full" else args.model,
                                   None if m == "full" else d)
                plan.append(dict(method=m, lr=lr, seed=seed, factor=f, dir=d, argv=argv, settings=dict(
                    method=m, lr=lr, seed=seed, factor=f, train_argv=argv, train=resolve_train(argv), eval=ev)))
    base = dict(method="base", lr=None, seed=None, dir=os.path.join(args.runs, "base"),
                settings=dict(method="base", lr=None, seed=None, eval=eval_settings(args.model, None)))
    return plan, base, probe


def expected_counts(args):
    """Problems per benchmark (after --eval-limit), loading each one now: a missing benchmark or
    training set fails here, before any GPU time is spent."""
    try:
        counts = {stem(b): len(load_rows(b, "test", args.data_dir, limit=args.eval_limit))
                  for b in [*args.eval_benchmarks, *args.eval_extra]}
        if not args.report:
            load_rows(args.dataset, "train", args.data_dir)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    return counts


def eval_done(d, counts, n):
    path = os.path.join(d, "eval", "summary.json")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        got = json.load(f).get("benchmarks", {})
    return all(b in got and got[b]["problems"] == c and got[b]["n"] == n for b, c in counts.items())


def eval_job(p, name, args):
    e = p["settings"]["eval"]
    cmd = [sys.executable, os.path.join(HERE, "eval.py"), "--model", e["model"],
           *(["--adapter", e["adapter"]] if e["adapter"] else []), "--benchmarks", ",".join(e["benchmarks"]),
           *(["--data-dir", e["data_dir"]] if e["data_dir"] else []), "--n", str(e["n"]),
           "--temperature", repr(e["temperature"]), "--top-p", repr(e["top_p"]),
           "--max-new-tokens", str(e["max_new_tokens"]), "--batch-size", str(args.eval_batch_size),
           *(["--limit", str(e["limit"])] if e["limit"] else []), "--seed", str(e["seed"]),
           *(["--reward", e["reward"]] if e.get("reward") else []),
           *(["--reward-weights", e["reward_weights"]] if e.get("reward_weights") else []),
           *(["--system-prompt", e["system_prompt"]] if e.get("system_prompt") is not None else []),
           *(["--no-chat-template"] if e.get("chat_template") is False else []),
           "--out", os.path.join(p["dir"], "eval")]
    trained = (lambda: True) if p["method"] == "base" else \
        (lambda: os.path.exists(os.path.join(p["dir"], "run.json")))
    return dict(name=name, log=os.path.join(p["dir"], "eval-log.txt"), ready=trained,
                prepare=lambda: write_settings(p), cmd=cmd)


def summarize_real(p, benches, in_domain):
    """One run's row: benchmark accuracies, holdout accuracy and the training metrics."""
    d = p["dir"]
    lines = read_jsonl(os.path.join(d, "metrics.jsonl"))
    with open(os.path.join(d, "run.json")) as f:
        info = json.load(f)
    with open(os.path.join(d, "eval", "summary.json")) as f:
        ev = json.load(f)["benchmarks"]
    steps = [l for l in lines if "reward" in l]
    evals = [l for l in lines if "eval_acc" in l]
    mem = [l["mem_gb"] for l in steps if l.get("mem_gb") is not None]
    setup = next((l for l in lines if l.get("setup")), {})
    if mem:  # train.py's per-step peak: CUDA max allocated, or the peak RSS on a CPU
        peak, source = max(mem), "cuda" if str(setup.get("device", "")).startswith("cuda") else "rss"
    elif info.get("cuda_peak_gb"):
        peak, source = info["cuda_peak_gb"], "cuda"
    else:
        peak, source = info["peak_rss_mb"] / 1024, "rss"
    r = dict(method=p["method"], lr=p["lr"], seed=p["seed"], factor=p["factor"])
    r.update({b: ev[b]["accuracy"] for b in benches})
    r["in_domain"] = statistics.mean(ev[b]["accuracy"] for b in in_domain)
    r.update(holdout_acc0=evals[0]["eval_acc"], holdout_acc=evals[-1]["eval_acc"], kl=steps[-1].get("kl"),
             s_head=evals[-1].get("s_head"), rel_update=evals[-1].get("rel_update"), trainable=info["trainable"],
             s_per_step=statistics.median(l["gen_s"] + l["train_s"] for l in steps), peak_mem_gb=peak,
             peak_mem_source=source, train_wall_s=info["wall_s"])
    r.update(eval={b: ev[b] for b in benches}, reward_curve=[(l["step"], l["reward"]) for l in steps],
             kl_curve=[(l["step"], l["kl"]) for l in steps if l.get("kl") is not None],
             holdout_curve=[(l["step"], l["eval_acc"]) for l in evals])
    return r


def smooth(ys, window):
    """Trailing mean over `window` points (fewer at the start)."""
    return [statistics.mean(ys[max(0, i - window + 1):i + 1]) for i in range(len(ys))]


def cell(xs, pct=True, digits=3):
    """mean ± std over seeds (the mean alone for one seed); n/a when nothing was measured."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    k = 100 if pct else 1
    d = 1 if pct else digits
    m = f"{k * statistics.mean(xs):.{d}f}"
    return m if len(xs) == 1 else f"{m} ± {k * statistics.stdev(xs):.{d}f}"


def select_rates(results):
    """{method: {lr: [runs]}}, {method: selected lr}: the highest mean final holdout accuracy over seeds,
    ties to the smaller rate. The benchmarks play no part."""
    by = {}
    for r in results:
        by.setdefault(r["method"], {}).setdefault(r["lr"], []).append(r)
    best = {m: max(sorted(lrs), key=lambda lr: statistics.mean(r["holdout_acc"] for r in lrs[lr]))
            for m, lrs in by.items()}
    return by, best


def report_real(summary, out):
    """compare.md (the paper-shaped table and the rate sweep) and the figures."""
    results, base, s = summary["runs"], summary["base"], summary["settings"]
    by, best = select_rates(results)
    ind, extra = s["in_domain"], s["extra"]
    e = s["eval"]
    head = (f"# GRPO on {s['dataset']} from {s['model']}: the paper's comparison\n\n"
            f"{len(results)} runs: {', '.join(by)} x {len(s['rates'])} rates x {len(s['seeds'])} seeds, "
            f"{s['steps']} steps each{' (--preset ' + s['preset'] + ')' if s['preset'] else ''}.\n"
            f"Selection split: each method's rate is the one with the best mean final greedy accuracy on "
            f"{s['holdout']} {s['dataset']} training rows held out of training (the same rows for every run); "
            f"the benchmarks below chose nothing.\n"
            f"Evaluation: avg@{e['n']} accuracy %, temperature {e['temperature']:g}, top-p {e['top_p']:g}, up to "
            f"{e['max_new_tokens']} new tokens" + (f", first {e['limit']} problems of each benchmark" if e["limit"]
                                                    else "")
            + f"; mean ± std over seeds. In-domain avg = mean over {', '.join(ind)}.\n")
    cols = ["method", "lr", "holdout %", *ind, "in-domain avg", *extra, "KL to init", "S_head", "rel. update",
            "trainable", "s/step", "peak mem GB"]
    md = [head, "| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    if base is not None:
        h0 = [r["holdout_acc0"] for r in results[:1]]
        md.append("| base model | - | " + " | ".join([cell(h0), *[cell([base[b]]) for b in ind],
                                                       cell([base["in_domain"]]), *[cell([base[b]]) for b in extra]])
                  + " | 0 | n/a | 0 | 0 | n/a | n/a |")
    for m in by:
        rs = by[m][best[m]]
        mem = statistics.median(r["peak_mem_gb"] for r in rs)
        md.append(f"| {m} | {best[m]:g} | " + " | ".join(
            [cell([r["holdout_acc"] for r in rs]), *[cell([r[b] for r in rs]) for b in ind],
             cell([r["in_domain"] for r in rs]), *[cell([r[b] for r in rs]) for b in extra],
             cell([r["kl"] for r in rs], False, 4), cell([r["s_head"] for r in rs], False),
             cell([r["rel_update"] for r in rs], False, 4), f"{rs[0]['trainable']:,}",
             f"{statistics.median(r['s_per_step'] for r in rs):.2f}",
             f"{mem:.2f}" + (" (RSS)" if rs[0]["peak_mem_source"] == "rss" else "")]) + " |")
    factors = sorted({r["factor"] for r in results})
    md += ["", "In-domain average % (holdout %) at each rate; * = the selected rate:", "",
           "| method | " + " | ".join(f"{f:g}x base lr" for f in factors) + " |", "|---" * (1 + len(factors)) + "|"]
    for m in by:
        cells = []
        for f in factors:
            lrs = [lr for lr in by[m] if by[m][lr][0]["factor"] == f]
            cells.append("-" if not lrs else (f"{lrs[0]:g}{'*' if lrs[0] == best[m] else ''}: "
                                              f"{cell([r['in_domain'] for r in by[m][lrs[0]]])} "
                                              f"({cell([r['holdout_acc'] for r in by[m][lrs[0]]])})"))
        md.append(f"| {m} | " + " | ".join(cells) + " |")
    text = "\n".join(md) + "\n"
    with open(os.path.join(out, "compare.md"), "w") as f:
        f.write(text)
    print(text)
    plt = _pyplot()
    if plt is None:
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for m in by:
        lrs = sorted(by[m])
        for ax, key in ((a1, "in_domain"), (a2, "holdout_acc")):
            stats = [mean_std([r[key] for r in by[m][lr]]) for lr in lrs]
            ax.errorbar(lrs, [x for x, _ in stats], yerr=[x for _, x in stats], marker="o", capsize=3, label=m)
    if base is not None:  # the starting point: where a rate that does nothing would land
        a1.axhline(base["in_domain"], color="gray", ls="--", lw=1, label="base model")
        a2.axhline(results[0]["holdout_acc0"], color="gray", ls="--", lw=1, label="base model")
    a1.set(xscale="log", xlabel="learning rate", ylabel="in-domain average accuracy", title="benchmarks (reported)")
    a2.set(xscale="log", xlabel="learning rate", ylabel="holdout greedy accuracy", title="selection split")
    a1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "acc_vs_lr.png"), dpi=110)
    # one step's reward is the mean of prompts x G samples: noisy; a trailing mean over 1/20 of the run
    window = max(1, len(results[0]["reward_curve"]) // 20)
    avg = f", mean of the last {window} steps" if window > 1 else ""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for m in by:
        rs = by[m][best[m]]
        steps = [s for s, _ in rs[0]["reward_curve"]]
        mean_at = lambda key, i: statistics.mean((r[key][i][1] or 0.0) for r in rs)
        a1.plot(steps, smooth([mean_at("reward_curve", i) for i in range(len(steps))], window),
                label=f"{m} (lr {best[m]:g})")
        ks = [s for s, _ in rs[0]["kl_curve"]]   # the steps that measured kl (train.py --kl-every)
        a2.plot(ks, smooth([mean_at("kl_curve", i) for i in range(len(ks))], max(1, window * len(ks) // max(1, len(steps)))),
                label=m)
    a1.set(xlabel="GRPO step", ylabel=f"mean reward of the step's samples{avg}", title="reward at each method's rate")
    a2.set(xlabel="GRPO step", ylabel=f"KL to the initial policy (k3, per token){avg}", title="drift from the base")
    a1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "reward_kl_vs_step.png"), dpi=110)


def real_main(args):
    import train
    if args.smoke:
        raise SystemExit("error: --smoke is the tiny world's CI run; drop it with --model")
    if args.preset is not None and args.preset not in train.PRESETS:
        raise SystemExit(f"error: --preset must be one of {', '.join(sorted(train.PRESETS))}")
    args.dataset = args.dataset or "gsm8k"
    args.methods = args.methods or ",".join(PAPER_METHODS)
    args.holdout = DEFAULT_HOLDOUT if args.holdout is None else args.holdout
    args.eval_benchmarks = [b.strip() for b in (args.eval_benchmarks or IN_DOMAIN).split(",") if b.strip()]
    args.eval_extra = [b.strip() for b in (EXTRA if args.eval_extra is None else args.eval_extra).split(",")
                       if b.strip()]
    args.eval_n = args.eval_n or 1
    args.eval_temperature = 0.0 if args.eval_temperature is None else args.eval_temperature
    args.eval_top_p = 1.0 if args.eval_top_p is None else args.eval_top_p
    check_real_args(args)
    if os.path.exists(args.model):  # local paths become absolute: the jobs run from this script's folder
        args.model = os.path.abspath(args.model)
    args.data_dir = os.path.abspath(args.data_dir) if args.data_dir else None
    if args.dataset.endswith(".jsonl"):
        args.dataset = os.path.abspath(args.dataset)
    tag = f"{os.path.basename(os.path.normpath(args.model))}-{stem(os.path.basename(args.dataset))}"
    args.runs = os.path.abspath(args.runs or f"runs/compare-{tag}")
    out = os.path.abspath(args.out or f"results/compare-{tag}")
    slots, threads = slots_of(args, default_jobs=1)
    counts = expected_counts(args)
    plan, base, probe = real_plan(args)
    check_settings([*plan, base])
    n = args.eval_n
    trained = lambda p: os.path.exists(os.path.join(p["dir"], "run.json"))
    evaluated = lambda p: eval_done(p["dir"], counts, n)
    if args.report:  # summarise what has finished, run nothing
        plan = [p for p in plan if trained(p) and evaluated(p)]
        if not plan:
            raise SystemExit(f"error: no run in {args.runs} has finished training and evaluation for this plan")
        jobs = []
    else:
        name = lambda p: f"{p['method']} lr {p['lr']:g} seed {p['seed']}"
        jobs = [eval_job(p, "eval " + name(p), args) for p in plan if not evaluated(p)]
        jobs = ([eval_job(base, "eval base model", args)] if not evaluated(base) else []) + jobs
        jobs += [train_job(p, "train " + name(p)) for p in plan if not trained(p)]
        print(f"{len(plan)} runs + the base model: {sum(map(trained, plan))} trained, "
              f"{sum(map(evaluated, plan)) + evaluated(base)} of {len(plan) + 1} evaluated; {len(jobs)} jobs, "
              f"{len(slots)} at a time", flush=True)
    run_queue(jobs, slots, threads)
    os.makedirs(out, exist_ok=True)
    benches = list(counts)
    ind = [stem(b) for b in args.eval_benchmarks]
    results = [summarize_real(p, benches, ind) for p in plan]
    base_row = None
    if evaluated(base):
        with open(os.path.join(base["dir"], "eval", "summary.json")) as f:
            ev = json.load(f)["benchmarks"]
        base_row = {b: ev[b]["accuracy"] for b in benches}
        base_row.update(in_domain=statistics.mean(base_row[b] for b in ind), eval={b: ev[b] for b in benches})
    _, best = select_rates(results)
    summary = dict(settings=dict(model=args.model, dataset=args.dataset, data_dir=args.data_dir, preset=args.preset,
                                 steps=probe["steps"], holdout=args.holdout, methods=args.methods.split(","),
                                 rates=[float(x) for x in args.rates.split(",")],
                                 seeds=[int(x) for x in args.seeds.split(",")], in_domain=ind,
                                 extra=[stem(b) for b in args.eval_extra], eval=base["settings"]["eval"],
                                 train_args=args.train_args),
                   selection=f"per method, the rate with the highest mean final greedy accuracy on the "
                             f"{args.holdout}-row holdout split of the {args.dataset} training set "
                             f"(train.py --holdout; never trained on); ties to the smaller rate",
                   best_lr=best, base=base_row, runs=results)
    atomic_json(os.path.join(out, "results.json"), summary)
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, ["method", "lr", "seed", *benches, *[k for k in RUN_KEYS if k not in ("method", "lr",
                                                                                                     "seed")]],
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(results)
    report_real(summary, out)
    print(f"outputs in {out}")
    return summary


def check_real_args(args):
    # argparse also takes unique prefixes (--eval-d for --eval-dataset): refuse those of our flags too
    # (no other train.py flag is a prefix of one of ours, so nothing legitimate is caught)
    own = [t for t in shlex.split(args.train_args or "") if t.startswith("--") and len(t.split("=")[0]) > 2
           and any(f.startswith(t.split("=")[0]) for f in OWN_FLAGS)]
    try:  # a --config named there may not set them either
        own += [f"{k} (in the --config file)" for k in config_keys(args.train_args)
                if "--" + k.replace("_", "-") in OWN_FLAGS]
    except ValueError as e:
        raise SystemExit(f"error: --train-args: {e}") from None
    if own:
        raise SystemExit(f"error: --train-args may not set {', '.join(own)}: compare.py sets it for every run "
                         f"(use compare.py's own flags: --model, --dataset, --data-dir, --preset, --steps, "
                         f"--holdout, --eval-every, --methods, --rates, --seeds)")
    if args.holdout < 1:
        raise SystemExit("error: --holdout must be >= 1: it is the split that picks each method's rate (with "
                         "none, the rate would be picked on a reported benchmark)")
    if not args.eval_benchmarks:
        raise SystemExit("error: --eval-benchmarks needs at least one benchmark (the in-domain average)")
    names = [stem(b) for b in [*args.eval_benchmarks, *args.eval_extra]]
    if len(set(names)) < len(names) or set(names) & set(RUN_KEYS):
        raise SystemExit(f"error: benchmark names must be distinct and none of {', '.join(RUN_KEYS)} "
                         f"(they are results.csv columns): got {', '.join(names)}")
    if args.eval_n < 1 or (args.eval_limit is not None and args.eval_limit < 1) or args.eval_batch_size < 1:
        raise SystemExit("error: --eval-n, --eval-limit and --eval-batch-size must be >= 1")
    if args.eval_n > 1 and args.eval_temperature == 0:
        raise SystemExit("error: --eval-n > 1 with greedy decoding repeats one answer: pass --eval-temperature > 0")
    if args.eval_temperature < 0 or not 0 < args.eval_top_p <= 1:
        raise SystemExit("error: --eval-temperature must be >= 0 and --eval-top-p in (0, 1]")
    if args.eval_max_new_tokens is not None and args.eval_max_new_tokens < 1:
        raise SystemExit("error: --eval-max-new-tokens must be >= 1")
    if args.steps is not None and args.steps < 1 or args.eval_every is not None and args.eval_every < 1:
        raise SystemExit("error: --steps and --eval-every must be >= 1")


# ----------------------------------------------------------------------------- command line

REAL_ONLY = ("dataset", "data_dir", "preset", "holdout", "train_args", "eval_benchmarks", "eval_extra", "eval_n",
             "eval_temperature", "eval_top_p", "eval_max_new_tokens", "eval_limit")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:  # internal: compare.py --worker OUT <train.py flags...>
        return worker(argv[1], argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    a = ap.add_argument
    a("--model", default=None, help="hub id or local path: the real-model comparison (default: the tiny world)")
    a("--methods", default=None, help=f"default: {','.join(METHODS)} (tiny), {','.join(PAPER_METHODS)} (--model)")
    a("--seeds", default="0,1,2")
    a("--rates", default=",".join(map(str, RATE_FACTORS)),
      help="factors of each method's base lr (tiny: train.TINY_LR; --model: the preset's lr, else train.LLM_LR)")
    a("--steps", type=int, default=None, help="GRPO steps per run (tiny: 60; --model: train.py's default)")
    a("--eval-every", type=int, default=None, help="held-out evaluation period (tiny: 20; --model: only before "
                                                   "and after training)")
    a("--runs", default=None, help="one directory per run (default runs/compare, or runs/compare-MODEL-DATASET)")
    a("--out", default=None, help="tables, CSV/JSON and figures (default results/compare[-MODEL-DATASET])")
    a("--report", action="store_true", help="only summarise the finished runs of the plan")
    a("--gpus", default=None, help="comma-separated CUDA device ids: one job per listed GPU at a time")
    a("--jobs", type=int, default=None, help="without --gpus: jobs side by side (default 2 tiny, 1 --model)")
    a("--smoke", action="store_true", help="tiny world: 2 methods, 1 seed, 1 rate, 2 steps, on a base "
                                           "pretrained for 20 steps only (CI)")
    g = ap.add_argument_group("real model (--model)")
    g.add_argument("--dataset", default=None, help="gsm8k | math | deepmath | PATH.jsonl (default gsm8k)")
    g.add_argument("--data-dir", default=None, help="local DIR/<name>/<split>.jsonl copies instead of the hub")
    g.add_argument("--preset", default=None, help="train.py --preset (paper); --rates then scale its lr")
    g.add_argument("--holdout", type=int, default=None,
                   help=f"training rows held out as the rate-selection split (default {DEFAULT_HOLDOUT})")
    g.add_argument("--train-args", default=None, help='more train.py flags, one quoted string: "--max-new-tokens '
                                                       '1024 --rollout-batch 256"')
    g.add_argument("--eval-benchmarks", default=None, help=f"averaged as in-domain (default {IN_DOMAIN})")
    g.add_argument("--eval-extra", default=None, help=f"reported apart from the average (default {EXTRA}; '' none)")
    g.add_argument("--eval-n", type=int, default=None, help="samples per problem (default 1)")
    g.add_argument("--eval-temperature", type=float, default=None, help="default 0 (greedy)")
    g.add_argument("--eval-top-p", type=float, default=None, help="default 1.0")
    g.add_argument("--eval-max-new-tokens", type=int, default=None, help="default: the training budget")
    g.add_argument("--eval-limit", type=int, default=None, help="first N problems of each benchmark (smoke runs)")
    g.add_argument("--eval-batch-size", type=int, default=32, help="eval.py --batch-size (speed only)")
    a("--reward", default=None, metavar="MODULE:FUNCTION", help="train.py/eval.py --reward for every run")
    a("--reward-weights", default=None, help="train.py/eval.py --reward-weights for every run")
    args = ap.parse_args(argv)
    if args.model is None:
        given = [f"--{k.replace('_', '-')}" for k in REAL_ONLY if getattr(args, k) is not None]
        if given:
            raise SystemExit(f"error: {', '.join(given)} need --model (the real-model comparison)")
        args.methods = args.methods or ",".join(METHODS)
        return tiny_main(args)
    return real_main(args)


if __name__ == "__main__":
    main()
