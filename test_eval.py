"""Tests for data.py (dataset loading) and eval.py (metrics, accounting, resume, end to end).

    python -m pytest -q test_eval.py

The end-to-end tests build a random 2-layer Qwen2 and a character-level tokenizer in tmp_path,
so they need no hub and no pretrained weights; the real-data tests use ../shared/data when present.
"""
import json
import math
from pathlib import Path

import pytest
import torch

import data
import eval as ev
from reward import grade

DATA = Path(__file__).resolve().parent.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data not present")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The models here are tiny: one thread beats two that must sync every op (by far on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- metrics

def test_pass_at_k_hand_computed():
    assert ev.pass_at_k(5, 2, 1) == pytest.approx(2 / 5)
    assert ev.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)          # 1 - C(3,2)/C(5,2)
    assert ev.pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)       # 1 - C(7,5)/C(10,5)
    assert ev.pass_at_k(4, 1, 4) == 1.0                                # any correct, k = n
    assert ev.pass_at_k(4, 0, 4) == 0.0
    assert ev.pass_at_k(1, 1, 1) == 1.0 and ev.pass_at_k(1, 0, 1) == 0.0
    for n in range(1, 12):   # the product form equals the binomial definition everywhere
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert ev.pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def _rec(id, s, status, tokens=10, truncated=False, seconds=0.5):
    return {"id": id, "sample": s, "status": status, "reward": float(status == "correct"),
            "tokens": tokens, "truncated": truncated, "seconds": seconds}


def test_summarize_avg_at_n_and_no_answer():
    recs = [_rec("a", 0, "correct"), _rec("a", 1, "correct"), _rec("a", 2, "correct"),
            _rec("a", 3, "no_answer", tokens=30, truncated=True),
            _rec("b", 0, "wrong"), _rec("b", 1, "no_answer"), _rec("b", 2, "wrong"),
            _rec("b", 3, "no_answer")]
    m = ev.summarize(recs, 4)
    assert m["problems"] == 2 and m["n"] == 4
    assert m["accuracy"] == pytest.approx((3 / 4 + 0 / 4) / 2)      # avg@4
    assert m["pass@1"] == pytest.approx(m["accuracy"])
    assert m["pass@4"] == pytest.approx((1 + 0) / 2)
    assert m["no_answer"] == pytest.approx(3 / 8)
    assert m["truncated"] == pytest.approx(1 / 8)
    assert m["mean_tokens"] == pytest.approx((7 * 10 + 30) / 8)
    assert m["seconds"] == pytest.approx(4.0)
    with pytest.raises(AssertionError):
        ev.summarize(recs[:-1], 4)           # a problem short of samples is a bug, not a metric


def test_evaluate_grades_and_counts_no_answer(tmp_path, monkeypatch):
    """Canned completions through evaluate(): correct, wrong, no box, and a correct box cut off at
    the token limit (no_answer, as in training); then resume skips finished lines."""
    rows = [{"id": f"p{i}", "question": f"q{i}", "gold": "5"} for i in range(4)]
    canned = {"Question: q0": ("so \\boxed{5}", False), "Question: q1": ("\\boxed{4}", False),
              "Question: q2": ("I give up", False), "Question: q3": ("\\boxed{5} and then", True)}
    calls = []

    def fake_generate(model, tokenizer, prompt_ids, **kw):
        calls.append(len(prompt_ids))
        out = [canned[tokenizer.decode(p).split("\n")[0]] for p in prompt_ids]
        return {"texts": [t for t, _ in out], "mask": torch.ones(len(out), 7),
                "truncated": torch.tensor([tr for _, tr in out])}

    tok = char_tokenizer()
    monkeypatch.setattr(ev.grpo, "generate", fake_generate)
    path = tmp_path / "b.jsonl"
    recs, fresh = ev.evaluate(torch.nn.Module(), tok, rows, str(path), batch_size=3)
    assert fresh == 4 and calls == [3, 1]
    assert [r["status"] for r in recs] == ["correct", "wrong", "no_answer", "no_answer"]
    assert recs[3]["truncated"] and recs[3]["extracted"] is not None   # found, but not counted
    m = ev.summarize(recs, 1)
    assert m["accuracy"] == 0.25 and m["no_answer"] == 0.5
    # resume: two finished lines, then a half-written third one (the run was killed mid-write)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1] + lines[2][:20])
    calls.clear()
    recs2, fresh = ev.evaluate(torch.nn.Module(), tok, rows, str(path), batch_size=3)
    assert fresh == 2 and calls == [2]
    assert [r["status"] for r in recs2] == [r["status"] for r in recs]
    assert len(path.read_text().splitlines()) == 4
    assert all(json.loads(l) for l in path.read_text().splitlines())
    calls.clear()
    assert ev.evaluate(torch.nn.Module(), tok, rows, str(path))[1] == 0 and calls == []


# ----------------------------------------------------------------------------- data loading

LOCAL = {  # name -> rows in the test split
    "gsm8k": 1319, "math500": 500, "aime24": 30, "amc23": 40, "olympiadbench": 675, "minerva": 272,
}


@needs_data
@pytest.mark.parametrize("name", sorted(LOCAL))
def test_local_benchmark_loads_and_golds_grade_correct(name):
    rows = data.load_rows(name, "test", data_dir=str(DATA))
    assert len(rows) == LOCAL[name]
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(isinstance(r["gold"], str) and r["gold"] and r["question"].strip() for r in rows)
    bad = [r["gold"] for r in rows if grade(f"So the answer is \\boxed{{{r['gold']}}}.", r["gold"]).status != "correct"]
    assert bad == []


@needs_data
def test_local_gold_shapes():
    first = lambda name: data.load_rows(name, "test", data_dir=str(DATA), limit=1)[0]
    assert first("gsm8k")["gold"] == "18"                                   # after ####
    aime = {r["gold"]: r for r in data.load_rows("aime24", "test", data_dir=str(DATA))}
    assert grade("\\boxed{25}", aime["025"]["gold"]).status == "correct"      # zero-padded gold "025"
    assert grade("\\boxed{27}", first("amc23")["gold"]).status == "correct"     # 27.0 float
    assert first("math500")["id"] == "test/precalculus/807.json"
    assert "\\frac{\\pi}{2}" in first("math500")["gold"]
    m = data.load_rows("math", "test", data_dir=str(DATA), limit=20)         # last box of solution
    raw = data.read_jsonl(str(DATA / "math" / "test.jsonl"))[:20]
    assert [r["id"] for r in m] == [r["unique_id"] for r in raw]
    assert all(grade(src["solution"], r["gold"]).status == "correct" for r, src in zip(m, raw))
    assert len(data.load_rows("gsm8k", "train", data_dir=str(DATA))) == 7473
    # two MATH train solutions end in an empty \boxed{} (number_theory 7115, 7117): skipped, not an error
    assert len(data.load_rows("math", "train", data_dir=str(DATA))) == 7500 - 2


def test_local_jsonl_keys_skips_and_errors(tmp_path, capsys):
    p = tmp_path / "mine.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"q": "1+1?", "a": "2"}, {"q": "2+2?", "a": None}, {"q": "3+3?", "a": 6.0}, {"q": "", "a": "1"}]) + "\n")
    rows = data.load_rows(str(p), question_key="q", answer_key="a")
    assert [(r["id"], r["question"]) for r in rows] == [("0", "1+1?"), ("2", "3+3?")]
    assert grade("\\boxed{6}", rows[1]["gold"]).status == "correct"
    assert "skipped 2 rows" in capsys.readouterr().out
    assert len(data.load_rows(str(p), question_key="q", answer_key="a", limit=1)) == 1
    with pytest.raises(ValueError, match="--question-key/--answer-key"):
        data.load_rows(str(p))                              # default keys are absent
    with pytest.raises(ValueError, match="PATH.jsonl"):
        data.load_rows(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="--dataset PATH.jsonl"):
        data.load_rows("no-such-benchmark")
    with pytest.raises(ValueError, match="--data-dir"):
        data.load_rows("math500", "test", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="no 'test' split"):
        data.load_rows("deepmath", "test")


def test_hub_offline_error_names_local_options(monkeypatch):
    import datasets
    import huggingface_hub.constants
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)     # fail at once, no retries
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="--data-dir") as e:
        data.load_rows("gsm8k", "test")
    assert "--dataset PATH.jsonl" in str(e.value) and "openai/gsm8k" in str(e.value)


# ----------------------------------------------------------------------------- end to end

def char_tokenizer():
    """Every printable ASCII character and newline is one token; no chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<unk>"] + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>", padding_side="left")


def test_load_tokenizer_keeps_a_custom_tokenizer_next_to_a_qwen2_config(tmp_path):
    """AutoTokenizer in transformers 5 swaps in Qwen2Tokenizer here and drops the spaces."""
    from transformers import Qwen2Config
    tok = char_tokenizer()
    tok.save_pretrained(tmp_path)
    Qwen2Config(vocab_size=len(tok)).save_pretrained(tmp_path)
    loaded = data.load_tokenizer(str(tmp_path))
    text = "Question: What is 2 + 3?\nAnswer:"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"] and len(tok(text)["input_ids"]) == len(text)
    assert loaded.padding_side == "left" and loaded.eos_token == "<eos>"


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A random 2-layer Qwen2 + char tokenizer saved like a hub model, and a 5-problem JSONL."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    root = tmp_path_factory.mktemp("e2e")
    tok = char_tokenizer()
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                         initializer_range=0.2)  # larger than default: completions differ per prompt, some stop
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    problems = [("What is 2+3?", 5), ("What is 7-4?", 3), ("How many legs do 2 cats have?", 8),
                ("What is 10/2?", 5), ("Half of 9?", "\\frac{9}{2}")]
    with open(root / "five.jsonl", "w") as f:
        for q, a in problems:
            f.write(json.dumps({"problem": q, "answer": a}) + "\n")
    return root


def _main(root, out, *extra):
    return ev.main(["--model", str(root / "model"), "--benchmarks", str(root / "five.jsonl"),
                    "--out", str(out), "--max-new-tokens", "12", "--batch-size", "2", *extra])


def _lines(out):
    return [json.loads(l) for l in open(out / "five.jsonl")]


def test_end_to_end_writes_results_and_resumes(tiny_setup, tmp_path, capsys):
    out = tmp_path / "run"
    (tag, s), = _main(tiny_setup, out)
    lines = _lines(out)
    assert len(lines) == 5 and {l["sample"] for l in lines} == {0}
    for l in lines:
        assert set(l) >= {"id", "prompt", "completion", "extracted", "gold", "status", "tokens"}
        assert l["prompt"].startswith("Question: ") and l["status"] in ("correct", "wrong", "no_answer")
        assert 1 <= l["tokens"] <= 12
        if l["truncated"]:
            assert l["tokens"] == 12 and l["status"] == "no_answer"
    summary = json.load(open(out / "summary.json"))
    m = summary["benchmarks"]["five"]
    assert m["problems"] == 5 and m["generated"] == 5 and m == s["benchmarks"]["five"]
    assert "five" in capsys.readouterr().out                               # the printed table
    # the same --out again: nothing regenerated, same records
    (_, s2), = _main(tiny_setup, out)
    assert s2["benchmarks"]["five"]["generated"] == 0 and _lines(out) == lines
    # lose two lines: only those two are generated, and identically (greedy)
    with open(out / "five.jsonl", "w") as f:
        f.writelines(json.dumps(l) + "\n" for l in lines[:3])
    (_, s3), = _main(tiny_setup, out)
    assert s3["benchmarks"]["five"]["generated"] == 2
    key = lambda l: (l["id"], l["completion"], l["status"], l["tokens"])
    assert sorted(map(key, _lines(out))) == sorted(map(key, lines))
    # other settings into the same --out are refused, not mixed in
    with pytest.raises(ValueError, match="max_new_tokens"):
        _main(tiny_setup, out, "--max-new-tokens", "13")


def test_greedy_is_deterministic_and_batch_invariant(tiny_setup, tmp_path):
    _main(tiny_setup, tmp_path / "a")
    _main(tiny_setup, tmp_path / "b")
    _main(tiny_setup, tmp_path / "c", "--batch-size", "5")   # other padding, same answers
    key = lambda out: sorted((l["id"], l["completion"], l["tokens"]) for l in _lines(out))
    assert key(tmp_path / "a") == key(tmp_path / "b") == key(tmp_path / "c")


def test_sampling_n_reports_pass_at_n_and_is_seeded(tiny_setup, tmp_path):
    (_, s), = _main(tiny_setup, tmp_path / "a", "--n", "3", "--temperature", "1.0")
    _main(tiny_setup, tmp_path / "b", "--n", "3", "--temperature", "1.0")
    m = s["benchmarks"]["five"]
    assert len(_lines(tmp_path / "a")) == 15 and {"pass@1", "pass@3"} <= set(m)
    assert m["pass@1"] == pytest.approx(m["accuracy"]) and m["pass@3"] >= m["accuracy"]
    key = lambda out: sorted((l["id"], l["sample"], l["completion"]) for l in _lines(out))
    assert key(tmp_path / "a") == key(tmp_path / "b")
    # keyed sampling: other batches (other padding, other neighbours) draw the same samples
    _main(tiny_setup, tmp_path / "d", "--n", "3", "--temperature", "1.0", "--batch-size", "4")
    assert key(tmp_path / "d") == key(tmp_path / "a")
    assert len({l["completion"] for l in _lines(tmp_path / "a")}) > 5     # and they are samples, not copies
    with pytest.raises(ValueError, match="--temperature"):
        _main(tiny_setup, tmp_path / "c", "--n", "3")


def test_adapter_equals_merged_export(tiny_setup, tmp_path):
    """A GeoRA adapter directory (geora.load_adapter, no SVD), its PEFT export and the merged model
    saved with save_pretrained give the same greedy completions, and differ from the base."""
    import geora
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_setup / "model")
    geora.apply_geora(model, rank=4)
    with torch.no_grad():                    # a "trained" adapter: move B off its init
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn_like(p))
    geora.save_adapter(model, tmp_path / "adapter")
    geora.export_peft(model, tmp_path / "peft")
    geora.merge(model).save_pretrained(tmp_path / "merged")
    data.load_tokenizer(str(tiny_setup / "model")).save_pretrained(tmp_path / "merged")
    _main(tiny_setup, tmp_path / "a", "--adapter", str(tmp_path / "adapter"))
    ev.main(["--model", str(tmp_path / "merged"), "--benchmarks", str(tiny_setup / "five.jsonl"),
             "--out", str(tmp_path / "m"), "--max-new-tokens", "12", "--batch-size", "2"])
    _main(tiny_setup, tmp_path / "p", "--adapter", str(tmp_path / "peft"))
    _main(tiny_setup, tmp_path / "base")
    key = lambda out: sorted((l["id"], l["completion"]) for l in _lines(out))
    assert key(tmp_path / "a") == key(tmp_path / "m") == key(tmp_path / "p") != key(tmp_path / "base")
    with pytest.raises(ValueError, match="geora_adapter.safetensors"):
        _main(tiny_setup, tmp_path / "x", "--adapter", str(tmp_path))


def test_bf16_untrained_adapter_reproduces_base(tiny_setup, tmp_path):
    """The bf16 load path (as on CUDA) with a freshly initialised GeoRA adapter: the same completions
    as the bf16 base, token for token (geora keeps the initial policy exact in bf16)."""
    import geora
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_setup / "model")
    geora.apply_geora(model, rank=4)
    geora.save_adapter(model, tmp_path / "adapter")
    (_, s), = _main(tiny_setup, tmp_path / "a", "--dtype", "bf16", "--adapter", str(tmp_path / "adapter"))
    _main(tiny_setup, tmp_path / "b", "--dtype", "bf16")
    assert s["config"]["dtype"] == "torch.bfloat16"
    key = lambda out: sorted((l["id"], l["completion"], l["tokens"]) for l in _lines(out))
    assert key(tmp_path / "a") == key(tmp_path / "b")
