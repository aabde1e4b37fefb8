"""The verifiable reward: is the final answer of a completion mathematically equal to the gold answer?

    from reward import grade, reward, extract_answer, gold_answer
    grade(completion, gold)   -> Result(reward=1.0|0.0, status="correct"|"wrong"|"no_answer", extracted, pred, gold)
    reward(completion, gold)  -> 1.0 or 0.0
    python reward.py "<completion>" "<gold>"      # grade one pair from the shell

In RLVR this function *is* the training signal, so it is written to be exact where the maths is exact,
conservative where it is not, fast on the common path, and safe on any input. Standard library plus sympy
(and mpmath, which sympy requires and installs). Model output is never eval'd/exec'd; sympy's parse_expr /
sympify never see text: a small LaTeX parser below turns a whitelist of tokens into a tuple tree, and only
that tree is turned into numbers (fractions.Fraction, mpmath) or sympy objects.

Extraction contract (extract_answer):
  1. The last `\\boxed{...}` / `\\fbox{...}` (braces matched, nested braces and `\\{ \\}` escapes handled; the
     TeX shorthand `\\boxed 5` takes the run up to the next space or `$`). If that last box is empty or never
     closed (a completion cut off mid-answer) there is no answer: we do not fall back to an earlier box.
  2. Several boxes: the last one is the answer, so self-correction ("... \\boxed{3}. Wait, ... \\boxed{4}") gives
     4. Boxes that follow each other with only separators between them (spaces, `$`, `,`, `;`, "and", "or",
     `\\quad`) form one answer, a list: `\\boxed{1}, \\boxed{-2}` is "1, -2". Hedging ("\\boxed{3} or \\boxed{4}")
     therefore becomes the list "3, 4", which never equals a single gold: hedging cannot earn reward.
     A list of at most 4 items that are one answer written again is that answer: `\\boxed{15\\frac{39}{40}},
     or \\boxed{\\frac{639}{40}}`, `\\boxed{x+11} or \\boxed{11+x}` (constants must be exactly equal: `0.3 or
     1/3` is a hedge).
  3. No box at all: the GSM8K form, the text after the last `####` up to the end of that line.
  4. Else an explicit phrase: the last "final answer: X" / "the answer is X" / a line "Answer: X"; X is the
     `$...$`, `\\(...\\)` or `\\[...\\]` math right after it (spans joined by `,` / "and" / "or" are one list,
     as boxes are: "the answer is $1$ and $2$" is "1, 2"), or the rest of the sentence.
  5. Else no answer. Never "the last number in the text".
  Texts longer than MAX_TEXT_CHARS are cut to their tail; answers longer than MAX_ANSWER_CHARS are `wrong`.

Gold contract (gold_answer, also applied by grade): a GSM8K answer is the text after `####`; a solution text
(MATH, Minerva) is read as a completion's boxes are (rule 2): its last box with the boxes adjacent to it, so
MATH test/algebra/1878 ("find all solutions", `$\\boxed{-2}$ and $\\boxed{1}$`) has the gold "-2, 1", not "1".
Two exceptions keep the last box alone: boxes that are one answer written twice, and boxes the solution calls
alternatives right after them ("(Either point is an acceptable answer.)", for "enter only one of the foci").
AMC floats 27.0 -> "27"; OlympiadBench lists -> the first item without `$`. A gold with no usable answer (a
`\\boxed{` never closed, an empty box) makes grade return `wrong`, never raise: a training loop must not stop
on one malformed row (data.py skips such rows). Only a gold with no text at all (None, "", [], a row without
an answer field) raises ValueError: that is a caller's error that would silently make every reward 0.

Normalisation (both sides): `$`, `\\$`, `\\left`/`\\right`, spacing commands, `\\dfrac`/`\\tfrac` -> `\\frac`,
`\\frac43` / `\\sqrt2` TeX shorthand, degrees (`^\\circ`, `°`), unit words in `\\text{}` / `\\mbox{}` /
`\\mathrm{}` when something else remains (`\\mathrm{e}` and other single letters stay: they are maths),
trailing unit words after a number ("5 apples", "12 cm", "0.5 M"; not after an expression with variables, so
Minerva's `... M_{\\odot}^{6}} M^{6}` keeps its factor M, and single letters other than m, s, h, g are maths, so
`\\frac12 m v^2` stays), except words that change the value, bare or in `\\text{}`: "5 thousand" is 5 \\times 10^{3}
(hundred, thousand, million, billion, trillion; dozen is 12), "3 squared" and "2 thirds" are not numbers. A trailing
`.`, leading `=` / `\\approx`. TeX's thousands separators in 3-digit groups after a nonzero leading group
(`1{,}080`, `10,\\!080`, `111, \\! 111, \\! 111`) are removed wherever they stand (`\\frac{12}{5,\\!525}`); plain
thousands commas (`1,234`) only when the gold is a single value (`1,2`, `32, 349` and `0,111` are lists). A gold
written `70,110` is either the number or the list: a list prediction is compared with the list (MATH
test/precalculus/528, "separated by commas"), unless a group starts with 0 (`1,080` is no list). Leading zeros (AIME
"025" = 25), trailing zeros (`18.00` = 18). "and" / "or" between items, bare or in `\\text{}`, with or without a
comma before them, separate list items (`2, 3, \\text{ and } 4` = `2, 3, 4`; `$1$ and $2$`) unless the whole answer
is words ("Alice and Bob" stays a name). `28 pct` / `28 percent` = `28\\%`; `x != 3` and `\\not=` are `\\ne` (`!=`
right after a digit is a factorial: `5!=120` is 5! = 120). Code-style golds (Minerva): `np.` / `math.` prefixes go,
and `-1./3` is -1/3. Clock times (`8:34 \\text{ p.m.}`, `\\text{1:03 PM}`, `20:34`) are times of day on the 24-hour
clock; without a.m./p.m. the hour is read as written, so 20:34 = 8:34 p.m. but 8:34 != 8:34 p.m. (a gold `9:24`
accepts 9:24 a.m., not 9:24 p.m.); `19:60` is not a time (ratios compare as text).

Comparison, in this order:
  - identical parse trees (or identical normalised text) are equal;
  - numbers are exact `Fraction`s: unreduced fractions are equal to reduced ones (`\\frac{4}{6}` = `\\frac23`),
    mixed numbers `7\\frac{1}{2}` = 15/2 (an integer directly followed by `\\frac` of two integers), decimals
    and e-notation are exact too (`0.15` = 3/20, `4.5e33` = `4.5\\times 10^{33}`);
  - rounding: a decimal gold is taken as rounded at its last written digit, so a prediction is right iff it
    rounds to the gold there (|pred - gold| < half a unit of the gold's last digit): more digits never hurt,
    fewer never help (gold 4.5e33 accepts 4.487e33; gold 0.5613 rejects 0.561). A tie, exactly half a unit
    away, is not accepted: it is what a different exact value one digit longer gives (gold 0.2 rejects 0.25
    and 1/4, gold 0.01 rejects 0.005, gold .5 rejects 0.45 and 0.55). An exact gold (a fraction, radical,
    multiple of pi: "express as a common fraction", "in simplest radical form", "in terms of pi")
    asks for the exact value, so a decimal prediction of it is right only with >= MIN_SIG_DIGITS = 6
    significant digits, correctly rounded: 0.333333 for 1/3 and 3.14159 for pi, never 0.333, 3.14, 3.1416,
    1.41 for sqrt 2 or 37.7 for 12 pi (Math-Verify, Qwen's grader and the MATH grader reject those too; six
    correct digits are evidence of the exact value, three are what a rounded guess gives). That is for values
    no decimal can write: an exact gold with a finite decimal expansion needs it whole (1234567 rejects
    1.23457e6, 1000000007 rejects 1.00000e9, 1/1024 rejects 0.000976563). Exact values are never compared
    with a tolerance, and comparisons are relative, so 2^-99 != 2^-98 and 1/2004! != 1/2006!;
  - approximations: `X \\approx D` after a constant X, D a written number, is X once D is checked to be X
    rounded at D's last digit (an integer: at its units): `\\frac{\\sqrt3}{3} \\approx 0.577` equals
    `\\frac{\\sqrt3}{3}` on either side; a wrong approximation (`\\approx 0.578`) leaves the answer comparable
    as text only, i.e. wrong. A gold `X \\approx D` also accepts D itself under the rounding rule (MATH's
    `\\$\\dfrac23 \\approx \\$0.67` for "rounded to the nearest cent" accepts 0.67). An equation of
    constants (`2^5 = 32`, `\\frac{8}{24} = \\frac13`, also after a label: `x = 2^5 = 32`) is its value when
    its sides are exactly equal, else (`\\frac13 = 0.333`) it is false and wrong;
  - percent: `\\%` is dropped and a side that carried it may also mean value/100, so gold "62.5\\%" accepts
    62.5 and 0.625; a gold without `%` never accepts gold*100 or gold/100 as a bare number;
  - irrational constants (sqrt, pi, e, logs, trig, complex i) are compared at 60 significant digits
    (mpmath, relative difference < 1e-40);
  - clock times are equal when hours, minutes and seconds are;
  - structures: parenthesised tuples/points are ordered; bare comma lists and `\\{...\\}` sets ("all
    solutions") are multisets (`1,1,2` != `1,2,2`), and a bare list never equals a parenthesised tuple;
    `a \\pm b` is the list {a+b, a-b}; intervals keep open/closed ends (a
    2-tuple `(a,b)` equals the open interval); `\\cup` unions are order-free; pmatrix/bmatrix compare
    elementwise (a column/row vector also equals the tuple of its entries); `52_8` base notation equals `52_8`
    or the bare digits `52`; multiple-choice `\\text{(C)}` = `(C)` = `C`; word answers (`\\text{Evelyn}`)
    compare case-insensitively;
  - `x = 5`, `x \\in [1,2]`, `f(x) = 2x`, `(x,y) = (1,2)`: a single variable (or function, or tuple of
    variables) on the left is a label and is dropped when the other side has no label; two labels must match;
  - a two-sided inequality with constant ends, `0 < f(x) < 1` or `-80 \\le g(x) \\le 82` ("find the range"), is
    the interval (0, 1) / [-80, 82] labelled f(x) / g(x): as a gold it accepts `(0,1)`, `[-80,82]`. The reverse
    is not accepted: a predicted two-sided inequality only equals a two-sided gold, never an interval gold.
    Other chains of relations (`f(2) < f(1) < f(4)`) compare as text;
  - other equations are relations: equal up to a nonzero factor (`2x - y + 1 = 0` = `y = 2x + 1`), inequalities
    up to a positive factor; an equation is never reduced to its right-hand side (`0` != `5x-7y+11z+4=0`);
  - expressions with variables: the variable names must match exactly (`y^2+2y+1` != `x^2+2x+1`, and
    `\\sin^2 x + \\cos^2 x` != `1`); a 60-digit numeric test at 3 complex points (positive real part) rejects
    most non-equal pairs without sympy, then sympy must prove a - b == 0 (expand/cancel, exp-rewrite,
    simplify, expand_trig, combsimp, expand_log; generic symbols, then positive ones: the complex test has
    already told |x| from x). A true identity sympy cannot prove is `wrong`: a false negative, never a false
    positive. Other conventions: `\\log` is the natural log, `e` is Euler's number, `i` the imaginary unit,
    `x^23` is x^{23} (plain-text habit), letters side by side multiply (`ab` = a*b), but a letter followed
    by a number in parentheses is a function's value, one name (`I(0)`, `f(2)`: not I*0, so `2I(0)` != `I(0)`;
    `x(x+1)` is a product), and as a label it is dropped like `x`: `f(3) = 5` = 5.

Safety and time bounds: inputs are capped (above); parse depth is capped; every power, factorial and
exponential is size-checked *before* it is evaluated (a result beyond ~2^200000 is refused, so
`9^{9^{9^{9}}}` is refused in microseconds and only equals the identical string). sympy runs in a separate
worker process (`python reward.py --sympy-worker`, started on first use, one per process that grades, with
a 2 GiB address-space cap) that is killed when it does not answer within SYMBOLIC_TIMEOUT_S; a timeout is
`wrong`. This works from threads and DDP ranks (no signal.alarm) and is POSIX-only. Nothing raises out of
grade() for any completion string or any non-empty gold string; the common numeric path never touches sympy.

Time budget: one grade() call has GRADE_BUDGET_S = 5 s of wall time in all. Each sympy request gets
min(SYMBOLIC_TIMEOUT_S, what is left); waiting for the worker (held by another thread, or restarting after
a timeout) is paid from it; the multiset (list, set, union: up to 200 x 200 pairs), tuple and matrix loops,
the numeric pre-tests of expressions and equations, the written-twice checks (completion and gold) and exact
factorials and binomials (~0.1 s each at the size caps) check it. Once it is spent nothing more is compared,
and what was not compared is not equal: `wrong` (a false negative, never a false positive, as a timeout).
Before it, a list chained timeouts (`\\tan(u+v)` against its addition formula is a 2 s timeout plus a ~1 s
restart: 3 such items took 6.8 s, 10 would take ~25 s) and 44 binomials `\\binom{99999}{k}` in one answer
took 4.6 s. Why 5 s: room for two proofs that run to the 2 s limit with the restart between them, so one
hard item does not cost an answer its other items, while one hostile or unlucky completion costs at most
about what the ~1,000 ordinary grades of a GRPO step cost together (symbolic ones ~2 ms each), not n x 3 s.
Exception: the first worker of a process (importing sympy, ~1 s, whatever the input) stops the clock while it
starts, so that the first symbolic grade is no false negative on a slow machine; restarts are charged.
gold_answer called on its own has a budget of its own (its written-twice check may need sympy).
"""

import atexit
import functools
import json
import math
import os
import re
import select
import subprocess
import sys
import threading
import time
from fractions import Fraction
from typing import NamedTuple, Optional

import mpmath

MAX_TEXT_CHARS = 1_000_000   # longer completions are cut to their tail (where the answer is)
MAX_ANSWER_CHARS = 1_000     # longer extracted answers are graded `wrong` without parsing
MAX_DEPTH = 60               # parse nesting depth
MAX_BITS = 200_000           # refuse exact/numeric values beyond ~2^MAX_BITS (exponent towers, 10^6!)
MIN_SIG_DIGITS = 6           # a decimal equals an exact gold (1/3, pi) only with this many digits, rounded
SYMBOLIC_TIMEOUT_S = 2.0     # wall time for one sympy proof in the worker
GRADE_BUDGET_S = 5.0         # wall time for all the proofs and matching of one grade() call (see the docstring)
WORKER_START_TIMEOUT_S = 60.0


class _Clock(threading.local):
    deadline = None  # time.monotonic() at which this thread's grade() call runs out of budget; None: no call


_clock = _Clock()


def _time_left():
    """Seconds left in the running grade() call's budget (inf outside one)."""
    d = _clock.deadline
    return math.inf if d is None else d - time.monotonic()


def _out_of_time():
    d = _clock.deadline
    return d is not None and time.monotonic() >= d


def _budgeted(fn, *args):
    """fn(*args) under a fresh GRADE_BUDGET_S budget, or under the running one (gold_answer inside grade)."""
    c = _clock
    if c.deadline is not None:
        return fn(*args)
    c.deadline = time.monotonic() + GRADE_BUDGET_S
    try:
        return fn(*args)
    finally:
        c.deadline = None


class Result(NamedTuple):
    reward: float            # 1.0 correct, 0.0 otherwise
    status: str              # "correct" | "wrong" | "no_answer"
    extracted: Optional[str] # the answer text taken from the completion (None: no answer)
    pred: Optional[str]      # normalised prediction
    gold: Optional[str]      # normalised gold


# ---------------------------------------------------------------------------------------------------------
# extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_BRACE_RE = re.compile(r"\\.|[{}]", re.S)
_BOX_GAP_RE = re.compile(r"(?:\s|\$|,|;|\\quad|\\qquad|\\,|\\;|\band\b|\bor\b|\\text\{\s*(?:and|or)\s*\})*")
_SPAN_GAP_RE = re.compile(r"[ \t]*(?:,[ \t]*)?(?:(?:and|or)\b[ \t]*)?")
_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")
_PHRASE_RE = re.compile(r"(?:final\s+answer|the\s+answer|^[ \t>*#]*answer)[ \t*]*(?:is\b)?[ \t]*[:=]?[ \t*]*",
                        re.I | re.M)


def _close_brace(text, j):
    """Index of the `}` closing the `{` at text[j], or -1. Escaped `\\{`, `\\}` and `\\\\` are skipped."""
    depth = 0
    for m in _BRACE_RE.finditer(text, j):
        c = m.group()
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return m.start()
    return -1


def _boxes(text):
    """All \\boxed/\\fbox occurrences, left to right, as (start, end, content); content None = unusable."""
    out, n = [], len(text)
    for m in _BOX_RE.finditer(text):
        if out and m.start() < out[-1][1]:
            continue  # a box inside the previous box: the outer one is what counts
        j = m.end()
        while j < n and text[j] in " \t":
            j += 1
        if j < n and text[j] == "{":
            k = _close_brace(text, j)
            if k < 0:
                out.append((m.start(), n, None))  # never closed: the text was cut inside the answer
                break
            out.append((m.start(), k + 1, text[j + 1:k]))
        elif j > m.end() and j < n and text[j] not in "$\\\n":
            k = j
            while k < n and not text[k].isspace() and text[k] != "$":
                k += 1
            out.append((m.start(), k, text[j:k]))
        else:
            out.append((m.start(), j, None))
    return out


def _box_run(text, join=True):
    """The last box and the boxes adjacent to it (only separators between them), as (contents, end of the
    run); None when there is no box or the last one is empty or never closed."""
    boxes = _boxes(text)
    if not boxes:
        return None
    start, end, content = boxes[-1]
    if content is None or not content.strip():
        return None
    run = [content.strip()]
    for s, e, c in reversed(boxes[:-1]) if join else ():
        if c is None or not c.strip() or start - e > 40 or not _BOX_GAP_RE.fullmatch(text[e:start]):
            break
        run.insert(0, c.strip())
        start = s
    return run, end


def _boxed_answer(text, join=True):
    found = _box_run(text, join)
    if found is None:
        return None
    run = found[0]
    if len(set(run)) == 1:
        run = run[:1]
    return ", ".join(run)


_MATH_SPANS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def _math_span(text, i):
    """(content, end) of the `$...$`-like span that starts at text[i]; (None, i) if none starts there,
    ("", i) if it is never closed."""
    for open_, close in _MATH_SPANS:
        if text.startswith(open_, i):
            k = text.find(close, i + len(open_))
            return (text[i + len(open_):k].strip(), k + len(close)) if k >= 0 else ("", i)
    return None, i


def _phrase_answer(text):
    m = None
    for m in _PHRASE_RE.finditer(text):
        pass
    if m is None:
        return None
    first, n = _math_span(text, m.end())
    if first is not None:
        if not first:
            return None
        items = [first]
        while True:  # "the answer is $1$ and $2$": adjacent spans are one list, as adjacent boxes are
            gap = _SPAN_GAP_RE.match(text, n)
            nxt, k = _math_span(text, gap.end())
            if not gap.group().strip() or not nxt:
                break
            items.append(nxt)
            n = k
        return ", ".join(items)
    line = text[m.end():m.end() + MAX_ANSWER_CHARS + 1].split("\n", 1)[0]
    line = re.split(r"\.(?=\s|$)", line, maxsplit=1)[0]
    return line.strip().strip("*").strip() or None


def extract_answer(text):
    """The final answer of a completion as a string, or None (see the module docstring for the contract)."""
    if not isinstance(text, str):
        return None
    text = text[-MAX_TEXT_CHARS:]
    if _BOX_RE.search(text):
        for _ in range(8):  # \boxed{\boxed{5}}
            text = _boxed_answer(text)
            if text is None or not _BOX_RE.search(text):
                return text
        return None
    if "####" in text:
        m = None
        for m in _HASH_RE.finditer(text):
            pass
        return m.group(1).strip() or None
    return _phrase_answer(text)


def gold_answer(raw):
    """Any dataset gold shape -> the gold answer string (None if there is none).

    GSM8K answer text -> the text after `####`; a MATH/Minerva solution -> its last \\boxed{}, together with
    the boxes adjacent to it (a list, as in a completion; see _gold_boxes); AIME "025" and plain answer
    strings unchanged; AMC floats 27.0 -> "27"; OlympiadBench ["$...$"] -> first item, `$`
    stripped; a dataset row (dict) -> its final_answer / answer / solution field."""
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, dict):
        for key in ("final_answer", "answer", "gold", "solution"):
            if raw.get(key) is not None:
                return gold_answer(raw[key])
        return None
    if isinstance(raw, (list, tuple)):
        if not raw:
            return None
        first = gold_answer(raw[0])
        return re.sub(r"(?<!\\)\$", "", first).strip() or None if first is not None else None
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            return None
        return str(int(raw)) if raw.is_integer() else repr(raw)
    if isinstance(raw, Fraction):
        return str(raw)
    if not isinstance(raw, str):
        raise ValueError(f"gold_answer: unsupported gold type {type(raw).__name__}; "
                         "pass a str, a number, a list or a dataset row (dict)")
    s = raw.strip()
    if "####" in s:
        s = s.rsplit("####", 1)[1].strip().split("\n", 1)[0].strip()
    elif _BOX_RE.search(s):
        s = _budgeted(_gold_boxes, s) or ""  # its written-twice check may need sympy
    return s or None


_EITHER_RE = re.compile(r"[\s$.,;:)\]\\]*\(?\s*either\b[^.()]{0,60}?\b(?:acceptable|correct|valid)\b", re.I)


@functools.lru_cache(maxsize=1024)
def _gold_boxes(text):
    """The answer of a solution text: its last box with the boxes adjacent to it, read as a completion's
    are (`$\\boxed{-2}$ and $\\boxed{1}$` is the list "-2, 1"), except that a run the solution itself calls
    alternatives ("(Either point is an acceptable answer.)") or whose boxes all equal the last one (the
    same value written twice: `\\boxed{15\\frac{39}{40}}, or \\boxed{\\frac{639}{40}}`) is its last box."""
    found = _box_run(text)
    if found is None:
        return None
    run, end = found
    if len(run) > 1 and (_EITHER_RE.match(text, end) or all(_same_answer(x, run[-1]) for x in run[:-1])):
        run = run[-1:]
    return ", ".join(run)


def _same_answer(a, b):
    try:
        (ca, na, pa), (cb, nb, pb) = _prepare(a, True), _prepare(b, True)
        if ca.replace(" ", "") == cb.replace(" ", ""):
            return True
        return na is not None and nb is not None and pa == pb and _written_twice(na, nb)
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------------------
# normalisation: answer text -> cleaned text (also the key for exact-text equality)

_UNICODE = [("\u2212", "-"), ("\u2013", "-"), ("\u00d7", "\\times "), ("\u00f7", "\\div "), ("\u00b7", "\\cdot "),
            ("\u2264", "\\le "), ("\u2265", "\\ge "), ("\u2260", "\\ne "), ("\u221a", "\\sqrt "), ("\u03c0", "\\pi "),
            ("\u221e", "\\infty "), ("\u00b0", ""), ("\u222a", "\\cup "), ("\u00b1", "\\pm "), ("**", "^"),
            ("\u2208", "\\in "), ("\u2248", "\\approx ")]
_SUBS = [
    (re.compile(r"\\(?:left|right)\."), ""),                                 # \left. \right.  (invisible delimiters)
    (re.compile(r"\\(?:left|right|[bB]igg?[lr]?|middle)(?![a-zA-Z])"), ""),
    (re.compile(r"\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits|mathstrut|boldsymbol|bm)(?![a-zA-Z])"), ""),
    (re.compile(r"\\[()\[\]]"), " "),                                      # \( \) \[ \]
    (re.compile(r"(?<![A-Za-z_.])(?:np|numpy|math|sp|sympy)\.(?=[a-z])"), ""),          # np.arcsin(10/13)
    (re.compile(r"(?<![\d.])[1-9]\d{0,2}(?:(?:\{,\}|,\s*\\!\s*)\d{3})+(?!\d)"),  # TeX's thousands separators
     lambda m: re.sub(r"\{,\}|,\s*\\!\s*", "", m.group())),               # 1{,}080, 5,\!525, 111, \! 111
    (re.compile(r"\{,\}"), ","),                                            # 0{,}111 (a leading 0 is no group)
    (re.compile(r",\s*\\!\s*"), ","),
    (re.compile(r"\\!"), ""),
    (re.compile(r"\\(?:quad|qquad|enspace|thinspace|medspace|thickspace)(?![a-zA-Z])|\\[,;: ]|~"), " "),
    (re.compile(r"\\[dtc]frac(?![a-zA-Z])"), r"\\frac"),
    (re.compile(r"\\[dt]binom(?![a-zA-Z])"), r"\\binom"),
    (re.compile(r"\\(?:leqslant|leq|le)(?![a-zA-Z])"), r"\\le "),
    (re.compile(r"\\(?:geqslant|geq|ge)(?![a-zA-Z])"), r"\\ge "),
    (re.compile(r"\\(?:neq|ne)(?![a-zA-Z])|\\not\s*="), r"\\ne "),
    (re.compile(r"(?<=[A-Za-z\s])!="), r"\\ne "),                           # x != 3 (but 5!=120 is 5! = 120)
    (re.compile(r"<="), r"\\le "),
    (re.compile(r">="), r"\\ge "),
    (re.compile(r"\\lt(?![a-zA-Z])"), "<"),
    (re.compile(r"\\gt(?![a-zA-Z])"), ">"),
    (re.compile(r"\\(?:lvert|rvert|vert)(?![a-zA-Z])"), "|"),
    (re.compile(r"\\langle(?![a-zA-Z])"), "("),
    (re.compile(r"\\rangle(?![a-zA-Z])"), ")"),
    (re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![a-zA-Z])|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])"), ""),
]
_TEXT_CMD_RE = re.compile(r"\\(text|textbf|textit|textrm|textsf|texttt|textnormal|mbox|hbox|mathrm|mathbf|mathit|"
                          r"mathsf|mathtt|operatorname)\s*\{")
_WORDS_RE = re.compile(r"[A-Za-z][A-Za-z .'\-]*")
_MATH_WORDS = {"pi", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "sqrt", "arcsin", "arccos",
               "arctan", "sinh", "cosh", "tanh", "i", "e", "infty", "inf"}
_UNIT_TAIL_RE = re.compile(r"(.*?[0-9}])\s+([A-Za-z]+(?:[\s\-][A-Za-z]+)*)(?:\^\{?\d\}?)?")
_SHORT_UNITS = {"cm", "mm", "km", "m", "ft", "in", "kg", "g", "mg", "ml", "hr", "hrs", "min", "sec", "yd", "mi",
                "oz", "lb", "lbs", "mph", "sq", "deg", "rad", "s", "h"}
_SCALES = {w + p: v for w, v in (("hundred", "10^{2}"), ("thousand", "10^{3}"), ("million", "10^{6}"),
                                 ("billion", "10^{9}"), ("trillion", "10^{12}"), ("dozen", "12")) for p in ("", "s")}
_VALUE_WORDS = {"half", "halves", "squared", "cubed", "factorial", "percent", "pct"} | {
    w + p for w in ("third", "quarter", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
                    "hundredth", "thousandth", "millionth") for p in ("", "s")}  # "2 thirds" is not 2 of a unit


def _is_unit(front, words):
    """Whether the words after `front` name a unit ("5 apples", "12 cm", "\\frac{37}{4} m") that can go. Not
    after an expression with variables (`\\frac{dM}{dt} = ... M^{6}`: M is a factor there, not molar), not when
    a single letter other than m, s, h, g is among them (`\\frac12 m v^2`), not "sin", and not words that change
    the value (5 thousand, 3 squared, 2 thirds)."""
    if re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", front)):
        return False
    if any(w.lower() in _SCALES or w.lower() in _VALUE_WORDS or w.lower() in _MATH_WORDS for w in words):
        return False
    return ((len(words[0]) >= 4 or words[0].lower() in _SHORT_UNITS)
            and not any(len(w) == 1 and w.lower() not in _SHORT_UNITS for w in words))


def _strip_text_groups(s):
    """\\text{...}-like groups: unit words go when something else remains, "and"/"or" stay as words (_clean
    makes them list commas unless the answer is all words), anything else is unwrapped (\\text{(C)} -> (C),
    \\mathrm{e} -> e)."""
    for _ in range(50):
        m = _TEXT_CMD_RE.search(s)
        if not m:
            return s
        k = _close_brace(s, m.end() - 1)
        if k < 0:
            return s
        body, end = s[m.end():k].strip(), k + 1
        rest = s[:m.start()] + s[end:]
        if re.fullmatch(r",?\s*(?:and|or|and/or)?\s*,?", body.lower()) and body:
            s = s[:m.start()] + (" and " if re.search("[a-z]", body.lower()) else " , ") + s[end:]
            continue
        is_unit = (_WORDS_RE.fullmatch(body) is not None and re.search(r"[0-9A-Za-z\\]", rest) is not None
                   and not set(map(str.lower, body.split())) & (_SCALES.keys() | _VALUE_WORDS)  # 5 \text{ thousand}
                   and not (m.group(1) in ("mathrm", "mathbf", "mathit", "operatorname") and len(body) == 1)
                   and not re.search(r"_\s*\{?\s*$", s[:m.start()]))  # \lambda_{\text{red}} is a name
        if is_unit:
            tail = re.match(r"\s*\^\s*(?:\{\s*\d\s*\}|\d)", s[end:])
            end += tail.end() if tail else 0
            s = s[:m.start()] + " " + s[end:]
        else:
            s = s[:m.start()] + " " + body + " " + s[end:]
    return s


_PCT_WORD_RE = re.compile(r"(?<=[\d}])\s*(?:\\(?:text|textrm|mbox|mathrm)\s*\{\s*(?:pct|percent)\s*\}"
                          r"|(?:pct|percent)(?![A-Za-z]))")
_AMPM_TEXT_RE = re.compile(r"\\(?:text|textrm|textnormal|mbox|mathrm)\s*\{\s*([AaPp])\.?\s*[Mm]\.?\s*\}")
_AMPM_RE = re.compile(r"(\d:\d\d)\s*([AaPp])\.?\s*[Mm](?![A-Za-z])\.?")
_WORDS_ONLY_RE = re.compile(r"[A-Za-z][A-Za-z .'\-]*")
_AND_OR_RE = re.compile(r"\s*,?\s*\b(?:and|or)\b\s*,?\s*")


def _clean(s):
    """Answer text -> (cleaned text, had a percent sign)."""
    s = s.replace("\0", "").strip().replace("\\\\", "\0")  # protect \\ (matrix rows) from the rules below
    for a, b in _UNICODE:
        s = s.replace(a, b)
    s = s.replace("\\$", " ").replace("$", " ")
    for pattern, repl in _SUBS:
        s = pattern.sub(repl, s)
    s = _PCT_WORD_RE.sub("%", s)  # 28 pct, 28 \text{ percent}
    pct = "%" in s
    s = re.sub(r"\\?%", " ", s)
    s = _AMPM_TEXT_RE.sub(r" \1m ", s)  # 8:34 \text{ p.m.}: the half of the day is not a unit word
    s = _strip_text_groups(s)
    s = _AMPM_RE.sub(lambda m: m.group(1) + " " + m.group(2).lower() + "m", s)
    if not _WORDS_ONLY_RE.fullmatch(s.strip()):  # "2, 3, and 4", "12 and 13" are lists; "Alice and Bob" is a name
        s = _AND_OR_RE.sub(" , ", s)
    m = _UNIT_TAIL_RE.fullmatch(s.strip())
    if m:  # "5 apples", "12 cm": trailing words after a number (not "4 ab" or "M^{6}", which are maths)
        words = re.split(r"[\s\-]+", m.group(2))
        if _is_unit(m.group(1), words):
            s = m.group(1)
        elif (words[0].lower() in _SCALES and len(words) == 1 + sum(w.lower() not in _SCALES for w in words[1:])
              and re.fullmatch(r"[+-]?\d+(?:\.\d+)?", m.group(1).strip())):  # 5 thousand, 2.5 million dollars
            s = m.group(1) + " \\times " + _SCALES[words[0].lower()]
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"^(?:=|\\approx|\\sim)\s*", "", s)
    s = re.sub(r"(?<!\\)[.\s]+$", "", s).replace("\0", " \\\\ ")
    return s, pct


# ---------------------------------------------------------------------------------------------------------
# parsing: cleaned text -> tuple tree. Nodes:
#   ("n", Fraction, ulp)  number; ulp = value of one unit in the last written digit (decimals), None = exact
#   ("v", name)  variable     ("c", "pi"|"e"|"i"|"oo")  constant
#   ("+", (a, b, ...))  ("*", (a, b, ...))  ("neg", a)  ("/", a, b)  ("^", a, b)  ("f", name, (args...))
#   ("!", a)  ("binom", n, k)  ("abs", a)  ("floor", a)  ("ceil", a)  ("pm", a, b) = a +- b
#   ("list", items) multiset  ("tuple", items)  ("interval", lo_closed, a, b, hi_closed)  ("union", parts)
#   ("matrix", rows)  ("rel", op, a, b)  ("pre", label, inner, rel)  ("text", words)  ("choice", letter)
#   ("base", digits, base)

class _ParseError(Exception):
    pass


class _TooBig(Exception):
    pass


class _OutOfTime(_TooBig):
    """The grade() call's budget ran out during an evaluation: a refusal, like a value that is too big, that
    _prepare lets through rather than caching a tree cut short."""


_TOKEN_RE = re.compile(r"\\begin\s*\{[a-zA-Z*]*\}|\\end\s*\{[a-zA-Z*]*\}|\\\\|\\[a-zA-Z]+|\\.|[a-zA-Z]+|\d|\S",
                       re.S | re.A)
_FUNCS = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "ln",
          "log", "exp", "arccot"}
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
          "kappa", "lambda", "mu", "nu", "xi", "rho", "varrho", "sigma", "tau", "upsilon", "phi", "varphi", "chi",
          "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Upsilon", "Phi", "Psi", "Omega",
          "ell", "hbar", "odot"}
_RELOPS = {"=": "=", "<": "<", ">": ">", "\\le": "<=", "\\ge": ">=", "\\ne": "!=", "\\approx": "=", "\\in": "in"}
_MATRIX_ENVS = {"pmatrix", "bmatrix", "Bmatrix", "matrix", "smallmatrix", "array"}  # not vmatrix: a determinant
_FACTOR_START = {"(", "{", "\\frac", "\\sqrt", "\\pi", "\\infty", "\\binom", "\\lfloor", "\\lceil"}


def _tokenize(s):
    toks = []
    for t in _TOKEN_RE.findall(s):
        if t[0].isalpha() and len(t) > 1:
            if t in _FUNCS or t == "sqrt":
                toks.append("\\" + t)
            elif t == "pi":
                toks.append("\\pi")
            else:
                toks.extend(t)  # "xy" is x*y
        elif t.startswith("\\begin") or t.startswith("\\end"):
            toks.append(re.sub(r"\s+", "", t))
        else:
            toks.append(t)
    return toks


class _Parser:
    """Recursive descent over the whitelisted tokens; anything unexpected raises _ParseError."""

    def __init__(self, toks):
        self.toks, self.i, self.depth = toks, 0, 0

    def peek(self, k=0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def take(self, want=None):
        t = self.peek()
        if t is None or (want is not None and t != want):
            raise _ParseError(f"expected {want!r}, got {t!r}")
        self.i += 1
        return t

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _ParseError("too deep")

    def parse(self):
        node = self.seq(())
        if self.peek() is not None:
            raise _ParseError(f"trailing {self.peek()!r}")
        return node

    def seq(self, closers):
        """Comma-separated items up to a closer (not consumed); one item is returned as itself."""
        items = [self.item()]
        while self.peek() in (",", ";"):
            self.take()
            if self.peek() in closers or self.peek() is None:
                break  # trailing comma
            items.append(self.item())
        return items[0] if len(items) == 1 else ("list", tuple(items))

    def item(self):
        lab = self.label()
        members, ops = ([("v", lab)], ["="]) if lab is not None else ([], [])
        start = self.i
        members.append(self.union())
        spans = [(start, self.i)]
        while self.peek() in _RELOPS:
            ops.append(self.take())
            start = self.i
            members.append(self.union())
            spans.append((start, self.i))
            if len(members) > 8:
                raise _ParseError("long chain")
        if ops and ops[-1] == "\\approx" and _is_constant(members[-2]):
            members[-2:] = [_approximation(members[-2], members[-1])]  # 1/sqrt3 ~ 0.577: checked, then dropped
            ops.pop()
        if not ops:
            return members[0]
        if len(ops) == 1 and not all(map(_is_constant, members)):
            return ("rel", _RELOPS[ops[0]], members[0], members[1])
        if all(_RELOPS[o] == "=" for o in ops) and all(map(_is_constant, members[1:])):
            for a in members[1 if len(ops) > 1 and not _is_constant(members[0]) else 0:-1]:
                if not _same_value(a, members[-1]):  # 2^5 = 32, x = \frac{8}{24} = \frac13: equal constants
                    raise _ParseError("false equation")  # are their value (after a label, if any)
            return members[-1] if _is_constant(members[0]) else ("rel", "=", members[0], members[-1])
        if len(ops) == 2 and lab is None and _is_constant(members[0]) and _is_constant(members[2]) \
                and _vars(members[1]):
            return self.between(members, ops, "".join(self.toks[spans[1][0]:spans[1][1]]))
        raise _ParseError("chained relation")

    @staticmethod
    def between(members, ops, label):
        """a < x <= b -> ("between", label, interval): the interval x lies in (a gold-side reading, see _match)."""
        up, down = {"<": False, "\\le": True}, {">": False, "\\ge": True}
        if ops[0] in up and ops[1] in up:
            return ("between", label, ("interval", up[ops[0]], members[0], members[2], up[ops[1]]))
        if ops[0] in down and ops[1] in down:
            return ("between", label, ("interval", down[ops[1]], members[2], members[0], down[ops[0]]))
        raise _ParseError("mixed inequality")

    def label(self):
        """`f(x) =`, `g(m, n) =` at the start of an item: a label, not the product f*x."""
        t, i = self.toks, self.i
        if i + 4 >= len(t) or not (len(t[i]) == 1 and t[i].isalpha()) or t[i + 1] != "(":
            return None
        j = i + 2
        while j + 1 < len(t) and len(t[j]) == 1 and t[j].isalpha() and t[j + 1] in (",", ")"):
            if t[j + 1] == ")":
                if j + 2 < len(t) and t[j + 2] == "=":
                    self.i = j + 3
                    return "".join(t[i:j + 2])
                return None
            j += 2
        return None

    def union(self):
        parts = [self.sum()]
        while self.peek() == "\\cup":
            self.take()
            parts.append(self.sum())
        return parts[0] if len(parts) == 1 else ("union", tuple(parts))

    def sum(self):
        self.enter()
        terms, pm = [], None
        sign = "+"
        if self.peek() in ("+", "-", "\\pm", "\\mp"):
            sign = self.take()
        while True:
            if sign in ("\\pm", "\\mp"):
                if pm is not None:
                    raise _ParseError("two \\pm")
                pm = len(terms)
            term = self.term()
            terms.append(("neg", term) if sign == "-" else term)
            if self.peek() not in ("+", "-", "\\pm", "\\mp"):
                break
            sign = self.take()
        self.depth -= 1
        if pm is None:
            return terms[0] if len(terms) == 1 else ("+", tuple(terms))
        left, right = terms[:pm], terms[pm:]
        left = ("n", Fraction(0), None) if not left else left[0] if len(left) == 1 else ("+", tuple(left))
        right = right[0] if len(right) == 1 else ("+", tuple(right))
        return ("pm", left, right)

    def term(self):
        factors, den = [self.factor()], []
        while True:
            t = self.peek()
            if t in ("*", "\\cdot", "\\times"):
                self.take()
                factors.append(self.factor())
            elif t in ("/", "\\div"):
                self.take()
                den.append(self.factor())
            elif t == "\\frac" and len(factors) == 1 and not den and _is_int_literal(factors[0]):
                frac = self.factor()  # 7\frac{1}{2} is the mixed number 15/2
                if frac[0] == "/" and _is_int_literal(frac[1]) and _is_int_literal(frac[2]):
                    factors = [("+", (factors[0], frac))]
                else:
                    factors.append(frac)
            elif t is not None and self.starts_factor(t):
                factors.append(self.factor())
            else:
                break
        node = factors[0] if len(factors) == 1 else ("*", tuple(factors))
        for d in den:
            node = ("/", node, d)
        return node

    def starts_factor(self, t):
        return (t[0].isalnum() or t in _FACTOR_START or t == "." or t[1:] in _FUNCS and t[0] == "\\"
                or t[1:] in _GREEK and t[0] == "\\" or t.startswith("\\begin"))

    def factor(self):
        self.enter()
        if self.peek() in ("-", "+"):  # 2 \cdot -3
            sign = self.take()
            node = self.factor()
            self.depth -= 1
            return ("neg", node) if sign == "-" else node
        base = self.postfix()
        if self.peek() == "^":
            self.take()
            base = ("^", base, self.exponent())
            if self.peek() == "!":
                raise _ParseError("ambiguous factorial of a power")
        self.depth -= 1
        return base

    def exponent(self):
        t = self.peek()
        if t in ("-", "+"):
            self.take()
            e = self.exponent()
            return ("neg", e) if t == "-" else e
        if t is not None and t.isdigit():  # x^23: plain-text convention, the whole number
            return self.number(allow_base=False)
        return self.arg()

    def postfix(self):
        node = self.atom()
        while self.peek() == "!":
            self.take()
            node = ("!", node)
        return node

    def arg(self):
        """A TeX macro argument: {group} or a single token (\\frac43 -> 4, 3)."""
        t = self.peek()
        if t == "{":
            self.take()
            node = self.seq(("}",))
            self.take("}")
            return node
        if t is None:
            raise _ParseError("missing argument")
        if t.isdigit():
            self.take()
            return ("n", Fraction(int(t)), None)
        if len(t) == 1 and t.isalpha() or t.startswith("\\"):
            return self.atom()
        raise _ParseError(f"bad argument {t!r}")

    def number(self, allow_base=True):
        digits = ""
        while self.peek() is not None and self.peek().isdigit():
            digits += self.take()
        frac = None
        if self.peek() == "." and (self.peek(1) is None or self.peek(1).isdigit() or not digits
                                   or self.peek(1) in ("/", "*", ")", "]", "}", ",")):  # -1./3 (code-style float)
            self.take()
            frac = ""
            while self.peek() is not None and self.peek().isdigit():
                frac += self.take()
        if not digits and not frac:
            raise _ParseError("lonely dot")
        if allow_base and frac is None and self.peek() == "_":
            self.take()
            base = self.arg()
            if base[0] != "n" or base[1].denominator != 1 or not 2 <= base[1] <= 36:
                raise _ParseError("bad base")
            b = int(base[1])
            if any(int(c, 36) >= b for c in digits):
                raise _ParseError("digit out of base")
            return ("base", digits.lstrip("0") or "0", b)
        return _number_node(digits or "0", frac or "")

    def name(self, t):
        """Variable name with an optional subscript: x, x_1, a_{n}, \\theta_0 -> theta_0."""
        name = t.lstrip("\\")
        if self.peek() == "_":
            self.take()
            if self.peek() == "{":
                start = self.i
                self.take()
                depth = 1
                while depth:
                    tok = self.take()
                    depth += tok == "{"
                    depth -= tok == "}"
                sub = "".join(self.toks[start + 1:self.i - 1])
            else:
                sub = self.take()
            name += "_" + sub
        return name

    def atom(self):
        self.enter()
        t = self.peek()
        if t is None:
            raise _ParseError("unexpected end")
        if t.isdigit() or t == ".":
            node = self.number()
        elif len(t) == 1 and t.isalpha():
            self.take()
            nm = self.name(t)
            node = ("c", nm) if nm in ("e", "i") else ("v", nm + self.at_number())
        elif t in ("(", "["):
            node = self.brackets()
        elif t == "{":
            self.take()
            node = self.seq(("}",))
            self.take("}")
        elif t == "\\{":
            self.take()
            node = ("list", ()) if self.peek() == "\\}" else self.seq(("\\}",))
            self.take("\\}")
            if node[0] != "list":
                node = ("list", (node,))
        elif t == "|":
            self.take()
            node = ("abs", self.sum())
            self.take("|")
        elif t in ("\\lfloor", "\\lceil"):
            self.take()
            inner = self.sum()
            self.take("\\rfloor" if t == "\\lfloor" else "\\rceil")
            node = ("floor" if t == "\\lfloor" else "ceil", inner)
        elif t == "\\frac":
            self.take()
            node = ("/", self.arg(), self.arg())
        elif t == "\\binom":
            self.take()
            node = ("binom", self.arg(), self.arg())
        elif t == "\\sqrt":
            self.take()
            index = None
            if self.peek() == "[":
                self.take()
                index = self.sum()
                self.take("]")
            inner = self.brackets() if self.peek() == "(" else self.arg()
            node = ("f", "sqrt", (inner,)) if index is None else ("^", inner, ("/", ("n", Fraction(1), None), index))
        elif t == "\\pi":
            self.take()
            node = ("c", "pi")
        elif t == "\\infty":
            self.take()
            node = ("c", "oo")
        elif t in ("\\emptyset", "\\varnothing"):
            self.take()
            node = ("list", ())
        elif t.lstrip("\\") in _FUNCS:
            node = self.function()
        elif t.startswith("\\") and t[1:] in _GREEK:
            self.take()
            node = ("v", self.name(t) + self.at_number())
        elif t.startswith("\\begin{"):
            node = self.matrix()
        else:
            raise _ParseError(f"unknown token {t!r}")
        self.depth -= 1
        return node

    def at_number(self):
        """`(0)` right after a variable: I(0), f(2) are the values of a function at a number, one name, not the
        product I * 0 (which would make `2I(0)` equal to `I(0)`); x(x+1) stays a product. "" if none."""
        t, i = self.toks, self.i
        if self.peek() != "(":
            return ""
        j = i + 1 + (i + 1 < len(t) and t[i + 1] == "-")
        k = j
        while k < len(t) and (t[k].isdigit() or t[k] == "." and k > j):
            k += 1
        if k == j or k >= len(t) or t[k] != ")":
            return ""
        self.i = k + 1
        return "".join(t[i:k + 1])

    def brackets(self):
        open_ = self.take()
        node = self.seq((")", "]"))
        close = self.take()
        if close not in (")", "]"):
            raise _ParseError("unclosed bracket")
        items = node[1] if node[0] == "list" else (node,)
        if len(items) == 1 and open_ + close in ("()", "[]"):
            return items[0]
        if len(items) == 2 and open_ + close != "()":
            return ("interval", open_ == "[", items[0], items[1], close == "]")
        if open_ + close in ("(]", "[)"):
            raise _ParseError("half-open tuple")
        return ("tuple", items)

    def function(self):
        name = self.take().lstrip("\\")
        name = "log" if name == "ln" else name
        power = base = None
        for _ in range(2):
            if self.peek() == "^":
                self.take()
                power = self.exponent()
            elif self.peek() == "_" and name == "log":
                self.take()
                base = self.arg()
        if self.peek() == "(":
            arg = self.brackets()
        elif self.peek() == "{":
            arg = self.arg()
        else:  # \sin 2x, \ln 2: the product of the factors that follow, stopping at the next function
            factors = [self.factor()]
            while (self.peek() is not None and self.starts_factor(self.peek())
                   and self.peek().lstrip("\\") not in _FUNCS):
                factors.append(self.factor())
            arg = factors[0] if len(factors) == 1 else ("*", tuple(factors))
        if power == ("neg", ("n", Fraction(1), None)) and name in ("sin", "cos", "tan", "cot"):
            name, power = "arc" + name, None  # \sin^{-1} x = arcsin x
        node = ("f", name, (arg,) if base is None else (arg, base))
        return node if power is None else ("^", node, power)

    def matrix(self):
        env = self.take()[len("\\begin{"):-1]
        if env not in _MATRIX_ENVS:
            raise _ParseError(f"environment {env}")
        if env == "array" and self.peek() == "{":  # column spec
            while self.take() != "}":
                pass
        rows, row = [], []
        while True:
            row.append(self.sum())
            t = self.take()
            if t == "&":
                continue
            rows.append(tuple(row))
            row = []
            if t == "\\\\" and self.peek() == "\\end{" + env + "}":
                t = self.take()
            if t == "\\end{" + env + "}":
                break
            if t != "\\\\":
                raise _ParseError("bad matrix")
        if len({len(r) for r in rows}) != 1:
            raise _ParseError("ragged matrix")
        return ("matrix", tuple(rows))


def _number_node(digits, frac, exp=0):
    value = Fraction(int(digits + frac)) / 10 ** len(frac) if frac else Fraction(int(digits))
    exact = exp == 0 and not frac.strip("0")  # 18, 18.00
    ulp = None if exact else Fraction(10) ** (exp - len(frac))
    if exp:
        value *= Fraction(10) ** exp
    return ("n", value, ulp)


def _is_constant(node):
    """A scalar without variables (its value can be computed), or a checked approximation of one."""
    return (node[0] in _SCALAR_KINDS or node[0] == "approx") and not _vars(node)


def _same_value(a, b):
    """Exactly equal constants: exact rationals (decimals included) must be identical, other values agree to
    60 digits. No rounding tolerance: `\\frac13 = 0.333` is a false equation."""
    a, b = (n[1] if n[0] == "approx" else n for n in (a, b))
    x, y = _exact(a), _exact(b)
    if x is not None and y is not None:
        return x == y
    _MP = _TMP.ctx
    x, y = _num(a, {}), _num(b, {})
    return bool(_MP.isfinite(x) and _MP.isfinite(y) and abs(x - y) <= _MP.mpf(10) ** -40 * max(abs(x), abs(y)))


def _approximation(x, d):
    """`x \\approx d`: d must be a written number (a decimal is taken as rounded at its last digit, an integer
    at its units) that x rounds to; then the node ("approx", x, d). A wrong approximation is a parse error,
    so the answer is compared as text only."""
    dec = _decimal(d)
    if dec is None and not (_is_int_literal(d) or d[0] == "neg" and _is_int_literal(d[1])):
        raise _ParseError("approximation is not a number")
    half = (dec[0] if dec else Fraction(1)) * _HALF
    xv, dv = _exact(x), _exact(d)
    if xv is not None:
        ok = abs(xv - dv) <= half
    else:
        _MP = _TMP.ctx
        v = _num(x, {})
        ok = _MP.isfinite(v) and abs(_MP.im(v)) == 0 and abs(v - _MP.mpf(dv.numerator) / dv.denominator) <= \
            _MP.mpf(half.numerator) / half.denominator
    if not ok:
        raise _ParseError("wrong approximation")
    return ("approx", x, d)


def _is_int_literal(node):
    return node[0] == "n" and node[2] is None and node[1].denominator == 1 and node[1] >= 0


_PLAIN_RE = re.compile(r"-?\d+(?:\.\d+)?", re.A)
_NUM_RE = re.compile(r"([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d{1,4}))?", re.A)
_THOUSANDS_RE = re.compile(r"[+-]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?", re.A)  # not 0,111: a leading 0 is no group
_TIME_RE = re.compile(r"(\d{1,2}):(\d\d)(?::(\d\d))?(?: ([ap])m)?", re.A)
_CHOICE_RE = re.compile(r"\(([A-Ea-e])\)|([A-E])")


@functools.lru_cache(maxsize=8192)
def _prepare(s, thousands):
    """Answer string -> (normalised text, tree or None, percent flag). Cached: golds repeat in a GRPO group."""
    if len(s) > MAX_ANSWER_CHARS:
        return s, None, False
    # a plain number (GSM8K, AIME: the common case) is its own normal form: skip the ~20 cleaning regexes
    clean, pct = (s, False) if _PLAIN_RE.fullmatch(s) else _clean(s)
    node = None
    m = _NUM_RE.fullmatch(clean)
    if m and (m.group(2) or m.group(3)):  # the common case: one plain number
        sign, digits, frac, exp = m.groups()
        node = _number_node(digits or "0", frac or "", int(exp or 0))
        node = ("neg", node) if sign == "-" else node
    elif thousands and _THOUSANDS_RE.fullmatch(clean):
        return _prepare(clean.replace(",", ""), False)[:2] + (pct,)
    elif _TIME_RE.fullmatch(clean):
        node = _time_node(*_TIME_RE.fullmatch(clean).groups())
    elif _CHOICE_RE.fullmatch(clean) and ("(" in clean or re.search(r"\\text|\\mbox", s)):
        node = ("choice", clean.strip("()").upper())
    elif re.fullmatch(r"[A-Za-z][A-Za-z '\-]*", clean) and max(map(len, re.findall(r"[A-Za-z]+", clean))) >= 3 \
            and not any(w.lower() in _MATH_WORDS for w in re.findall(r"[A-Za-z]+", clean)):
        node = ("text", re.sub(r"[^a-z]", "", clean.lower()))
    else:
        try:
            node = _shape(_Parser(_tokenize(clean)).parse())
        except _OutOfTime:
            raise  # not cached: the same text is parsed in full by a call that has time left
        except Exception:  # _ParseError, or anything odd in odd input: compare as text only
            node = None
    return clean, node, pct


def _time_node(h, m, sec, half):
    """A clock time -> ("time", hours, minutes, seconds) on the 24-hour clock (None if it is not one). Without
    a.m./p.m. the hours are read as written (24-hour): 20:34 = 8:34 p.m., and 8:34 alone is the morning."""
    h, m, sec = int(h), int(m), int(sec or 0)
    if m > 59 or sec > 59 or h > 24 or half and not 1 <= h <= 12:
        return None  # 19:60 is a ratio, not a time
    if half:
        h = h % 12 + (12 if half == "p" else 0)
    return ("time", h % 24, m, sec)


def _shape(node):
    """Top-level structure: expand \\pm into lists, turn `x = ...` / `x \\in ...` into labels."""
    items = node[1] if node[0] == "list" else (node,)
    out = []
    for it in items:
        out.extend(_expand_item(it))
    if node[0] == "list" or len(out) != 1:
        return ("list", tuple(out))
    return out[0]


def _expand_item(it):
    if it[0] == "between":  # 0 < f(x) < 1: the label f(x), the interval (0, 1)
        return [("pre", it[1], it[2], "between")]
    if it[0] == "rel":
        _, op, lhs, rhs = it
        label = None
        if lhs[0] == "v" or lhs[0] == "tuple" and all(x[0] == "v" for x in lhs[1]):
            label = lhs[1] if lhs[0] == "v" else "(" + ",".join(x[1] for x in lhs[1]) + ")"
        if op == "in" and label is not None:
            return [("pre", label, x, None) for x in _expand_pm(rhs)]
        if op == "=" and label is not None and not (_vars(lhs) & _vars(rhs)):
            variants = _expand_pm(rhs)
            return [("pre", label, x, ("rel", "=", lhs, x) if len(variants) > 1 else it) for x in variants]
        if _has(it, "pm"):
            raise _ParseError("\\pm in a relation")
        return [it]
    return _expand_pm(it)


def _expand_pm(node):
    """A tree with one \\pm -> [tree with +, tree with -]; no \\pm -> [tree]."""
    if not _has(node, "pm"):
        return [node]
    if _count(node, "pm") > 1:
        raise _ParseError("several \\pm")  # their signs are independent: not a two-element list

    def sub(n, sign):
        if not isinstance(n, tuple):
            return n
        if n and n[0] == "pm":
            a, b = n[1], n[2]
            return ("+", (a, b if sign > 0 else ("neg", b)))
        return tuple(sub(x, sign) for x in n)

    return [sub(node, 1), sub(node, -1)]


def _count(node, kind):
    """How many nodes of this kind a tree holds (tuples of trees are walked too)."""
    if not isinstance(node, tuple) or not node:
        return 0
    return (node[0] == kind) + sum(_count(x, kind) for x in node if isinstance(x, tuple))


def _has(node, kind):
    return _count(node, kind) > 0


def _atoms(node):
    """Leaves (numbers, variables, constants) of a tree; tuples of trees are walked too."""
    if not isinstance(node, tuple) or not node:
        return frozenset()
    if node[0] in ("c", "v", "n"):
        return frozenset([node])
    out = frozenset()
    for x in node:
        if isinstance(x, tuple):
            out |= _atoms(x)
    return out


def _vars(node):
    return frozenset(a[1] for a in _atoms(node) if a[0] == "v")


# ---------------------------------------------------------------------------------------------------------
# evaluation: exact (Fraction) first, then 60-digit mpmath; every size checked before it is computed

class _ThreadMP(threading.local):
    """One 60-digit mpmath context per thread: mpmath functions raise and restore ctx.prec internally."""
    def __getattr__(self, name):
        ctx = mpmath.MPContext()
        ctx.dps = 60
        self.ctx = ctx
        return ctx if name == "ctx" else getattr(ctx, name)


_TMP = _ThreadMP()
_SCALAR_KINDS = {"n", "v", "c", "+", "*", "neg", "/", "^", "f", "!", "binom", "abs", "floor", "ceil"}


def _bits(q):
    return max(q.numerator.bit_length(), q.denominator.bit_length())


def _exact(node):
    """Exact rational value, or None when the value is not (known to be) rational. Raises _TooBig."""
    k = node[0]
    if k == "n":
        return node[1]
    if k == "neg":
        v = _exact(node[1])
        return None if v is None else -v
    if k in ("+", "*"):
        acc = Fraction(0 if k == "+" else 1)
        for x in node[1]:
            v = _exact(x)
            if v is None:
                return None
            acc = acc + v if k == "+" else acc * v
            if _bits(acc) > MAX_BITS:
                raise _TooBig
        return acc
    if k == "/":
        a, b = _exact(node[1]), _exact(node[2])
        if a is None or b is None:
            return None
        if b == 0:
            raise ZeroDivisionError
        return a / b
    if k == "^":
        a, b = _exact(node[1]), _exact(node[2])
        if a is None or b is None:
            return None
        if a in (0, 1) and b > 0 or a == 1:
            return a
        if b.denominator != 1:
            return _exact_root(a, b)
        if abs(b) * max(_bits(a), 1) > MAX_BITS:
            raise _TooBig
        if a == 0 and b < 0:
            raise ZeroDivisionError
        return a ** int(b)
    if k == "f" and node[1] == "sqrt":
        a = _exact(node[2][0])
        return None if a is None else _exact_root(a, Fraction(1, 2))
    if k in ("abs", "floor", "ceil"):
        v = _exact(node[1])
        if v is None:
            return None
        return abs(v) if k == "abs" else Fraction(math.floor(v) if k == "floor" else math.ceil(v))
    if k == "!":
        v = _exact(node[1])
        if v is None or v.denominator != 1 or v < 0:
            return None
        if v > 10_000:
            raise _TooBig
        if _out_of_time():  # up to ~5 ms each (~0.1 s for a binomial), and an answer may hold dozens
            raise _OutOfTime
        return Fraction(math.factorial(int(v)))
    if k == "binom":
        n, r = _exact(node[1]), _exact(node[2])
        if n is None or r is None or n.denominator != 1 or r.denominator != 1 or n < 0:
            return None
        if n > 100_000:
            raise _TooBig
        if _out_of_time():
            raise _OutOfTime
        return Fraction(math.comb(int(n), int(r)) if r >= 0 else 0)
    return None


def _exact_root(a, b):
    """a ** b for a rational exponent b = p/q, when the result is rational (4^{3/2} = 8), else None."""
    p, q = b.numerator, b.denominator
    if a < 0 or q > 64 or abs(p) * max(_bits(a), 1) > MAX_BITS:
        return None
    roots = []
    for x in (a.numerator, a.denominator):
        if q == 2:
            r = math.isqrt(x)
        elif x.bit_length() < 1000:
            r = round(x ** (1.0 / q))
            r = next((c for c in (r - 1, r, r + 1) if c >= 0 and c ** q == x), r)
        else:
            return None
        if r ** q != x:
            return None
        roots.append(r)
    base = Fraction(roots[0], roots[1])
    if p < 0 and base == 0:
        raise ZeroDivisionError
    return base ** p


_MP_NAMES = {"arcsin": "asin", "arccos": "acos", "arctan": "atan", "arccot": "acot"}


def _num(node, env):
    """60-digit (complex) value of a scalar tree with variables bound by env. Raises _TooBig / ValueError."""
    _MP = _TMP.ctx
    k = node[0]
    if k == "n":
        return _MP.mpf(node[1].numerator) / node[1].denominator
    if k == "v":
        return env[node[1]]
    if k == "c":
        return {"pi": _MP.pi, "e": _MP.e, "i": _MP.j, "oo": _MP.inf}[node[1]]
    if k == "neg":
        return -_num(node[1], env)
    if k == "+":
        return _MP.fsum(_num(x, env) for x in node[1])
    if k == "*":
        acc = _MP.mpf(1)
        for x in node[1]:
            acc *= _num(x, env)
        return acc
    if k == "/":
        a, b = _num(node[1], env), _num(node[2], env)
        if b == 0:
            raise ValueError("division by zero")
        return a / b
    if k == "^":
        a, b = _num(node[1], env), _num(node[2], env)
        if a == 0:
            if _MP.re(b) <= 0:
                raise ValueError("0^-x")
            return _MP.mpf(0)
        if abs(b) * (abs(_MP.log(abs(a), 2)) + 1) > MAX_BITS:
            raise _TooBig
        return _MP.power(a, b)
    if k == "f":
        args = [_num(x, env) for x in node[2]]
        name = node[1]
        if name == "log":
            if args[0] == 0 or len(args) == 2 and args[1] in (0, 1):
                raise ValueError("log 0")
            return _MP.log(args[0]) if len(args) == 1 else _MP.log(args[0]) / _MP.log(args[1])
        if name in ("exp", "sinh", "cosh", "tanh", "sin", "cos", "tan", "cot", "sec", "csc") and abs(args[0]) > 1e5:
            raise _TooBig
        return getattr(_MP, _MP_NAMES.get(name, name))(args[0])
    if k == "!":
        v = _num(node[1], env)
        if abs(v) > 1e5:
            raise _TooBig
        return _MP.factorial(v)
    if k == "binom":
        n, r = _num(node[1], env), _num(node[2], env)
        if abs(n) > 1e5 or abs(r) > 1e5:
            raise _TooBig
        return _MP.binomial(n, r)
    if k == "abs":
        return abs(_num(node[1], env))
    if k in ("floor", "ceil"):
        v = _num(node[1], env)
        return _MP.floor(v) if k == "floor" else _MP.ceil(v)
    raise ValueError(f"not a scalar: {k}")


def _decimal(node):
    """(ulp, significant digits) when the tree is a written decimal: 0.15, -4.5e33, 4.5 \\times 10^{33}."""
    if node[0] == "neg":
        return _decimal(node[1])
    if node[0] == "n" and node[2] is not None:
        v, ulp = abs(node[1]), node[2]
        return ulp, (len(str(int(v / ulp))) if v else 0)
    if node[0] == "*" and len(node[1]) == 2 and node[1][0][0] == "n" and node[1][0][2] is not None:
        p = node[1][1]  # mantissa \times 10^{k}
        if p[0] == "^" and p[1] == ("n", Fraction(10), None):
            e = _exact(p[2])
            if e is not None and e.denominator == 1 and abs(e) < 400:
                ulp, sig = _decimal(node[1][0])
                return ulp * Fraction(10) ** int(e), sig
    return None


_HALF = Fraction(1, 2) * (1 + Fraction(1, 10 ** 12))  # half a unit, with slack for the 60-digit path
_HALF_OPEN = Fraction(1, 2) * (1 - Fraction(1, 10 ** 12))  # ... less than half a unit, past the path's noise


def _close(g, p, gdec, pdec):
    """Equality of two numbers (both Fractions, or both mpmath values) under the rounding policy."""
    _MP = _TMP.ctx
    diff = abs(g - p)
    if diff == 0:
        return True
    if gdec is not None:  # the gold was rounded at its last digit; a tie is no evidence of that (0.25 for gold
        if isinstance(diff, Fraction):  # 0.2 is 1/4 written whole, not 1/5 rounded)
            return diff < gdec[0] / 2
        return diff < gdec[0] * _HALF_OPEN
    if pdec is not None:  # a decimal approximation of an exact gold: 6 significant digits, correctly rounded,
        if isinstance(g, Fraction) and _terminates(g):  # of a value that no decimal can write (1/3, pi), not
            return False                                 # of one it can (1234567, 1/1024: every digit, or wrong)
        return pdec[1] >= MIN_SIG_DIGITS and diff <= pdec[0] * _HALF
    if isinstance(diff, Fraction):
        return False  # two exact rationals: no tolerance
    return diff <= _MP.mpf(10) ** -40 * max(abs(g), abs(p))


def _terminates(q):
    """Whether a rational has a finite decimal expansion: its denominator, without its factors 2, is a power of 5
    (found from its bit length: one power to check, ~1 ms at MAX_BITS, not a division per factor)."""
    d = q.denominator
    d >>= (d & -d).bit_length() - 1
    for j in range(max(0, int((d.bit_length() - 1) / math.log2(5)) - 1), int(d.bit_length() / math.log2(5)) + 2):
        if (5 ** j).bit_length() == d.bit_length():
            return 5 ** j == d
    return False


def _inf_sign(node):
    if node == ("c", "oo"):
        return 1
    if node[0] == "neg" and node[1] == ("c", "oo"):
        return -1
    return None


def _points(names):
    """3 generic complex points (positive real part, so sqrt/log stay on their principal branch)."""
    _MP = _TMP.ctx
    pts = []
    for k in range(3):
        env = {}
        for j, nm in enumerate(sorted(names)):
            re_ = _MP.mpf(k + 2) / 3 + _MP.sqrt(j + 2) / 7
            im = _MP.mpf(k + 1) / 11 + _MP.mpf(j) / 29
            env[nm] = _MP.mpc(re_, im)
        pts.append(env)
    return pts


def _scalar_equal(g, p, gpct=False, ppct=False):
    _MP = _TMP.ctx
    if g[0] not in _SCALAR_KINDS or p[0] not in _SCALAR_KINDS:
        return False
    if g == p:
        return True
    ga, pa = _atoms(g), _atoms(p)  # once each: this is the common path of a wrong numeric answer
    if ("c", "oo") in ga or ("c", "oo") in pa:
        return _inf_sign(g) is not None and _inf_sign(g) == _inf_sign(p)
    names = frozenset(a[1] for a in ga if a[0] == "v")
    if names != frozenset(a[1] for a in pa if a[0] == "v"):
        return False
    try:
        if names:
            return _symbolic_equal(g, p, names)
        gdec, pdec = _decimal(g), _decimal(p)
        gv, pv = _exact(g), _exact(p)
        if gv is None or pv is None:  # irrational: 60 digits
            gv, pv = _num(g, {}), _num(p, {})
            if not (_MP.isfinite(gv) and _MP.isfinite(pv)):
                return False
            gdec, pdec = [d and (_MP.mpf(d[0].numerator) / d[0].denominator, d[1]) for d in (gdec, pdec)]
        gvals = [gv] + ([gv / 100] if gpct else [])
        pvals = [pv] + ([pv / 100] if ppct else [])
        for gi_, gval in enumerate(gvals):
            for pi_, pval in enumerate(pvals):
                gd = gdec if gdec is None or gi_ == 0 else (gdec[0] / 100, gdec[1])
                pd = pdec if pdec is None or pi_ == 0 else (pdec[0] / 100, pdec[1])
                if _close(gval, pval, gd, pd):
                    return True
        return False
    except (_TooBig, ValueError, ZeroDivisionError, OverflowError, ArithmeticError):
        return False



def _symbolic_equal(g, p, names):
    """Expressions with variables: numeric filter at 3 points, then a sympy proof in the worker."""
    if _out_of_time():
        return False
    _MP = _TMP.ctx
    seen = 0  # points where both sides are defined
    for env in _points(names):
        try:
            a, b = _num(g, env), _num(p, env)
        except (ValueError, ZeroDivisionError, ArithmeticError, TypeError):
            continue
        if not (_MP.isfinite(a) and _MP.isfinite(b)):
            continue
        seen += 1
        if abs(a - b) > _MP.mpf(10) ** -30 * (abs(a) + abs(b)):
            return False
    return seen > 0 and _ask_sympy(["eq", g, p])


def _rel_parts(rel):
    """("rel", op, a, b) -> (op, difference) with op in =, !=, >, >= and difference oriented accordingly."""
    _, op, a, b = rel
    if op in ("<", "<="):
        return (">" if op == "<" else ">="), ("+", (b, ("neg", a)))
    return op, ("+", (a, ("neg", b)))


def _rel_equal(g, p):
    if _out_of_time():
        return False
    _MP = _TMP.ctx
    (gop, gd), (pop, pd) = _rel_parts(g), _rel_parts(p)
    if gop != pop or _vars(gd) != _vars(pd) or not _vars(gd):
        return False
    try:
        ratios = []
        for env in _points(_vars(gd)):
            try:
                a, b = _num(gd, env), _num(pd, env)
            except (ValueError, ZeroDivisionError, ArithmeticError, TypeError):
                continue
            if b == 0 or a == 0:
                continue
            ratios.append(a / b)
        if not ratios or any(abs(r - ratios[0]) > _MP.mpf(10) ** -30 * abs(r) for r in ratios):
            return False
        if gop in (">", ">=") and ratios and (abs(_MP.im(ratios[0])) > 1e-30 or _MP.re(ratios[0]) <= 0):
            return False
    except _TooBig:
        return False
    return _ask_sympy(["rel", gop, gd, pd])


# ---------------------------------------------------------------------------------------------------------
# structural comparison

def _unlabel(node):
    if node[0] == "pre":
        return node[1], node[2], node[3]
    return None, node, None


def _match(g, p, gpct, ppct):
    glab, g2, grel = _unlabel(g)
    plab, p2, prel = _unlabel(p)
    if prel == "between" and grel != "between":
        return False  # a two-sided inequality answers a two-sided gold only, never an interval gold
    if glab is not None and plab is not None and glab != plab:
        return False
    if (glab is None) != (plab is None):
        rel = grel if glab is not None else prel
        other = p if glab is not None else g
        if other[0] == "rel" and isinstance(rel, tuple):  # y = 2x+3 against 2x - y + 3 = 0
            return _rel_equal(rel, other) if glab is not None else _rel_equal(other, rel)
    g, p = g2, p2
    if p[0] == "approx":  # a checked approximation after an exact value: the exact value is the answer
        p = p[1]
    k = g[0]
    if k == "approx":  # the gold's exact value, or its own approximation read as a decimal gold
        return _match(g[1], p, gpct, ppct) or _match(g[2], p, gpct, ppct)
    if k != "list" and p[0] == "list" and 1 < len(p[1]) <= 4 and all(_written_twice(x, p[1][-1], ppct)
                                                                     for x in p[1][:-1]):
        p = p[1][-1]  # "\boxed{15\frac{39}{40}}, or \boxed{\frac{639}{40}}": one value written twice
    if k == "time":
        return p[0] == "time" and p[1:] == g[1:]
    if k == "rel":
        return p[0] == "rel" and _rel_equal(g, p)
    if k == "list":
        if len(g[1]) == 1 and p[0] != "list":
            return _match(g[1][0], p, gpct, ppct)
        if p[0] != "list" or len(p[1]) != len(g[1]) or len(g[1]) > 200:
            return False
        left = list(p[1])
        for x in g[1]:
            for j, y in enumerate(left):
                if _out_of_time():  # up to 200 x 200 pairs, each of which may need a proof
                    return False
                if _match(x, y, gpct, ppct):
                    del left[j]
                    break
            else:
                return False
        return True
    if k == "tuple":
        if p[0] == "tuple" and len(p[1]) == len(g[1]):
            return all(not _out_of_time() and _match(x, y, gpct, ppct) for x, y in zip(g[1], p[1]))
        if p[0] == "matrix" and _vector(p) is not None and len(_vector(p)) == len(g[1]):
            return all(not _out_of_time() and _match(x, y, gpct, ppct) for x, y in zip(g[1], _vector(p)))
        if p[0] == "interval" and len(g[1]) == 2:
            return _match(("interval", False, g[1][0], g[1][1], False), p, gpct, ppct)
        return False
    if k == "interval":
        if p[0] == "tuple" and len(p[1]) == 2:
            p = ("interval", False, p[1][0], p[1][1], False)
        return (p[0] == "interval" and g[1] == p[1] and g[4] == p[4]
                and _scalar_equal(g[2], p[2]) and _scalar_equal(g[3], p[3]))
    if k == "union":
        if p[0] != "union" or len(p[1]) != len(g[1]):
            return False
        return _match(("list", g[1]), ("list", p[1]), gpct, ppct)
    if k == "matrix":
        if p[0] == "tuple" and _vector(g) is not None:
            return _match(("tuple", _vector(g)), p, gpct, ppct)
        if p[0] != "matrix" or len(p[1]) != len(g[1]) or len(p[1][0]) != len(g[1][0]):
            return False
        return all(not _out_of_time() and _scalar_equal(x, y) for rg, rp in zip(g[1], p[1]) for x, y in zip(rg, rp))
    if k == "choice":
        return p[0] == "choice" and p[1] == g[1] or p == ("v", g[1])
    if p[0] == "choice":
        return g == ("v", p[1])
    if k == "base":
        if p[0] == "base":
            return p[1:] == g[1:]
        return _is_int_literal(p) and str(int(p[1])) == g[1]
    if k == "text":
        return p[0] == "text" and p[1] == g[1]
    if p[0] == "list" and len(p[1]) == 1:  # {5} for 5
        return _match(g, p[1][0], gpct, ppct)
    return _scalar_equal(g, p, gpct, ppct)


def _written_twice(a, b, pct=False):
    """Two forms of one answer (15\\frac{39}{40} and \\frac{639}{40}, 28 and 28_9, x+11 and 11+x). Constants must
    be exactly equal: a decimal and the value it rounds (0.3 and 1/3) are two answers, i.e. a hedge."""
    if _is_constant(a) and _is_constant(b):
        try:
            return _same_value(a, b)
        except (_TooBig, ValueError, ZeroDivisionError, OverflowError, ArithmeticError):
            return False
    if a[0] in _SCALAR_KINDS and b[0] in _SCALAR_KINDS:
        return _match(a, b, pct, pct)  # a symbolic proof is symmetric: one is enough (each may cost a timeout)
    return _match(a, b, pct, pct) or _match(b, a, pct, pct)


def _vector(node):
    rows = node[1]
    if len(rows[0]) == 1:
        return tuple(r[0] for r in rows)
    if len(rows) == 1:
        return rows[0]
    return None


def _is_structure(node):
    return node is not None and node[0] in ("list", "tuple", "interval", "union", "matrix")


def _letters(s):
    return re.sub(r"[^a-z0-9]", "", s.lower())


def _equivalent(pred, gold):
    """(is correct, normalised pred, normalised gold)."""
    gclean, gnode, gpct = _prepare(gold, True)
    gshape = gnode[2] if gnode is not None and gnode[0] == "pre" else gnode
    pclean, pnode, ppct = _prepare(pred, not _is_structure(gshape))
    if gclean.replace(" ", "") == pclean.replace(" ", ""):
        return True, pclean, gclean
    if gnode is not None and gnode[0] == "text":
        return _letters(pclean) == gnode[1], pclean, gclean
    if gnode is None or pnode is None:
        return False, pclean, gclean
    if gnode == pnode or _match(gnode, pnode, gpct, ppct):
        return True, pclean, gclean
    if pnode[0] == "list" and gnode[0] == "n":  # a bare 70,110 is a number or a list ("separated by commas",
        lclean, lnode, lpct = _prepare(gold, False)  # MATH test/precalculus/528); not 1,080 (no 080 item)
        if lnode is not None and lnode[0] == "list" and _THOUSANDS_RE.fullmatch(lclean) and ",0" not in lclean:
            return _match(lnode, pnode, lpct, ppct), pclean, gclean
    return False, pclean, gclean


def grade(completion, gold):
    """Grade one completion against a gold answer (any shape gold_answer accepts). Never raises on strings;
    returns within GRADE_BUDGET_S (what was not compared in time is not equal: `wrong`)."""
    c = _clock
    if c.deadline is not None:
        return _grade(completion, gold)
    c.deadline = time.monotonic() + GRADE_BUDGET_S
    try:
        return _grade(completion, gold)
    finally:
        c.deadline = None


def _grade(completion, gold):
    gold_s = gold_answer(gold)
    if gold_s is None and not _gold_given(gold):
        raise ValueError("grade: the gold answer is empty; check the dataset row (see gold_answer)")
    try:
        extracted = extract_answer(completion)
    except Exception:  # a bug here must not take a training run down; it counts as no answer
        extracted = None
    if gold_s is None:  # a malformed gold (\boxed{ never closed, an empty box): nothing can equal it
        return Result(0.0, "wrong", extracted, None, None)
    if extracted is None:
        return Result(0.0, "no_answer", None, None, _safe_clean(gold_s))
    if len(extracted) > MAX_ANSWER_CHARS:
        return Result(0.0, "wrong", extracted, None, _safe_clean(gold_s))
    try:
        ok, pred_n, gold_n = _equivalent(extracted, gold_s)
    except Exception:
        ok, pred_n, gold_n = False, None, _safe_clean(gold_s)
    return Result(1.0 if ok else 0.0, "correct" if ok else "wrong", extracted, pred_n, gold_n)


def _gold_given(gold):
    """Whether a gold carries any text: an empty gold or a row without an answer field is the caller's error
    (raise: every reward would silently be 0), a malformed one (`\\boxed{` never closed) is one bad row."""
    if isinstance(gold, str):
        return bool(gold.strip())
    if isinstance(gold, (list, tuple)):
        return bool(gold) and _gold_given(gold[0])
    if isinstance(gold, dict):
        return any(gold.get(k) is not None and _gold_given(gold[k])
                   for k in ("final_answer", "answer", "gold", "solution"))
    return gold is not None


def _safe_clean(s):
    try:
        return _prepare(s, True)[0]
    except Exception:
        return s


def reward(completion, gold):
    """1.0 if the completion's final answer equals the gold answer, else 0.0."""
    return grade(completion, gold).reward


# ---------------------------------------------------------------------------------------------------------
# the sympy worker: a child process so that a runaway simplify can be killed from any thread

class _Worker:
    __slots__ = ("proc", "pid", "ready", "since", "first")

    def __init__(self, proc, first):
        self.proc, self.pid, self.ready, self.since, self.first = proc, os.getpid(), False, time.monotonic(), first


_worker = None           # this process's _Worker (or the parent's, inherited through fork), or None
_spawned_in = None       # pid of the process that last started a worker: its first start is not charged
_worker_lock = threading.Lock()


def _worker_argv():
    return [sys.executable, os.path.abspath(__file__), "--sympy-worker"]


def _encode(node):
    return json.dumps(node, default=lambda q: {"q": [q.numerator, q.denominator]})


def _decode(text):
    return json.loads(text, object_hook=lambda d: Fraction(*d["q"]) if "q" in d else d)


def _spawn():
    """Start a worker without waiting for it (it imports sympy, ~1 s); _await_ready waits. None if it cannot."""
    global _worker, _spawned_in
    first, _spawned_in = _spawned_in != os.getpid(), os.getpid()
    try:
        proc = subprocess.Popen(_worker_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, bufsize=0, close_fds=True)
    except OSError:
        return None
    _worker = _Worker(proc, first)
    return _worker


def _kill_worker():
    global _worker
    w, _worker = _worker, None
    if w is not None and w.pid == os.getpid():
        try:
            w.proc.kill()
            w.proc.wait(timeout=5)
        except Exception:
            pass


atexit.register(_kill_worker)


def _read_line(proc, timeout):
    """One line from the worker; None when none came within timeout, "" (or a partial line) if it died."""
    fd, buf = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return buf.decode(errors="replace")
            buf += chunk
    return buf.decode(errors="replace")


def _await_ready(w):
    """Wait for a starting worker's "ready" line: up to WORKER_START_TIMEOUT_S after its start, and no longer
    than the grade() budget has left, except for the first worker of a process, whose start stops the budget's
    clock (a one-off ~1 s that does not depend on the input). A worker still starting when the budget runs out
    is left to start: the next request finds it ready."""
    now = time.monotonic()
    give_up = w.since + WORKER_START_TIMEOUT_S
    wait = give_up - now
    if not w.first:
        wait = min(wait, _time_left())
    line = _read_line(w.proc, max(wait, 0.0))
    if w.first and _clock.deadline is not None:
        _clock.deadline += time.monotonic() - now
    if line == "ready\n":
        w.ready = True
        return True
    if line is not None or time.monotonic() >= give_up:  # it died, or never got going
        _kill_worker()
    return False


def _ask_sympy(request):
    """Send one proof request to the worker; True only if it answers True in time: within SYMBOLIC_TIMEOUT_S
    and within what is left of the grade() call's budget, which also pays for waiting for the worker (held
    by another thread, or restarting after a timeout). Out of time is False, like a proof that fails."""
    global _worker
    left = _time_left()
    if left <= 0:
        return False
    if not _worker_lock.acquire(timeout=min(left, threading.TIMEOUT_MAX) if left != math.inf else -1):
        return False
    try:
        w = _worker
        if w is not None and w.pid != os.getpid():  # inherited through fork: the parent's worker
            for pipe in (w.proc.stdin, w.proc.stdout):
                try:
                    pipe.close()  # our copies only; the parent keeps talking to it
                except OSError:
                    pass
            w = _worker = None
        if w is None:
            w = _spawn()
            if w is None:
                return False
        if not w.ready and not _await_ready(w):
            return False
        timeout = min(SYMBOLIC_TIMEOUT_S, _time_left())
        if timeout <= 0:
            return False
        try:
            w.proc.stdin.write((_encode(request) + "\n").encode())
            w.proc.stdin.flush()
        except OSError:
            _kill_worker()
            return False
        line = _read_line(w.proc, timeout)
        if line is None or not line.endswith("\n"):  # out of time (or it crashed): the proof cannot be stopped,
            _kill_worker()                            # so the worker goes, and its successor starts now, to
            _spawn()                                  # import sympy while the caller goes on
            return False
        return line == "true\n"
    finally:
        _worker_lock.release()


def _worker_main():
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    except Exception:
        pass
    import sympy
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            ok = _sympy_decide(sympy, _decode(line))
        except Exception:
            ok = False
        out.write("true\n" if ok else "false\n")
        out.flush()


def _sympy_decide(sp, req):
    """True iff sympy proves the request: ["eq", a, b] a - b == 0, or ["rel", op, d1, d2] d1/d2 a nonzero
    constant (positive for inequalities). Symbols are generic first, then positive (the numeric test at
    complex points has already rejected answers that differ by a sign or a branch, like |x| and x)."""
    def conv(n, pos):
        k = n[0]
        if k == "n":
            return sp.Rational(n[1].numerator, n[1].denominator)
        if k == "v":
            return sp.Symbol(n[1], positive=True) if pos else sp.Symbol(n[1])
        if k == "c":
            return {"pi": sp.pi, "e": sp.E, "i": sp.I, "oo": sp.oo}[n[1]]
        if k == "neg":
            return -conv(n[1], pos)
        if k in ("+", "*"):
            return (sp.Add if k == "+" else sp.Mul)(*[conv(x, pos) for x in n[1]])
        if k == "/":
            return conv(n[1], pos) / conv(n[2], pos)
        if k == "^":
            return sp.Pow(conv(n[1], pos), conv(n[2], pos))
        if k == "f":
            args = [conv(x, pos) for x in n[2]]
            fn = {"sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "cot": sp.cot, "sec": sp.sec, "csc": sp.csc,
                  "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan, "arccot": sp.acot, "sinh": sp.sinh,
                  "cosh": sp.cosh, "tanh": sp.tanh, "exp": sp.exp, "sqrt": sp.sqrt, "log": sp.log}[n[1]]
            return fn(*args)
        one = {"!": sp.factorial, "abs": sp.Abs, "floor": sp.floor, "ceil": sp.ceiling}
        if k in one:
            return one[k](conv(n[1], pos))
        if k == "binom":
            return sp.binomial(conv(n[1], pos), conv(n[2], pos))
        raise ValueError(k)

    strategies = [lambda e: e, lambda e: sp.cancel(sp.expand(e)), lambda e: sp.simplify(sp.expand(e.rewrite(sp.exp))),
                  sp.simplify, lambda e: sp.simplify(sp.expand_trig(e)), lambda e: sp.simplify(sp.combsimp(e)),
                  lambda e: sp.simplify(sp.expand_log(e, force=True))]
    def attempts(e):
        for f in strategies:
            try:
                yield f(e)
            except Exception:  # one strategy failing (e.g. an unsupported rewrite) is not a verdict
                pass

    for pos in (False, True):
        if req[0] == "eq":
            if any(c == 0 for c in attempts(conv(req[1], pos) - conv(req[2], pos))):
                return True
            continue
        _, op, a, b = req
        for c in attempts(conv(a, pos) / conv(b, pos)):
            if not c.free_symbols:
                if c != 0 and c.is_finite and (op in ("=", "!=") or c.is_positive):
                    return True
                break
    return False


if __name__ == "__main__":
    if sys.argv[1:] == ["--sympy-worker"]:
        _worker_main()
    elif len(sys.argv) == 3:
        print(grade(sys.argv[1], sys.argv[2]))
    else:
        print(__doc__)
