"""Batched, resumable evaluation on math benchmarks, with the prompt and checker used in training.

    python eval.py                                   # offline: the tiny world, base and trained adapter
    python eval.py --model Qwen/Qwen2.5-Math-1.5B --benchmarks math500,aime24,amc23 --max-new-tokens 3000
    python eval.py --model Qwen/Qwen2.5-Math-1.5B --adapter out/run1          # a GeoRA adapter from train.py
    python eval.py --model out/run1/merged --benchmarks gsm8k --data-dir ../shared/data   # local JSONL
    python eval.py --model M --benchmarks aime24 --n 16 --temperature 0.6 --top-p 0.95     # avg@16, pass@16

Benchmarks: gsm8k, math, math500, aime24, amc23, olympiadbench, minerva, aime25, olymmath-en-easy,
olymmath-en-hard (hub copies, the last three untested offline: no local copy exists here; or
DATA_DIR/<name>/test.jsonl with --data-dir), tiny, tiny-mul, tiny-total, or any PATH.jsonl
(--question-key/--answer-key). Outputs in --out (default out/eval/<model>-<hash of the settings>):
OUT/<benchmark>.jsonl, one line per (problem, sample): id, sample, prompt, completion, extracted,
gold, status, reward, tokens, truncated, seconds; OUT/summary.json; a table on stdout.

Choices:
- Prompt: data.format_prompt, the one train.py uses; sampling is grpo.generate itself (left padding,
  KV cache, the completion mask up to the first EOS), so greedy eval here matches train.py's eval_acc;
  --rollout-engine compiled samples with rollout.py's loop instead (the same tokens in fp32; not part of
  the settings a resume checks, like --batch-size).
  The checkpoint's own sampling defaults (top_k, repetition_penalty, temperature, ...) never apply
  (grpo.generate swaps them out; only its EOS ids count): the numbers depend on the flags alone.
- Grading: reward.grade, or with --reward a plug-in (plugins.py; records then carry the weighted reward,
  each function's reward in `rewards` and `passed`; accuracy is the pass rate and mean_reward the mean
  reward). A completion that hits --max-new-tokens without EOS counts as no_answer,
  as in training. no_answer is reported apart from wrong: it separates "can't format" from "can't solve".
- Metrics per benchmark: accuracy = avg@n (mean reward over all samples; with --n 1 and
  temperature 0 this is greedy pass@1); with --n > 1 also the unbiased pass@k for k in {1, n}
  (Chen et al. 2021: 1 - C(n-c, k)/C(n, k), averaged over problems; pass@1 equals avg@n).
- Work is sorted by prompt length (longest first: an out-of-memory batch shows up at once, and
  batches pad little), generated in --batch-size chunks; each chunk's lines are appended and
  flushed before the next one starts. Re-running with the same --out keeps every finished line
  and generates only the missing (problem, sample) pairs; a half-written last line is dropped.
  OUT/config.json records the settings (and a fingerprint of local model/adapter files); resuming
  with different settings is refused rather than mixing two evaluations.
- Sampling is keyed (grpo.sample_key(--seed, crc32(problem id), sample index)): a sample does not
  depend on --batch-size, on the order of the work or on a resume, so a resumed run draws exactly
  the samples an uninterrupted one would (up to kernel rounding in bf16, see grpo.py).
- bf16 on CUDA, fp32 on CPU (--dtype to override). --adapter takes a GeoRA adapter directory
  (geora.load_adapter on the base: no SVD) or a PEFT LoRA directory (e.g. geora.export_peft's).
"""
import argparse
import hashlib
import json
import math
import os
import sys
import time
import zlib

import torch
from tqdm import tqdm

import geora
import grpo
import plugins
import rollout
from data import format_prompt, load_rows, load_tokenizer
from reward import grade

TINY_ADAPTER = "out/tiny-geora"      # where `python train.py` leaves its adapter
DEFAULT_BENCHMARKS = "math500,aime24,amc23,olympiadbench,minerva,gsm8k"
TINY_BENCHMARKS = "tiny,tiny-mul,tiny-total"     # the RL task and two families RL never saw


# ----------------------------------------------------------------------------- metrics

def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    assert 0 <= c <= n and 1 <= k <= n, (n, c, k)
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))  # no huge binomials


def summarize(records, n):
    """Metrics of one benchmark from its per-sample records (dicts with id, status, reward, tokens,
    truncated, seconds). Every problem must have exactly n samples."""
    by_id = {}
    for r in records:
        by_id.setdefault(r["id"], []).append(r)
    assert by_id and all(len(rs) == n for rs in by_id.values()), "every problem needs n samples"
    # a pass: the built-in reward's 1.0; a plug-in's record says (plugins.Reward.passed)
    correct = [sum(r.get("passed", r["reward"]) for r in rs) for rs in by_id.values()]
    m = {"problems": len(by_id), "n": n,
         "accuracy": sum(c / n for c in correct) / len(by_id),                  # avg@n
         "mean_reward": sum(r["reward"] for r in records) / len(records),
         "no_answer": sum(r["status"] == "no_answer" for r in records) / len(records),
         "truncated": sum(r["truncated"] for r in records) / len(records),
         "mean_tokens": sum(r["tokens"] for r in records) / len(records),
         "seconds": sum(r["seconds"] for r in records)}
    for k in sorted({1, n}):
        m[f"pass@{k}"] = sum(pass_at_k(n, int(c), k) for c in correct) / len(by_id)
    return m


# ----------------------------------------------------------------------------- results files

def read_results(path):
    """Finished lines of a results file as {(id, sample): record}. A partial last line (an
    interrupted write) is cut off the file so that appending continues cleanly."""
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        data = f.read()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    done = {}
    for i, line in enumerate(data[:end].decode("utf-8").splitlines(), 1):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{i} is corrupt; delete that line (or the file) and rerun") from None
        done[(r["id"], r["sample"])] = r
    return done


def atomic_json(path, obj):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


ADAPTER_FILES = ("geora_adapter.safetensors", "geora_config.json", "adapter_model.safetensors",
                 "adapter_config.json")


def fingerprint(path, only=None):
    """A cheap identity of a local model/adapter: names, sizes and (files <= 256 MB) contents;
    bigger files (large weight shards) by size and mtime. `only`: the file names that count
    (an adapter dir from train.py also holds checkpoints and logs: only its top-level adapter
    files count). None for a hub id."""
    if path is None or not os.path.exists(path):
        return None
    if os.path.isfile(path):
        files = [path]
    elif only is not None:
        files = [os.path.join(path, f) for f in only if os.path.isfile(os.path.join(path, f))]
    else:
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    h = hashlib.sha256()
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.relpath(f, path)}:{st.st_size}".encode())
        if st.st_size <= 256 << 20:
            with open(f, "rb") as fh:
                h.update(hashlib.sha256(fh.read()).digest())
        else:
            h.update(str(st.st_mtime_ns).encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- model

def load_model(model_path, adapter=None, device="cpu", dtype=torch.float32):
    """Model + left-padding tokenizer, with an optional GeoRA or PEFT adapter on top."""
    from transformers import AutoModelForCausalLM
    try:
        tokenizer = load_tokenizer(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    except OSError as e:
        raise ValueError(f"could not load model {model_path!r} ({e}); pass a local directory "
                         f"(save_pretrained layout) or a reachable hub id as --model") from e
    tokenizer.padding_side = "left"  # batched generation needs the prompts flush right
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapter is not None:
        if os.path.exists(os.path.join(adapter, "geora_adapter.safetensors")):
            model = geora.load_adapter(model, adapter)
        elif os.path.exists(os.path.join(adapter, "adapter_config.json")):
            from peft import PeftModel  # optional: only for PEFT adapter directories
            model = PeftModel.from_pretrained(model, adapter)
        else:
            raise ValueError(f"--adapter {adapter}: no geora_adapter.safetensors (train.py / "
                             f"geora.save_adapter) or adapter_config.json (PEFT) there")
    return model.to(device).eval(), tokenizer


# ----------------------------------------------------------------------------- evaluation

def evaluate(model, tokenizer, rows, path, n=1, temperature=0.0, top_p=1.0, max_new_tokens=1024,
             batch_size=32, seed=0, desc="", engine="eager", reward_fn=None, system_prompt=None, chat_template=True):
    """Generate n completions per row, grade them, append a line per (row, sample) to `path`.
    Lines already in `path` are reused, not regenerated. Returns (records of `rows`, generated now).
    reward_fn: a plugins.Reward (None or the built-in: reward.grade, with the extracted answer recorded)."""
    done = read_results(path)
    plug = reward_fn if reward_fn is not None and not reward_fn.is_builtin else None
    prompts = [format_prompt(tokenizer, r["question"], system_prompt, chat_template) for r in rows]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]   # as grpo.generate
    todo = [(i, s) for i in range(len(rows)) for s in range(n) if (rows[i]["id"], s) not in done]
    todo.sort(key=lambda t: -len(prompt_ids[t[0]]))
    bar = tqdm(total=len(todo), desc=desc, unit="sample", leave=False, disable=not todo)
    with open(path, "a", encoding="utf-8") as f:
        for b in range(0, len(todo), batch_size):
            chunk = todo[b:b + batch_size]
            t0 = time.time()
            with geora.frozen_factors(model):   # GeoRA adapters: P, Q built once per batch, not per token
                sample = rollout.generate if engine == "compiled" else grpo.generate
                r = sample(model, tokenizer, [prompt_ids[i] for i, _ in chunk], temperature=temperature or 1.0,
                           top_p=top_p, max_new_tokens=max_new_tokens, greedy=temperature == 0,
                           keys=[grpo.sample_key(seed, zlib.crc32(rows[i]["id"].encode()), s) for i, s in chunk])
            texts, tokens, truncated = r["texts"], r["mask"].sum(1).long().tolist(), r["truncated"].tolist()
            dt = time.time() - t0
            # one call per chunk; a raising plug-in stops here, every earlier chunk already on disk
            scores = plug(texts, [rows[i] for i, _ in chunk], truncated) if plug else [None] * len(chunk)
            for (i, s), text, ntok, trunc, sc in zip(chunk, texts, tokens, truncated, scores):
                if sc is None:
                    g = grade(text, rows[i]["gold"])
                    status = "no_answer" if trunc else g.status   # cut off mid-answer: as in training
                    extracted, score = g.extracted, 1.0 if status == "correct" else 0.0
                else:
                    status, extracted, score = sc.status, None, sc.reward
                rec = {"id": rows[i]["id"], "sample": s, "prompt": prompts[i], "completion": text,
                       "extracted": extracted, "gold": rows[i]["gold"], "status": status,
                       "reward": score, "tokens": int(ntok),
                       "truncated": bool(trunc), "seconds": dt / len(chunk)}
                if sc is not None:
                    rec.update(passed=float(plug.passed(sc)), rewards=list(sc.parts))
                done[(rec["id"], s)] = rec
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(chunk))
            bar.set_postfix(tok_s=f"{sum(tokens) / max(dt, 1e-9):.0f}")
    bar.close()
    return [done[(r["id"], s)] for r in rows for s in range(n)], len(todo)


def benchmark_rows(name, data_dir=None, question_key=None, answer_key=None, limit=None, plugin=False):
    """Test rows of a benchmark: "tiny" / "tiny-FAMILY" from tiny.py (the tiny world and its out-of-domain
    families), everything else through data.load_rows. plugin: keep every column and rows without a gold (a
    --reward plug-in reads them)."""
    if name == "tiny" or name.startswith("tiny-"):
        from tiny import tiny_rows
        return tiny_rows("test", n=limit, **({"family": name[len("tiny-"):]} if name != "tiny" else {}))
    return load_rows(name, "test", data_dir, question_key, answer_key, limit,
                     **(dict(keep_columns=True, require_gold=False) if plugin else {}))


def run(tag, model_path, adapter, benchmarks, out, args):
    """Evaluate one model (+ adapter) on every benchmark into OUT; returns the summary of this call."""
    config = {"model": model_path, "model_fingerprint": fingerprint(model_path), "adapter": adapter,
              "adapter_fingerprint": fingerprint(adapter, ADAPTER_FILES), "n": args.n,
              "temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens,
              "seed": args.seed, "dtype": str(args.dtype)}
    # issue 20's settings only when set, so that earlier evaluations' config.json still match
    config.update({k: v for k, v in (("reward", args.reward), ("reward_weights", args.reward_weights),
                                      ("system_prompt", args.system_prompt),
                                      ("chat_template", None if args.chat_template else False)) if v is not None})
    reward_fn = plugins.load_reward(args.reward, args.reward_weights)
    if out is None:
        h = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
        out = os.path.join("out", "eval", f"{tag}-{h}")
    cfg_path = os.path.join(out, "config.json")
    if os.path.exists(cfg_path):
        old = json.load(open(cfg_path))
        diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        if diff:
            raise ValueError(f"{out} holds an evaluation with other settings ({', '.join(diff)} differ): "
                             f"pass another --out, or delete {out} to start over")
    # data before the model: a missing benchmark should not cost a multi-minute model load first
    bench_rows = {name: benchmark_rows(name, args.data_dir, args.question_key, args.answer_key, args.limit,
                                       plugin=not reward_fn.is_builtin) for name in benchmarks}
    os.makedirs(out, exist_ok=True)
    atomic_json(cfg_path, config)
    model, tokenizer = load_model(model_path, adapter, args.device, args.dtype)
    summary_path = os.path.join(out, "summary.json")
    summary = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
    summary.update(config=config, out=out)
    summary.setdefault("benchmarks", {})   # earlier invocations' benchmarks stay in the file
    done_now = {}
    for name, rows in bench_rows.items():
        stem = os.path.basename(name)[:-len(".jsonl")] if name.endswith(".jsonl") else name
        records, fresh = evaluate(model, tokenizer, rows, os.path.join(out, f"{stem}.jsonl"), args.n,
                                  args.temperature, args.top_p, args.max_new_tokens, args.batch_size,
                                  args.seed, desc=f"{tag} {stem}", engine=args.rollout_engine,
                                  reward_fn=reward_fn, system_prompt=args.system_prompt,
                                  chat_template=args.chat_template)
        summary["benchmarks"][stem] = done_now[stem] = dict(summarize(records, args.n), generated=fresh)
        atomic_json(summary_path, summary)
    return dict(summary, benchmarks=done_now)


def print_table(results):
    """results: [(tag, summary)] -> a plain-text table on stdout."""
    ns = {m["n"] for _, s in results for m in s["benchmarks"].values()}
    extra = [f"pass@{k}" for k in sorted(ns) if k > 1]
    head = ["model", "benchmark", "problems", "n", "accuracy", *extra, "no_answer", "tokens", "seconds"]
    lines = []
    for tag, s in results:
        for name, m in s["benchmarks"].items():
            lines.append([tag, name, str(m["problems"]), str(m["n"]), f"{m['accuracy']:.1%}",
                          *[f"{m[k]:.1%}" if k in m else "-" for k in extra],
                          f"{m['no_answer']:.1%}", f"{m['mean_tokens']:.1f}", f"{m['seconds']:.1f}"])
    widths = [max(len(r[j]) for r in [head] + lines) for j in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths)))
    print("\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in lines]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="hub id or local path (default: the tiny world)")
    ap.add_argument("--adapter", default=None, help="GeoRA adapter dir (train.py) or PEFT LoRA dir")
    ap.add_argument("--benchmarks", default=None, help=f"comma list (default {DEFAULT_BENCHMARKS}; "
                                                       f"tiny world: {TINY_BENCHMARKS})")
    ap.add_argument("--data-dir", default=None, help="read DATA_DIR/<benchmark>/test.jsonl, not the hub")
    ap.add_argument("--question-key", default=None, help="question field of PATH.jsonl benchmarks")
    ap.add_argument("--answer-key", default=None, help="gold answer field of PATH.jsonl benchmarks")
    ap.add_argument("--n", type=int, default=1, help="samples per problem (> 1 needs --temperature > 0)")
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default 1024 (tiny world: 48)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rollout-engine", choices=("eager", "compiled"), default=None,
                    help="compiled: rollout.py's decode loop (default on CUDA); eager: grpo.generate (default on CPU)")
    ap.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    ap.add_argument("--out", default=None, help="results dir (default out/eval/<model>-<settings hash>)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                    help="auto: bf16 on CUDA, fp32 otherwise")
    ap.add_argument("--reward", default=None, metavar="MODULE:FUNCTION",
                    help="reward plug-in(s), as train.py --reward (default: reward.grade on the gold)")
    ap.add_argument("--reward-weights", default=None, help="one weight per --reward function (default 1 each)")
    ap.add_argument("--system-prompt", default=None, help="a system turn before every prompt, as train.py's")
    ap.add_argument("--no-chat-template", dest="chat_template", action="store_false",
                    help="plain 'Question: ... Answer:' prompts, as train.py --no-chat-template")
    args = ap.parse_args(argv)
    plugins.load_reward(args.reward, args.reward_weights)   # a bad --reward fails before any model loads
    if args.rollout_engine is None:
        args.rollout_engine = "compiled" if args.device.startswith("cuda") else "eager"
    if args.n < 1 or args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        raise ValueError("--n, --batch-size and --limit must be >= 1")
    if args.n > 1 and args.temperature == 0:
        raise ValueError("--n > 1 with greedy decoding repeats one answer n times: pass --temperature > 0")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise ValueError("--temperature must be >= 0 and --top-p in (0, 1]")
    if args.dtype == "auto":
        args.dtype = "bf16" if str(args.device).startswith("cuda") else "fp32"
    args.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]

    if args.model is None:  # the offline tiny world: its base, and train.py's adapter when there is one
        import tiny
        if args.device == "cpu":  # 0.8M parameters: syncing threads costs more than the matmuls (one
            torch.set_num_threads(1)  # thread: 0.8 s vs 100 s for 200 problems on a busy 2-core machine)
        base = tiny.build_tiny(tiny.TINY_BASE)
        runs = [("tiny-base", base, None)]
        if args.adapter is not None:
            runs = [("tiny+" + os.path.basename(os.path.normpath(args.adapter)), base, args.adapter)]
        elif os.path.exists(os.path.join(TINY_ADAPTER, "geora_adapter.safetensors")):
            runs.append(("tiny-geora", base, TINY_ADAPTER))
        benchmarks = args.benchmarks or TINY_BENCHMARKS
        args.max_new_tokens = args.max_new_tokens or tiny.TINY_MAX_NEW_TOKENS
    else:
        tag = os.path.basename(os.path.normpath(args.model)) if os.path.exists(args.model) \
            else args.model.replace("/", "--")
        if args.adapter is not None:
            tag += "+" + os.path.basename(os.path.normpath(args.adapter))
        runs = [(tag, args.model, args.adapter)]
        benchmarks = args.benchmarks or DEFAULT_BENCHMARKS
        args.max_new_tokens = args.max_new_tokens or 1024
    benchmarks = [b.strip() for b in benchmarks.split(",") if b.strip()]
    results = []
    for tag, model_path, adapter in runs:
        out = args.out if args.out is None or len(runs) == 1 else os.path.join(args.out, tag)
        results.append((tag, run(tag, model_path, adapter, benchmarks, out, args)))
    print_table(results)
    for tag, s in results:
        print(f"{tag}: {s['out']}")
    return results


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:  # user errors: one clear line, no traceback
        sys.exit(f"error: {e}")
