"""Throughput of reward.py on one core, and agreement with math-verify when that is installed (optional:
`pip install math-verify`; the comparison is skipped without it).

    python bench_reward.py

Uses ../shared/data when present (GSM8K test answers, MATH-500 reference solutions); otherwise synthetic
GSM8K-style completions only. Caches are cleared before every timed pass, so the numbers are cold.
"""

import json
import os
import random
import statistics
import time
from pathlib import Path

import reward as R
from reward import gold_answer, grade

DATA = Path(__file__).resolve().parent.parent / "shared" / "data"


def load(name):
    path = DATA / name / "test.jsonl"
    return [json.loads(line) for line in path.open()] if path.exists() else None


def timed(fn, repeats=5):
    """Median wall time of fn() over repeats, with reward.py's parse cache cleared before each run."""
    times = []
    for _ in range(repeats):
        R._prepare.cache_clear()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def gsm8k_batch(n=1024, seed=0):
    """n GSM8K-style completions (worked solution + boxed number), half of them wrong, with their golds."""
    rng = random.Random(seed)
    rows = load("gsm8k")
    batch = []
    for k in range(n):
        if rows:
            row = rows[k % len(rows)]
            body, gold = row["answer"].split("####")[0], row["answer"]
            value = gold_answer(gold).replace(",", "")
        else:
            a, b = rng.randint(2, 999), rng.randint(2, 999)
            body, gold, value = f"First {a} + {b} = {a + b}. Then we check it twice.\n" * 3, str(a + b), str(a + b)
        if k % 2:
            value = str(int(value) + rng.choice([-2, -1, 1, 10]))
        batch.append((f"{body}\nSo the answer is $\\boxed{{{value}}}$.", gold))
    return batch


def main():
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    batch = gsm8k_batch()
    rewards = [grade(c, g).reward for c, g in batch]
    assert sum(rewards) == len(batch) // 2, sum(rewards)
    t = timed(lambda: [grade(c, g) for c, g in batch])
    print(f"GSM8K-style batch of {len(batch)}: {t * 1e3:.1f} ms ({len(batch) / t:,.0f} completions/s); "
          f"target < 1 s: {1.0 / t:.0f}x under")

    rows = load("math500")
    if rows:
        assert sum(grade(r["solution"], r["answer"]).reward for r in rows) == 500
        t = timed(lambda: [grade(r["solution"], r["answer"]) for r in rows])
        print(f"MATH-500 reference solutions: {t / 500 * 1e3:.3f} ms each; "
              f"target < 5 ms: {5e-3 / (t / 500):.0f}x under")
        negatives = [("\\boxed{%s}" % r["answer"], rows[(i + 1) % 500]["answer"]) for i, r in enumerate(rows)]
        t = timed(lambda: [grade(c, g) for c, g in negatives])
        print(f"MATH-500 negatives (each answer vs the next gold): {t / 500 * 1e3:.3f} ms each")

    symbolic = [(r"\boxed{(x+%d)^2}" % k, "x^2+%dx+%d" % (2 * k, k * k)) for k in range(1, 21)]
    grade(*symbolic[0])  # start the sympy worker outside the timing
    t = timed(lambda: [grade(c, g) for c, g in symbolic], repeats=1)
    print(f"symbolic (sympy worker) pairs: {t / len(symbolic) * 1e3:.1f} ms each")

    try:
        from math_verify import parse, verify
    except ImportError:
        print("math-verify not installed: comparison skipped (pip install math-verify)")
        return
    from reward_cases import CASES

    def mv(completion, gold):
        try:
            return bool(verify(parse("$" + gold_answer(gold) + "$"), parse(completion)))
        except Exception:
            return False

    def compare(name, pairs, expected=None):
        """Agreement of the two checkers on (completion, gold) pairs; with expected verdicts, who is right."""
        t = time.perf_counter()
        theirs = [mv(c, g) for c, g in pairs]
        t_mv = time.perf_counter() - t
        t = time.perf_counter()
        ours = [grade(c, g).status == "correct" for c, g in pairs]
        t_ours = time.perf_counter() - t
        same = sum(a == b for a, b in zip(ours, theirs))
        line = (f"{name}: agree on {same}/{len(pairs)}; correct: ours {sum(ours)}, math-verify {sum(theirs)}; "
                f"time {t_ours / len(pairs) * 1e3:.3f} vs {t_mv / len(pairs) * 1e3:.2f} ms each "
                f"({t_mv / t_ours:.0f}x)")
        if expected is not None:
            line += (f"; as expected: ours {sum(o == e for o, e in zip(ours, expected))}, "
                     f"math-verify {sum(m == e for m, e in zip(theirs, expected))}; where they differ, math-verify "
                     f"accepts {sum(m and not o for o, m in zip(ours, theirs))} and rejects "
                     f"{sum(o and not m for o, m in zip(ours, theirs))}")
        print(line)
        for k, ((c, g), a, b) in enumerate(zip(pairs, ours, theirs)):
            if a != b:
                why = "" if expected is None else f" (written expectation: {'correct' if expected[k] else 'wrong'})"
                print(f"   differ: {c[-70:]!r} vs gold {g!r}: ours {'correct' if a else 'not correct'}, "
                      f"math-verify {'correct' if b else 'not correct'}{why}")

    compare("GSM8K-style batch", batch[:256])
    if rows:
        compare("MATH-500 reference solutions", [(r["solution"], r["answer"]) for r in rows])
        compare("MATH-500 echoed golds", [("\\boxed{%s}" % r["answer"], r["answer"]) for r in rows])
        compare("MATH-500 negatives", [("\\boxed{%s}" % r["answer"], rows[(i + 1) % 500]["answer"])
                                       for i, r in enumerate(rows)])
    compare("written cases", [(c, g) for c, g, _ in CASES],
            [e == "correct" for _, _, e in CASES])


if __name__ == "__main__":
    main()
