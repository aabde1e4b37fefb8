"""Reward plug-ins: --reward MODULE:FUNCTION[,MODULE:FUNCTION...] and --reward-weights for train.py, eval.py
and compare.py.

    from plugins import load_reward
    fn = load_reward("examples/format_reward.py:format_reward,math", "0.1,1")
    scores = fn(completions, rows)     # -> [Score(reward, status, parts), ...], one per completion

The contract a reward function meets (docs/training.md has an example):
    def my_reward(completions: list[str], rows: list[dict]) -> list[float] | list[tuple[float, str | None]]
`rows[i]` is the dataset row completion i answers, with every column of the row (train.py and eval.py
keep the extra columns of a --dataset / --benchmarks PATH.jsonl when --reward names a plug-in) plus the
loader's `id`, `question` and `gold` (None when the row has no gold answer). A status is a short word
("correct", "wrong", "no_answer", ...): "no_answer" counts in the no_answer metric and "correct" marks a
pass in eval.py's pass@k and train.py's eval_acc.

Choices:
- MODULE is a dotted module name (imported as usual, so the script's directory and PYTHONPATH count)
  or a path ending in .py (loaded from that file, relative to the working directory). `math` alone is
  the built-in reward (reward.grade on the row's gold), so it combines with others by name.
- Several functions: the reward is sum_i w_i r_i (--reward-weights, default 1 each); the status is the
  first status any function gives, in the order of --reward. Each function's own mean is logged too
  (metrics key reward_NAME) when there are several: that is how a user sees the format reward saturate.
- Validation after every call: a list (or tuple) with one entry per completion, each a finite real
  number or a (number, status) pair. Anything else, or an exception raised inside the function, is a
  RewardError naming the function and (for an exception) the first row of the failing call; train.py
  stops on it only after the last checkpoint is safe (see its docstring). To name the failing row, a
  raising function is called again on each row of the batch alone (the first 64). We never catch and zero a
  failing reward: a silently-zero reward trains on nothing and looks like a hard task.
- Truncated completions (no EOS within the budget) are never passed to a function: they score 0 with
  status no_answer, as the built-in reward always did (the policy cannot earn reward by rambling).
- One call per batch (a step's completions on this process, or an eval.py chunk): a function that
  starts processes or calls a server pays its set-up once per batch, not once per completion.
"""
import importlib
import importlib.util
import math
import os
import sys
from typing import NamedTuple, Optional

BUILTIN = "math"


class RewardError(ValueError):
    """A reward function raised, or returned something that is not one finite reward per completion."""


class Score(NamedTuple):
    reward: float            # the weighted sum
    status: Optional[str]    # the first status a function gave (None: no function gives one)
    parts: tuple             # each function's own reward, in the order of --reward


def math_reward(completions, rows):
    """The built-in reward: reward.grade on each row's gold -> (1.0 | 0.0, correct | wrong | no_answer)."""
    from reward import grade
    out = []
    for c, row in zip(completions, rows):
        g = grade(c, row["gold"])   # raises ValueError on a missing gold: a dataset error, reported with the row
        out.append((g.reward, g.status))
    return out


def load_function(spec):
    """The callable a MODULE:FUNCTION names (MODULE dotted or a .py path); `math` is math_reward."""
    if spec == BUILTIN:
        return math_reward
    module, sep, name = spec.rpartition(":")
    if not sep or not module or not name:
        raise ValueError(f"--reward {spec!r}: expected MODULE:FUNCTION (a dotted module or a .py path, then "
                         f"the function's name), e.g. examples/format_reward.py:format_reward, or {BUILTIN!r}")
    if module.endswith(".py"):
        if not os.path.isfile(module):
            raise ValueError(f"--reward {spec!r}: no such file {module} (paths are relative to the working "
                             f"directory {os.getcwd()})")
        key = "reward_plugin_" + os.path.splitext(os.path.basename(module))[0]
        mod_spec = importlib.util.spec_from_file_location(key, os.path.abspath(module))
        mod = importlib.util.module_from_spec(mod_spec)
        sys.modules[key] = mod   # so pickling, dataclasses and relative imports inside it behave
        mod_spec.loader.exec_module(mod)
    else:
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"--reward {spec!r}: cannot import module {module!r} ({e}); pass a dotted module on "
                             f"sys.path or a path to a .py file") from e
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise ValueError(f"--reward {spec!r}: {module} has no function {name!r}")
    return fn


def split_specs(text):
    """'a.py:f, b:g' or ['a.py:f', 'b:g'] -> ['a.py:f', 'b:g'] (a config file may give a list)."""
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    return [s.strip() for s in items if str(s).strip()]


def parse_weights(text, n):
    """--reward-weights '0.1,1' -> [0.1, 1.0]; None -> n ones. One finite weight per function."""
    if text is None:
        return [1.0] * n
    items = split_specs(text)
    try:
        w = [float(x) for x in items]
    except ValueError:
        raise ValueError(f"--reward-weights {text!r}: expected comma-separated numbers, one per --reward "
                         f"function") from None
    if len(w) != n or not all(math.isfinite(x) for x in w):
        raise ValueError(f"--reward-weights {text!r}: {len(w)} weights for {n} reward function(s); give one "
                         f"finite weight per --reward entry, in the same order")
    return w


def _row_hint(row):
    """A short, printable identity of a row for error messages: its id and the start of its question."""
    try:
        q = str(row.get("question", ""))[:80]
        return f"id {row.get('id')!r} (question {q!r})"
    except Exception:  # a row is whatever the dataset gave; never fail while reporting a failure
        return repr(row)[:120]


def validate(name, out, n):
    """A function's output -> [(reward, status)], or RewardError naming the function and what is wrong."""
    if not isinstance(out, (list, tuple)):
        raise RewardError(f"reward function {name} returned {type(out).__name__}; it must return a list with one "
                          f"float (or (float, status) pair) per completion")
    if len(out) != n:
        raise RewardError(f"reward function {name} returned {len(out)} rewards for {n} completions; it must "
                          f"return exactly one per completion, in order")
    res = []
    for i, x in enumerate(out):
        status = None
        if isinstance(x, (list, tuple)):
            if len(x) != 2 or not (x[1] is None or isinstance(x[1], str)):
                raise RewardError(f"reward function {name}: entry {i} is {x!r}; a pair must be (reward, status "
                                  f"string or None)")
            x, status = x
        if isinstance(x, bool) or not isinstance(x, (int, float)) and not hasattr(x, "__float__"):
            raise RewardError(f"reward function {name}: entry {i} is {x!r} ({type(x).__name__}), not a number")
        try:
            r = float(x)   # numpy / torch scalars too
        except (TypeError, ValueError):
            raise RewardError(f"reward function {name}: entry {i} is {x!r}, not a number") from None
        if not math.isfinite(r):
            raise RewardError(f"reward function {name}: entry {i} is {r}; rewards must be finite")
        res.append((r, status))
    return res


class Reward:
    """The weighted sum of one or more reward functions, validated; see the module docstring."""

    def __init__(self, specs, weights):
        self.specs = list(specs)
        assert self.specs and len(weights) == len(self.specs), (specs, weights)
        self.fns = [load_function(s) for s in self.specs]
        self.weights = list(weights)
        # metric names: the function's own name, made unique (two plug-ins may both call theirs `reward`)
        names = []
        for s, fn in zip(self.specs, self.fns):
            base = getattr(fn, "__name__", s.rpartition(":")[2]) or "fn"
            name, k = base, 2
            while name in names:
                name, k = f"{base}{k}", k + 1
            names.append(name)
        self.names = names
        self.is_builtin = self.specs == [BUILTIN]

    def __call__(self, completions, rows, truncated=None):
        """[Score] for each completion; truncated[i] True scores 0 / no_answer without a call."""
        n = len(completions)
        assert len(rows) == n, (len(rows), n)
        truncated = [False] * n if truncated is None else list(truncated)
        live = [i for i in range(n) if not truncated[i]]
        parts = [[0.0] * n for _ in self.fns]
        status = [None if not truncated[i] else "no_answer" for i in range(n)]
        if live:
            cs, rs = [completions[i] for i in live], [rows[i] for i in live]
            for k, (spec, fn) in enumerate(zip(self.specs, self.fns)):
                try:
                    out = fn(cs, rs)
                except Exception as e:
                    raise RewardError(f"reward function {spec} raised {type(e).__name__}: {e} (on a batch of "
                                      f"{len(cs)} completions; first row {_row_hint(rs[0])}"
                                      f"{_failing_row(fn, cs, rs)})") from e
                for i, (r, s) in zip(live, validate(spec, out, len(cs))):
                    parts[k][i] = r
                    if status[i] is None:
                        status[i] = s
        return [Score(sum(w * p[i] for w, p in zip(self.weights, parts)), status[i], tuple(p[i] for p in parts))
                for i in range(n)]

    def passed(self, score):
        """A pass for eval_acc / pass@k: status correct, or, from functions that give no status, reward >= 1."""
        return score.status == "correct" if score.status is not None else score.reward >= 1.0

    def describe(self):
        return " + ".join(f"{w:g} x {s}" for w, s in zip(self.weights, self.specs))


def _failing_row(fn, completions, rows):
    """Which row makes `fn` raise, found by calling it on each row alone (a batch error names one row);
    '' when none fails alone (the batch as a whole was the problem)."""
    if len(rows) == 1:
        return ""
    for c, r in list(zip(completions, rows))[:64]:   # bounded: each try may be slow (a subprocess)
        try:
            fn([c], [r])
        except Exception:
            return f"; it raises on row {_row_hint(r)}"
    return ""


def load_reward(specs=None, weights=None):
    """The Reward of --reward / --reward-weights (None: the built-in math reward)."""
    items = split_specs(specs) if specs else [BUILTIN]
    if weights is not None and not specs:
        raise ValueError("--reward-weights needs --reward (the functions it weighs)")
    return Reward(items, parse_weights(weights, len(items)))


