"""
The paper's comparison, reproduced small: GeoRA vs LoRA, PiSSA, MiLoRA, full fine-tuning and two GeoRA
ablations, under GRPO in train.py's offline tiny world, over a learning-rate sweep and several seeds.

    python compare.py                     # the full sweep (7 methods x 3 rates x 3 seeds), about an hour on 2 cores
    python compare.py --smoke             # 2 methods x 1 rate x 1 seed x 2 steps: what CI runs
    python compare.py --methods geora,pissa --seeds 0 --steps 40   # any subset

Each run is `train.py` in its own process (so its peak memory is its own), with the same rank, steps, prompts
per step, group size and seeds for every method; only the method and the learning rate change. A finished
run (its run.json exists) is skipped, so an interrupted sweep resumes where it stopped.

Measured per run (from OUT/metrics.jsonl and the worker): held-out greedy accuracy on the RL task over steps
(`eval_acc`), KL to the initial policy over steps, out-of-domain accuracy on the tiny-world families RL never
trains on (`mul`, `total`: forgetting), mean S_head and relative update norm (geora.geometry_report),
trainable parameters, seconds per step, peak RSS.
Per-run train.py outputs go to --runs (default runs/compare); the summary to --out (default results/compare):
results.json, results.csv, compare.md (mean +- std over seeds at
each method's best rate, and the whole rate sweep), acc_vs_step.png and acc_vs_lr.png (matplotlib, optional:
without it the figures are skipped).
Choices: the best rate is picked per method by mean final held-out accuracy, on the same held-out set the
table reports (the tiny world has no separate model-selection split here), which flatters every method
alike. Full fine-tuning keeps a frozen reference copy (--log-kl) so its KL is logged like the adapters'.
Rates span 10x around each method's tuned default (train.DEFAULT_LR): 0.3x, 1x, 3x.
"""

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from data import read_jsonl

METHODS = ("geora", "lora", "pissa", "milora", "full", "geora-random", "geora-tail")
RATE_FACTORS = (0.3, 1.0, 3.0)


def run_args(method, lr, seed, steps, eval_every, out, base):
    m = method if method in ("geora", "lora", "pissa", "milora", "full") else "geora"
    a = ["--model", base, "--method", m, "--lr", f"{lr:g}", "--seed", str(seed), "--steps", str(steps),
         "--eval-every", str(eval_every), "--save-every", str(steps), "--out", out]
    if m != method:
        a += ["--init", method]
    if method == "full":
        a += ["--log-kl"]
    return a


def worker(out, argv):
    """Run train.main in this process; record its wall/CPU seconds and peak RSS in OUT/run.json."""
    import torch
    torch.set_num_threads(1)
    import train
    t0, c0 = time.time(), time.process_time()
    res = train.main(argv)
    trainable = sum(p.numel() for p in res["model"].parameters() if p.requires_grad)
    info = dict(wall_s=time.time() - t0, cpu_s=time.process_time() - c0, trainable=trainable,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    tmp = os.path.join(out, "run.json.tmp")
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, os.path.join(out, "run.json"))


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
                kl=next((l["kl"] for l in reversed(steps) if l["kl"] is not None), None), s_head=last.get("s_head"), rel_update=last.get("rel_update"),
                trainable=info["trainable"], s_per_step=statistics.median(per_step),
                peak_rss_mb=info["peak_rss_mb"],
                curve=[(l["step"], l["eval_acc"]) for l in evals], kl_curve=[(l["step"], l["kl"]) for l in steps])


def _check(proc, out):
    """A finished worker: fail loudly (with its log) unless it succeeded; returns False (not running)."""
    if proc.returncode:
        raise SystemExit(f"error: run {out} failed (exit {proc.returncode}); see {out}/log.txt; "
                         f"rerun compare.py to resume")
    return False


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
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: figures skipped (pip install matplotlib)")
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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:  # internal: compare.py --worker OUT <train.py flags...>
        return worker(argv[1], argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rates", default=",".join(map(str, RATE_FACTORS)), help="factors of each method's default lr")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--runs", default="runs/compare", help="one train.py output dir per run (not committed)")
    ap.add_argument("--out", default="results/compare", help="tables, CSV/JSON and figures")
    ap.add_argument("--report", action="store_true", help="only summarise the finished runs of the plan")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each")
    ap.add_argument("--smoke", action="store_true",
                    help="2 methods, 1 seed, 1 rate, 2 steps, on a base pretrained for 20 steps only (CI)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.methods, args.seeds, args.rates, args.steps, args.eval_every = "geora,lora", "0", "1", 2, 2
    import train
    methods = args.methods.split(",")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"error: unknown method(s) {bad}; choose from {','.join(METHODS)}")
    rates = [float(x) for x in args.rates.split(",")]
    args.runs, args.out = os.path.abspath(args.runs), os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    import tiny
    # built once, before the workers start (they would race to build it); the smoke run pretrains a few steps only
    base = os.path.abspath(tiny.build_tiny(os.path.join(args.runs, "tiny-base-smoke"), steps=20) if args.smoke
                           else tiny.build_tiny())
    plan = []
    # seeds outermost: a partial sweep covers every method
    for seed in [int(s) for s in args.seeds.split(",")]:
        for m in methods:
            for f in rates:
                lr = f * train.DEFAULT_LR["geora" if m.startswith("geora") else m]
                plan.append((m, lr, seed, os.path.join(args.runs, f"{m}-lr{lr:g}-s{seed}")))
    todo = [p for p in plan if not os.path.exists(os.path.join(p[3], "run.json"))]
    if args.report:  # summarise what has finished, run nothing
        plan, todo = [p for p in plan if p not in todo], []
    print(f"{len(plan)} runs, {len(plan) - len(todo)} already done, {args.jobs} at a time", flush=True)
    # one torch thread per run and --jobs runs side by side: tiny matmuls scale badly across threads
    env = dict(os.environ, OMP_NUM_THREADS="1")
    running = []
    for i, (m, lr, seed, out) in enumerate(todo):
        while len(running) >= args.jobs:
            running = [(p, d) for p, d in running if p.poll() is None or _check(p, d)]
            time.sleep(0.5)
        print(f"== [{i + 1}/{len(todo)}] {m} lr {lr:g} seed {seed}", flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", out,
               *run_args(m, lr, seed, args.steps, args.eval_every, out, base)]
        os.makedirs(out, exist_ok=True)
        log = open(os.path.join(out, "log.txt"), "w")
        running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=os.path.dirname(os.path.abspath(__file__))), out))
    for p, d in running:
        p.wait()
        _check(p, d)
    results = [summarize_run(out, m, lr, seed) for m, lr, seed, out in plan]
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    keys = [k for k in results[0] if k not in ("curve", "kl_curve")]
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(results)
    report(results, args.out, rates)
    return results


if __name__ == "__main__":
    main()
