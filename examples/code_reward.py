"""A code reward: run a completion's Python against the row's unit tests (docs/training.md).

    python train.py --model M --dataset code.jsonl --reward examples/code_reward.py:code_reward
    # code.jsonl rows: {"question": "Write f(x) ...", "tests": "assert f(2) == 4\\nassert f(0) == 0"}
    #   optional per row: "timeout" (seconds, default 5); "tests" may also be a list of assert lines

For each completion: the last ```python (or bare ```) fenced block is the program; it is written with the
row's tests after it into a fresh temporary directory and run there as `python -I solution.py` in a child
process. Exit status 0 -> (1.0, "correct"); a failing test, an exception or a non-zero exit -> (0.0,
"wrong"); the time limit -> (0.0, "timeout"); no fenced block -> (0.0, "no_answer").

THIS IS NOT A SECURITY SANDBOX. It keeps honest mistakes from hurting the run (an endless loop, a large
allocation, a stray file, a download), not a hostile program from hurting the machine: the child runs as
your user, can read what you can read, and can undo the guards below (ctypes, another subprocess, ...).
Run untrusted code (say, a policy being RL-trained on code) inside a container or VM you can throw away.
What it does:
- Time: a wall-clock limit per program (the row's "timeout", default 5 s) and the same CPU-seconds limit
  (RLIMIT_CPU); the child gets its own process group, killed whole on timeout (its children too).
- Memory: RLIMIT_AS of 2 GiB (MAX_MEMORY_BYTES), so a runaway allocation fails in the child.
- Files: cwd is a fresh temporary directory, removed afterwards; `-I` (isolated mode) ignores PYTHON*
  environment variables and the user's site-packages, and the environment is cut to PATH, LANG and HOME
  (set to the temporary directory).
- Network: on Linux, where `unshare --net` works (root, or unprivileged user namespaces), the child runs
  in a new network namespace with no interfaces up (`unshare -rn`): nothing is reachable, not even
  localhost. Elsewhere a guard at the top of the program replaces socket creation with an error: a
  courtesy, not a barrier.
- Programs run in parallel threads (MAX_WORKERS, default half the cores), one child process each.
"""
import concurrent.futures
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

DEFAULT_TIMEOUT_S = 5.0
MAX_MEMORY_BYTES = 2 << 30
MAX_WORKERS = max(1, (os.cpu_count() or 2) // 2)
_FENCE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.S | re.I)
# prepended to every program: socket creation raises (a fallback where no network namespace is available)
_NO_NET = ("import socket as _s\n"
           "def _no_network(*a, **k):\n"
           "    raise OSError('network disabled by examples/code_reward.py')\n"
           "_s.socket = _s.create_connection = _s.getaddrinfo = _s.socketpair = _no_network\n"
           "del _s\n")


def extract_code(completion):
    """The last fenced code block of a completion, or None."""
    blocks = _FENCE.findall(completion)
    return blocks[-1] if blocks else None


@functools.lru_cache(maxsize=1)
def _unshare_prefix():
    """['unshare', '-rn'] when that runs here (a network namespace with nothing up), else []."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return ()
    try:
        ok = subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return ("unshare", "-rn") if ok else ()


def _prelude(seconds):
    """Set in the child by the program itself, not with preexec_fn (unsafe in a threaded parent)."""
    cpu = max(1, int(seconds) + 1)
    return ("import resource as _r\n"
            f"_r.setrlimit(_r.RLIMIT_CPU, ({cpu}, {cpu}))\n"
            f"_r.setrlimit(_r.RLIMIT_AS, ({MAX_MEMORY_BYTES}, {MAX_MEMORY_BYTES}))\n"
            "del _r\n") if os.name == "posix" else ""


def run_tests(code, tests, timeout=DEFAULT_TIMEOUT_S):
    """Run `code` then `tests` in a child process; returns (reward, status, output tail)."""
    if isinstance(tests, (list, tuple)):
        tests = "\n".join(tests)
    with tempfile.TemporaryDirectory(prefix="code_reward_") as d:
        with open(os.path.join(d, "solution.py"), "w", encoding="utf-8") as f:
            f.write(_prelude(timeout) + _NO_NET + "\n" + code + "\n\n" + tests + "\n")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": d}
        cmd = [*_unshare_prefix(), sys.executable, "-I", "solution.py"]
        proc = subprocess.Popen(cmd, cwd=d, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)   # the whole group: a program's own children too
            except ProcessLookupError:
                pass
            out, _ = proc.communicate()
            return 0.0, "timeout", out.decode("utf-8", "replace")[-2000:]
    text = out.decode("utf-8", "replace")[-2000:]
    return (1.0, "correct", text) if proc.returncode == 0 else (0.0, "wrong", text)


def code_reward(completions, rows):
    """(1.0, "correct") when the completion's last code block passes the row's "tests", else (0.0, status)."""
    def one(item):
        text, row = item
        if "tests" not in row:
            raise KeyError("the row has no 'tests' column (code_reward needs the unit tests to run)")
        code = extract_code(text)
        if code is None:
            return 0.0, "no_answer"
        reward, status, _ = run_tests(code, row["tests"], float(row.get("timeout") or DEFAULT_TIMEOUT_S))
        return reward, status
    with concurrent.futures.ThreadPoolExecutor(MAX_WORKERS) as pool:
        return list(pool.map(one, zip(completions, rows)))
