"""Smoke test of compare.py (the CI version of the sweep: 2 methods, 1 seed, 1 rate, 2 steps on a briefly
pretrained tiny base), and its resume: a second call runs nothing and gives the same results."""

import json
import os

import compare


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
