"""Tests for reward.py: written cases for every rule (both directions), the real-data checks (skipped when
../shared/data is absent), injection payloads, the time bounds (one sympy proof; the budget of one grade call),
and a seeded property test.

    python -m pytest -q test_reward.py
"""

import json
import multiprocessing
import os
import random
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import reward as R
from reward import Result, extract_answer, gold_answer, grade
from reward_cases import CASES, EITHER

DATA = Path(__file__).resolve().parent.parent / "shared" / "data"
C, W, N = "correct", "wrong", "no_answer"


@pytest.mark.parametrize("completion,gold,expected", CASES)
def test_written_case(completion, gold, expected):
    r = grade(completion, gold)
    assert r.status == expected, r
    assert r.reward == (1.0 if expected == C else 0.0)


def test_case_count_and_balance():
    statuses = [e for _, _, e in CASES]
    assert len(CASES) >= 80 and statuses.count(C) >= 30 and statuses.count(W) >= 30 and statuses.count(N) >= 5


def test_extract_answer_contract():
    assert extract_answer(r"a \boxed{x^{2}} b") == "x^{2}"
    assert extract_answer(r"\boxed{\{1,2\}}") == r"\{1,2\}"           # escaped braces do not count
    assert extract_answer(r"\boxed{1}, \boxed{-2}") == "1, -2"
    assert extract_answer(r"\boxed{1}. Check: 2+2=4, so \boxed{-2}") == "-2"
    assert extract_answer("no answer here, just 42") is None
    assert extract_answer(None) is None
    assert extract_answer("The final answer is $\\frac{1}{2}$. I hope it is correct.") == "\\frac{1}{2}"
    assert extract_answer("the answer is $12") is None                 # unterminated math
    assert extract_answer("#### 1,080\n") == "1,080"


def test_gold_answer_shapes():
    assert gold_answer("Natalia sold 48/2 = 24 clips.\n#### 72") == "72"
    assert gold_answer("so $\\boxed{3}$ then $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"  # MATH: last box
    assert gold_answer("025") == "025"
    assert gold_answer(27.0) == "27" and gold_answer(0.5) == "0.5" and gold_answer(7) == "7"
    assert gold_answer(["$\\frac{1}{2}$"]) == "\\frac{1}{2}"
    assert gold_answer(["$69$,$84$"]) == "69,84"
    assert gold_answer("4.5e33") == "4.5e33"
    assert gold_answer(r"\$32,\!348") == r"\$32,\!348"              # a plain string is unchanged
    assert gold_answer({"answer": "#### 5"}) == "5"
    assert gold_answer(None) is None and gold_answer(float("nan")) is None and gold_answer([]) is None
    assert gold_answer("no box: \\boxed{}") is None
    assert gold_answer("are $\\boxed{-2}$ and $\\boxed{1}$.") == "-2, 1"          # adjacent boxes: one list
    assert gold_answer("$\\boxed{3}$ or $\\boxed{\\frac{2}{5}}$.") == "3, \\frac{2}{5}"
    assert gold_answer("$\\boxed{x+11}$ or $\\boxed{11+x}$.") == "11+x"          # one answer written twice
    assert gold_answer("$\\boxed{(1,2)}$ and $\\boxed{(3,4)}$ (either one is acceptable)") == "(3,4)"
    assert gold_answer("so \\boxed{12") is None
    with pytest.raises(ValueError):
        gold_answer(object())
    for empty in ("", "  ", None, []):
        with pytest.raises(ValueError):
            grade("\\boxed{1}", empty)
    for no_answer_field in ({"question": "q"}, {"answer": ""}, [None]):
        with pytest.raises(ValueError):
            grade("\\boxed{1}", no_answer_field)                              # a schema error: every reward 0
    assert grade("\\boxed{1}", "so \\boxed{12").status == W                  # malformed, not empty: no raise
    assert grade("\\boxed{12}", {"solution": "so \\boxed{12"}).status == W


def test_result_fields():
    r = grade(r"so the answer is $\boxed{\dfrac{14}{3}}$.", r"\frac{14}{3}")
    assert isinstance(r, Result) and r.reward == 1.0 and r.status == C
    assert r.extracted == r"\dfrac{14}{3}" and r.pred == r.gold == r"\frac{14}{3}"
    r = grade("no idea", "5")
    assert (r.reward, r.status, r.extracted, r.pred, r.gold) == (0.0, N, None, None, "5")
    assert R.reward(r"\boxed{5}", "5") == 1.0 and R.reward(r"\boxed{6}", "5") == 0.0


# ---------------------------------------------------------------------------------------------------------
# real data

def _load(name):
    path = DATA / name / "test.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not present")
    return [json.loads(line) for line in path.open()]


def test_math500_solutions_and_echo():
    rows = _load("math500")
    assert len(rows) == 500
    assert sum(grade(r["solution"], r["answer"]).status == C for r in rows) == 500
    assert sum(grade("\\boxed{%s}" % r["answer"], r["answer"]).status == C for r in rows) == 500


def test_math500_negatives():
    rows = _load("math500")
    hits = [(i, rows[i]["answer"], rows[(i + 1) % 500]["answer"]) for i in range(500)
            if grade("\\boxed{%s}" % rows[i]["answer"], rows[(i + 1) % 500]["answer"]).status == C]
    # verified by hand: the only neighbouring golds that are truly equal
    assert hits == [(22, "5", "x=5"), (186, "7", "7"), (403, "3", "3")]


def test_gsm8k_answers():
    rows = _load("gsm8k")
    assert len(rows) == 1319
    assert sum(grade(r["answer"], r["answer"]).status == C for r in rows) == 1319
    boxed = ["\\boxed{%s}" % gold_answer(r["answer"]).replace(",", "") for r in rows]
    assert sum(grade(b, r["answer"]).status == C for b, r in zip(boxed, rows)) == 1319


# Issue 11, item 2: every MATH gold that changes when a solution's adjacent boxes are read as one list answer
# (computed from math/{test,train}.jsonl below; MATH-500 has none: see test_math500_golds_unchanged). The new
# gold of each was checked by hand against its problem: all eight ask for all solutions / values / points.
MULTIBOX_GOLDS = {
    "test/algebra/1878.json": "-2, 1",                             # "Find all solutions", was "1"
    "test/intermediate_algebra/225.json": r"3, \frac{2}{5}",         # "Enter all the solutions", was 2/5
    "test/precalculus/679.json": r"\frac{\pi}{4}, \frac{5\pi}{4}",    # "Enter all the real solutions"
    "train/algebra/152.json": "(-2,18), (8,38)",                   # "Find all points where they intersect"
    "train/algebra/1771.json": "(-2, 23), (0, 1)",                 # "Give all points where they intersect"
    "train/intermediate_algebra/1964.json": "1, 9",                # "Enter all possible values"
    "train/precalculus/860.json": r"\frac{3}{2}, -3",                # "List all possible values"
    "train/precalculus/1149.json": r"30^\circ, 150^\circ",           # "find all possible values of theta"
}
# Several adjacent boxes that keep the last one: alternatives the solution names ("Enter only one of the
# foci, not both"; "(Either point is an acceptable answer.)"), and one answer boxed in two forms.
LAST_BOX_KEPT = {
    "test/intermediate_algebra/25.json": "(0,0)",
    "test/intermediate_algebra/702.json": r"\left(-\tfrac52, -\tfrac52\right)",
    "train/intermediate_algebra/396.json": "(-5, 1)",
    "test/number_theory/459.json": r"\frac{639}{40}",                # 15 39/40 or 639/40 (also in MATH-500)
    "test/prealgebra/224.json": "-34 + 12x",                       # 12x - 34 or -34 + 12x
    "test/prealgebra/1088.json": "11+x",
    "train/prealgebra/452.json": "2 - b",
    "train/number_theory/796.json": "28_9",                        # 28 or 28_9
    "train/number_theory/837.json": r"8\!:\!34 \text{ p.m.}",        # 20:34 or 8:34 p.m.
}


def _load_math():
    for split in ("test", "train"):
        if not (DATA / "math" / f"{split}.jsonl").exists():
            pytest.skip(f"{DATA / 'math'} not present")
    return [json.loads(line) for split in ("test", "train") for line in (DATA / "math" / f"{split}.jsonl").open()]


def test_math_multibox_golds():
    rows = _load_math()
    by_id = {r["unique_id"]: r["solution"] for r in rows}
    changed = {u: gold_answer(sol) for u, sol in by_id.items() if gold_answer(sol) != R._boxed_answer(sol, join=False)}
    assert changed == MULTIBOX_GOLDS
    for u, gold in MULTIBOX_GOLDS.items():
        sol, items = by_id[u], re.split(r",\s*(?![^()]*\))", gold)  # commas outside parentheses
        assert grade("\\boxed{%s}" % gold, sol).status == C
        assert grade("\\boxed{%s}" % ", ".join(reversed(items)), sol).status == C     # a list is a multiset
        assert grade("\\boxed{%s}" % items[-1], sol).status == W                     # the old gold alone
    for u, gold in LAST_BOX_KEPT.items():
        sol = by_id[u]
        assert len(R._boxed_answer(sol).split(", ")) >= 2 and gold_answer(sol) == gold
        assert grade("\\boxed{%s}" % gold, sol).status == C
    for u in ("test/intermediate_algebra/25.json", "train/intermediate_algebra/396.json"):
        assert grade("\\boxed{%s}" % R._boxed_answer(by_id[u]), by_id[u]).status == W  # "not both"


def test_math500_golds_unchanged():
    rows = _load("math500")
    assert [r["unique_id"] for r in rows if gold_answer(r["solution"]) != r["answer"]] == []


def test_math_golds_echo_and_malformed():
    rows = _load_math()
    golds = {r["unique_id"]: gold_answer(r["solution"]) for r in rows}
    empty = sorted(u for u, g in golds.items() if g is None)
    assert empty == ["train/number_theory/7115.json", "train/number_theory/7117.json"]  # `\\boxed{}` in the data
    for u in empty:  # item 8: a malformed gold grades `wrong`, it does not raise
        sol = next(r["solution"] for r in rows if r["unique_id"] == u)
        assert grade(r"\boxed{0}", sol).status == W
    bad = [(u, g) for u, g in golds.items() if g is not None and grade("\\boxed{%s}" % g, g).status != C]
    assert not bad


def test_math_gold_shapes_from_the_issue():
    golds = {r["unique_id"]: gold_answer(r["solution"]) for r in _load_math()}
    tex_commas = [g for g in golds.values() if g and "{,}" in g]          # item 4: 1{,}008{,}016
    assert len(tex_commas) == 9
    for g in tex_commas:
        digits = re.sub(r"\D", "", g)
        assert grade("\\boxed{%s}" % digits, g).status == C
        assert grade("\\boxed{%d}" % (int(digits) + 1000), g).status == W
    worded = {u: g for u, g in golds.items() if g and re.search(r"\\text\{\s*,?\s*(?:and|or)\s*\}", g)}  # item 5
    assert sorted(u for u, g in worded.items() if "," in g) == [
        "test/precalculus/870.json", "train/algebra/1055.json", "train/algebra/1642.json"]
    assert len(worded) == 7
    for g in worded.values():
        items = [x.strip() for x in re.split(r"\\text\{[^}]*\}|,", g) if x.strip()]
        assert len(items) >= 2
        assert grade("\\boxed{%s}" % ", ".join(reversed(items)), g).status == C
        assert grade("\\boxed{%s}" % ", ".join(items[:-1]), g).status == W
    g = golds["train/algebra/1087.json"]                                       # item 7
    assert g == r"-80\leq g(x)\leq 82"
    assert grade(r"\boxed{[-80, 82]}", g).status == C and grade(r"\boxed{[-80, 81]}", g).status == W
    g = golds["train/counting_and_probability/360.json"]                       # item 6 in a gold
    assert grade(r"\boxed{\frac23}", g).status == C and grade(r"\boxed{0.67}", g).status == C
    assert grade(r"\boxed{0.6}", g).status == W


def test_tex_thousands_golds_and_review_finds():
    """Every MATH gold with TeX's thousands separator (`{,}`, `,\\!`, `, \\!`) equals its plain digits, also inside
    a fraction (four were misread before the review of issue 11: three fractions with a list as denominator, and
    111, \\! 111, \\! 111 as three items); and the other golds that review found misread."""
    golds = {r["unique_id"]: gold_answer(r["solution"]) for r in _load_math()}
    tex = {u: g for u, g in golds.items() if g and re.search(r"\d(?:\{,\}|,\s*\\!\s*)\d{3}", g)}
    assert len(tex) == 91
    bad = [(u, g) for u, g in tex.items()
           if grade("\\boxed{%s}" % re.sub(r"\{,\}|,\s*\\!\s*", "", g), g).status != C]
    assert not bad
    for u, pred in (("test/prealgebra/1418.json", "111111111"), ("test/counting_and_probability/861.json",
                    r"\frac{12}{5525}"), ("train/counting_and_probability/251.json", r"\frac{1}{29322216}"),
                    ("train/number_theory/794.json", "0.12345")):
        assert grade(r"\boxed{%s}" % pred, golds[u]).status == C
        assert grade(r"\boxed{%s}" % pred.replace("1", "7", 1), golds[u]).status == W
    g = golds["test/precalculus/528.json"]                        # "Enter all the solutions, separated by commas"
    assert g == "70,110" and grade(r"\boxed{110, 70}", g).status == C and grade(r"\boxed{70}", g).status == W
    minerva = [gold_answer(r["solution"]) for r in _load("minerva_math")]
    assert minerva[61] == "I(0)" and grade(r"\boxed{I(0) e^{-t/(RC)}}", minerva[61]).status == W
    assert grade(r"\boxed{I(0) e^{-t/(RC)}}", minerva[86]).status == C
    assert grade(r"\boxed{%s}" % minerva[27], minerva[27]).status == C                      # M^{6} is maths
    assert grade(r"\boxed{%s}" % minerva[27].replace("M^{6}", "M^{5}"), minerva[27]).status == W
    assert minerva[17] == "0.01" and grade(r"\boxed{0.005}", minerva[17]).status == W     # a tie


def test_data_loader_uses_the_new_golds():
    import data
    if not all((DATA / "math" / f"{split}.jsonl").exists() for split in ("test", "train")):
        pytest.skip(f"{DATA / 'math'} not present")
    rows = {r["id"]: r["gold"] for r in data.load_rows("math", "test", data_dir=str(DATA))}
    assert len(rows) == 5000 and rows["test/algebra/1878.json"] == "-2, 1"
    assert grade(r"The solutions are $\boxed{-2}$ and $\boxed{1}$.", rows["test/algebra/1878.json"]).status == C
    assert grade(r"\boxed{1}", rows["test/algebra/1878.json"]).status == W
    train = data.load_rows("math", "train", data_dir=str(DATA))
    assert len(train) == 7498  # the two empty-box golds are skipped


@pytest.mark.parametrize("name,key", [("aime24", "answer"), ("amc23", "answer"), ("olympiadbench", "final_answer"),
                                      ("minerva_math", "solution")])
def test_gold_echo(name, key):
    rows = _load(name)
    bad = [r[key] for r in rows if grade("\\boxed{%s}" % gold_answer(r[key]), r[key]).status != C]
    assert not bad


# ---------------------------------------------------------------------------------------------------------
# safety

@pytest.mark.parametrize("payload", [
    "__import__('os').system('touch {p}')",
    "lambda: 0",
    "().__class__.__bases__[0].__subclasses__()",
    "open('{p}', 'w').write('x')",
    "exec(\"open('{p}','w')\")",
    "eval('1+1')",
    "x = __import__('os').system('touch {p}')",
    r"\input{{/etc/passwd}}",
    "{{{{config.__class__.__init__.__globals__}}}}",
])
def test_injection_is_inert(payload, tmp_path):
    p = tmp_path / "pwned"
    text = "\\boxed{" + payload.format(p=p) + "}"
    for gold in ("0", "2", "x", "lambda: 0", "os"):
        r = grade(text, gold)
        assert r.status in (W, N) or r.pred == r.gold, r  # only the identical text can match
    assert not p.exists()


def test_refuses_towers_quickly():
    t = time.perf_counter()
    assert grade(r"\boxed{9^{9^{9^{9}}}}", "5").status == W
    assert grade(r"\boxed{9^{9^{9^{9}}}}", r"9^{9^{9^{9}}}").status == C   # identical text only
    assert grade(r"\boxed{10^{10^{10}}}", "10^{10^{9}}").status == W
    assert grade(r"\boxed{(10^{10})!}", "1").status == W
    assert grade(r"\boxed{x^{9^{9^{9}}}}", "x^{9^{9^{9}}+1}").status == W
    assert time.perf_counter() - t < 1.0


def test_symbolic_timeout_kills_and_recovers(monkeypatch):
    assert grade(r"\boxed{(x+1)^2}", "x^2+2x+1").status == C     # the worker is up
    slow = (r"\boxed{\sin^{6} u + \cos^{6} u}", r"1 - 3\sin^2 u \cos^2 u")   # sympy needs ~20 ms for this one
    monkeypatch.setattr(R, "SYMBOLIC_TIMEOUT_S", 0.001)
    t = time.perf_counter()
    assert grade(*slow).status == W                      # a timeout is `wrong` ...
    assert time.perf_counter() - t < 1.0
    monkeypatch.undo()
    assert grade(*slow).status == C                      # ... and a fresh worker took over


def test_symbolic_from_threads():
    pairs = [(r"\boxed{(x+%d)^2}" % k, "x^2 + %dx + %d" % (2 * k, k * k)) for k in range(1, 9)]
    with ThreadPoolExecutor(4) as ex:
        statuses = list(ex.map(lambda p: grade(*p).status, pairs))
    assert statuses == [C] * 8
    assert grade(r"\boxed{(x+1)^2}", "x^2 + 2x + 2").status == W


def _grade_in_child(_):
    return grade(r"\boxed{(a+b)^2}", "a^2 + 2ab + b^2").status


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_symbolic_in_forked_worker():
    grade(r"\boxed{(x+1)^2}", "x^2+2x+1")                # the parent owns a sympy worker ...
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.map(_grade_in_child, [0]) == [C]      # ... and a forked child starts its own


# --- the time budget of one grade() call (GRADE_BUDGET_S): chains of proofs, waits for the worker

FAKE_WORKER = """
import sys, time
time.sleep(float(sys.argv[1]))
print("ready", flush=True)
for line in sys.stdin:
    time.sleep(float(sys.argv[2]))
    print("true", flush=True)
"""


@pytest.fixture
def fake_worker(monkeypatch):
    """use(start, proof): from now on the sympy worker is a stub that is ready `start` s after it is started and
    answers every request `true` after `proof` s: slow proofs that succeed, so that only the budget can stop a
    chain of them (every pair below is a true identity)."""
    def use(start=0.0, proof=0.0):
        R._kill_worker()
        monkeypatch.setattr(R, "_worker_argv", lambda: [sys.executable, "-c", FAKE_WORKER, str(start), str(proof)])
    yield use
    R._kill_worker()
    R._spawned_in = None  # the next symbolic grade starts a real worker, as a process's first (not charged)


PROOF_S, BUDGET_S, SLACK_S = 0.05, 0.08, 0.2  # the budget has room for one stub proof, not two
CHAINS = [  # (completion, gold, proofs the comparison makes in series)
    (r"\boxed{1+x, 2+x, 3+x, 4+x, 5+x, 6+x}", "x+1, x+2, x+3, x+4, x+5, x+6", 6),                  # multiset
    (r"\boxed{\begin{pmatrix} 1+x & 2+x & 3+x \\ 4+x & 5+x & 6+x \end{pmatrix}}",
     r"\begin{pmatrix} x+1 & x+2 & x+3 \\ x+4 & x+5 & x+6 \end{pmatrix}", 6),                        # matrix
    (r"\boxed{[1+x, 2+x] \cup [3+x, 4+x] \cup (5+x, 6+x]}", r"[x+1, x+2] \cup [x+3, x+4] \cup (x+5, x+6]", 6),
    (r"\boxed{y+x=1, y+x=2, y+x=3, y+x=4}", "x+y=1, x+y=2, x+y=3, x+y=4", 4),                       # equations
    (r"\boxed{x+1}, \boxed{x+1}, \boxed{x+1}, \boxed{1+x}", "x+1", 4),                              # written twice
    (r"\boxed{x+1}", r"\boxed{1+x} or \boxed{2+x-1} or \boxed{3+x-2} or \boxed{x+1}", 3),         # ... in a gold
]


def test_budget_stops_chains_of_proofs(fake_worker, monkeypatch):
    fake_worker(proof=PROOF_S)
    budget = R.GRADE_BUDGET_S
    for completion, gold, n in CHAINS:
        monkeypatch.setattr(R, "GRADE_BUDGET_S", budget)
        assert grade(r"\boxed{2+x}", "x+2").status == C       # one slow proof fits (and the stub is up)
        monkeypatch.setattr(R, "GRADE_BUDGET_S", BUDGET_S)    # without a budget: n * PROOF_S and `correct`
        t = time.perf_counter()
        r = grade(completion, gold)
        elapsed = time.perf_counter() - t
        assert r.status == W and elapsed < BUDGET_S + SLACK_S, (completion, r, elapsed, n * PROOF_S)


def test_budget_with_real_sympy(monkeypatch):
    """tan(u+v) against its addition formula is true but takes sympy more than SYMBOLIC_TIMEOUT_S: each pair
    was a 2 s timeout plus a worker restart, so a list of them cost n of those (10 items: ~25 s)."""
    assert grade(r"\boxed{(x+1)^2, (x-1)^2}", "x^2-2x+1, x^2+2x+1").status == C   # ordinary symbolic cases
    assert grade(r"\boxed{\left(\frac{x}{2}, x^2-1\right)}", r"(x/2, (x-1)(x+1))").status == C
    assert grade(r"\boxed{y = 2x+1}", "2x - y + 1 = 0").status == C
    f = r"\frac{\tan u + \tan v}{1 - \tan u \tan v}"
    monkeypatch.setattr(R, "GRADE_BUDGET_S", 0.3)
    t = time.perf_counter()
    r = grade(r"\boxed{%s}" % ", ".join([f] * 10), r"\tan(u+v), " + ", ".join(map(str, range(1, 10))))
    assert r.status == W and time.perf_counter() - t < 0.3 + SLACK_S


def test_budget_covers_exact_arithmetic(monkeypatch):
    """No sympy at all: 44 binomials of ~100,000-bit values (each ~0.1 s on CPython 3.11, each within the size
    caps) in one 923-character answer took 4.6 s against the gold 5."""
    huge = "+".join(r"\binom{99999}{%d}" % (49999 - k) for k in range(44))
    assert grade(r"\boxed{(x+1)^2}", "x^2+2x+1").status == C  # a worker restarted by an earlier test has started
    monkeypatch.setattr(R, "GRADE_BUDGET_S", 0.1)             # (its import of sympy competes for the CPU)
    for pred, gold in ((huge, "5"), ("x = %s = 3" % huge, "3")):  # the second is evaluated by the parser
        t = time.perf_counter()
        assert grade(r"\boxed{%s}" % pred, gold).status == W
        assert time.perf_counter() - t < 0.1 + SLACK_S + 0.15  # + the one binomial under way


def test_budget_covers_waiting_for_the_worker(monkeypatch):
    assert grade(r"\boxed{(x+1)^2}", "x^2+2x+1").status == C
    held, done = threading.Event(), threading.Event()

    def hold():  # another thread's long proof holds the worker
        with R._worker_lock:
            held.set()
            done.wait(3.0)

    th = threading.Thread(target=hold)
    th.start()
    held.wait()
    monkeypatch.setattr(R, "GRADE_BUDGET_S", 0.1)
    t = time.perf_counter()
    r = grade(r"\boxed{(x+2)^2}", "x^2+4x+4")
    elapsed = time.perf_counter() - t
    done.set()
    th.join()
    assert r.status == W and elapsed < 0.1 + SLACK_S, (r, elapsed)


def test_budget_covers_a_restarting_worker(fake_worker, monkeypatch):
    fake_worker(start=0.25)
    R._spawned_in = os.getpid()                          # a restart (after a timeout): its start is charged
    monkeypatch.setattr(R, "GRADE_BUDGET_S", 0.1)
    t = time.perf_counter()
    assert grade(r"\boxed{1+x}", "x+1").status == W
    assert time.perf_counter() - t < 0.1 + SLACK_S
    pid = R._worker.proc.pid                             # still starting: it is not killed ...
    monkeypatch.setattr(R, "GRADE_BUDGET_S", 5.0)
    assert grade(r"\boxed{1+x}", "x+1").status == C and R._worker.proc.pid == pid   # ... the next grade uses it
    fake_worker(start=0.15)
    R._spawned_in = None                                 # a process's first worker: its start is not charged
    monkeypatch.setattr(R, "GRADE_BUDGET_S", 0.1)
    assert grade(r"\boxed{2+x}", "x+2").status == C


def _random_strings(n, seed=0):
    """Random and adversarial strings: token soup, unicode, deep nesting, towers, huge inputs."""
    rng = random.Random(seed)
    toks = [r"\frac", r"\sqrt", "{", "}", "(", ")", "[", "]", "^", "_", "x", "y", "2", "9", "0", ".", ",", "-", "+",
            r"\pm", r"\cdot", r"\pi", "e", "i", "!", "=", r"\le", r"\in", r"\cup", r"\infty", "|", r"\{", r"\}",
            r"\sin", r"\log", r"\text{cm}", r"\%", "$", r"\begin{pmatrix}", r"\end{pmatrix}", "&", r"\\",
            r"\boxed{", "####", " ", "\n", r"\left(", r"\right)", r"\binom", r"\lfloor", r"\rfloor", r"\dfrac",
            "1,000", "e5", "\u00e9", "\u221e", "\u221a", "\x00", "'", r"\mathrm{e}", "the answer is ", "Final Answer: ",
            "\\", "%", "#"]
    out = []
    for k in range(n):
        kind = k % 10
        if kind < 5:
            s = "".join(rng.choice(toks) for _ in range(rng.randint(1, 60)))
        elif kind == 5:
            s = "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(1, 200)))
        elif kind == 6:
            d = rng.randint(1, 3000)
            s = rng.choice(["{" * d + "1" + "}" * d, "(" * d + "x", r"\sqrt{" * d + "2", "2^{" * d + "9" + "}" * d,
                            "x^" * d + "2", "-" * d + "1", "1+" * d + "1", r"\frac{1}{" * d])
        elif kind == 7:
            s = rng.choice([r"9^{9^{9^{9}}}", r"10^{10^{10}}", r"(10^{10})!", r"\sin(10^{100})", r"e^{10^{10}}",
                            r"\binom{10^9}{5}", "1e9999", "9" * 999, r"x^{x^{x^{x}}}", r"\sqrt[10^9]{2}",
                            r"(x+y+z)^{200}", r"2^{2^{2^{2^{2^{2}}}}}", r"\lfloor 10^{1000} \rfloor"])
        elif kind == 8:
            s = rng.choice(["a", "1 ", r"\boxed{", "{", "$", "x+"]) * rng.randint(1000, 50_000)
        else:
            s = "".join(rng.choice(toks) for _ in range(rng.randint(1, 30)))
        if k % 100 == 0:
            s = s * max(1, 100_000 // max(1, len(s)))  # some 100k-character inputs
        out.append(s if k % 3 else "\\boxed{" + s + "}")
    return out


def test_property_never_raises_and_is_fast():
    golds = ["5", r"\frac{1}{2}", "x^2+1", "(1,2)", "[0,1)", r"2\sqrt{3}", "y = 2x+1", r"1 \pm \sqrt 2", "4.5e33",
             r"\text{(C)}", r"9^{9^{9^{9}}}"]
    strings = _random_strings(2000)
    assert len(strings) == 2000 and max(map(len, strings)) >= 100_000
    worst = 0.0
    for k, s in enumerate(strings):
        t = time.perf_counter()
        r = grade(s, golds[k % len(golds)])
        worst = max(worst, time.perf_counter() - t)
        assert r.status in (C, W, N) and r.reward in (0.0, 1.0)
        assert isinstance(extract_answer(s), (str, type(None)))
    assert worst < 1.0, worst
