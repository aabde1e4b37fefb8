"""Tests for plugins.py, the examples/ rewards and issue 20's train.py / eval.py flags (CPU, well under a minute).

    python -m pytest -q test_plugins.py

Training runs reuse test_train.py's micro world (a micro Qwen2 that answers " #### 1" or " #### 2") for 1-4 steps.
"""
import json
import math
import os
import socket
import sys
import types

import pytest
import torch

import eval as eval_mod
import geora
import plugins
import train
from test_train import _args, _lines, world  # noqa: F401  (world is a module-scoped fixture)

HERE = os.path.dirname(os.path.abspath(__file__))
FORMAT = os.path.join(HERE, "examples", "format_reward.py") + ":format_reward"
CODE = os.path.join(HERE, "examples", "code_reward.py") + ":code_reward"


# ----------------------------------------------------------------------------- plugins.py

def test_load_function_by_path_dotted_and_builtin(tmp_path):
    assert plugins.load_function("math") is plugins.math_reward
    assert plugins.load_function("plugins:math_reward") is plugins.math_reward
    assert plugins.load_function(FORMAT).__name__ == "format_reward"
    for bad, msg in (("nocolon", "MODULE:FUNCTION"), (str(tmp_path / "none.py") + ":f", "no such file"),
                     ("plugins:nope", "no function 'nope'"), ("no_such_module_x:f", "cannot import")):
        with pytest.raises(ValueError, match=msg):
            plugins.load_function(bad)
    with pytest.raises(ValueError, match="2 weights for 1"):
        plugins.load_reward("math", "1,2")
    with pytest.raises(ValueError, match="needs --reward"):
        plugins.load_reward(None, "1")


def test_weighted_format_plus_math_and_status():
    fn = plugins.load_reward(f"{FORMAT},math", "0.1,1")
    texts = ["so \\boxed{4}", "so \\boxed{5}", "no answer here", "\\boxed{4}"]
    rows = [{"id": str(i), "question": "q", "gold": "4"} for i in range(4)]
    sc = fn(texts, rows, truncated=[False, False, False, True])
    assert [s.reward for s in sc] == pytest.approx([1.1, 0.1, 0.0, 0.0])
    assert [s.status for s in sc] == ["correct", "wrong", "no_answer", "no_answer"]   # status from math
    assert sc[0].parts == (1.0, 1.0) and fn.names == ["format_reward", "math_reward"]
    assert [fn.passed(s) for s in sc] == [True, False, False, False]


@pytest.mark.parametrize("out,msg", [([1.0], "1 rewards for 2"), ([1.0, float("nan")], "finite"),
                                     ([1.0, "x"], "not a number"), ("1,1", "returned str"),
                                     ([(1.0, 3), 0.0], "status"), ([True, 0.0], "not a number")])
def test_bad_returns_name_the_function(out, msg):
    mod = types.ModuleType("bad_rewards_mod")
    mod.bad = lambda completions, rows: out
    sys.modules["bad_rewards_mod"] = mod
    fn = plugins.load_reward("bad_rewards_mod:bad")
    with pytest.raises(plugins.RewardError, match=msg) as e:
        fn(["a", "b"], [{"id": "0"}, {"id": "1"}])
    assert "bad_rewards_mod:bad" in str(e.value)


def test_exception_names_the_function_and_the_failing_row():
    mod = types.ModuleType("raising_rewards_mod")

    def picky(completions, rows):
        if any(r["id"] == "r7" for r in rows):
            raise KeyError("tests")
        return [0.0] * len(rows)
    mod.picky = picky
    sys.modules["raising_rewards_mod"] = mod
    fn = plugins.load_reward("raising_rewards_mod:picky")
    with pytest.raises(plugins.RewardError, match=r"raising_rewards_mod:picky raised KeyError.*raises on row id 'r7'"):
        fn(["a", "b"], [{"id": "r1", "question": "x"}, {"id": "r7", "question": "y"}])


# ----------------------------------------------------------------------------- examples/code_reward.py

def test_code_reward_runs_a_real_subprocess_pass_and_fail():
    fn = plugins.load_reward(CODE)
    good = "Here:\n```python\ndef double(x):\n    return 2 * x\n```"
    bad = "```python\ndef double(x):\n    return x + 1\n```"
    rows = [{"id": "a", "question": "double", "tests": "assert double(2) == 4\nassert double(5) == 10"},
            {"id": "b", "question": "double", "tests": ["assert double(2) == 4", "assert double(5) == 10"]}]
    sc = fn([good, bad], rows)
    assert [(s.reward, s.status) for s in sc] == [(1.0, "correct"), (0.0, "wrong")]
    assert fn(["no code at all"], rows[:1])[0].status == "no_answer"


def test_code_reward_time_limit_no_network_temp_dir():
    sys.path.insert(0, os.path.join(HERE, "examples"))
    try:
        import code_reward
    finally:
        sys.path.pop(0)
    r, status, _ = code_reward.run_tests("while True:\n    pass", "", timeout=1)
    assert (r, status) == (0.0, "timeout")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    try:  # a server on this machine's loopback: the child must not reach it
        r, status, out = code_reward.run_tests(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 2)",
                                               "", timeout=5)
    finally:
        srv.close()
    assert status == "wrong", out
    r, status, out = code_reward.run_tests("import os\nopen('x.txt', 'w').write('1')\nprint(os.getcwd())",
                                           "assert os.path.exists('x.txt')", timeout=5)
    assert status == "correct" and "code_reward_" in out and not os.path.exists(out.strip())  # temp dir, removed


# ----------------------------------------------------------------------------- train.py

def test_train_format_plus_math_logs_completions_and_new_metrics(world, tmp_path):
    train.main(_args(world, tmp_path, "--steps", "2", "--reward", f"{FORMAT},math", "--reward-weights", "0.1,1",
                     "--log-completions", "3", "--eval-size", "0"))
    steps = [l for l in _lines(tmp_path) if "reward" in l]
    assert [l["step"] for l in steps] == [1, 2]
    for l in steps:
        assert l["reward"] == pytest.approx(0.1 * l["reward_format_reward"] + l["reward_math_reward"])
        assert 0 <= l["response_len_min"] <= l["response_len"] <= l["response_len_max"]
        assert l["step_s"] >= l["gen_s"] and l["reward_std"] >= 0
    with open(tmp_path / "completions.jsonl") as f:
        recs = [json.loads(x) for x in f]
    assert [r["step"] for r in recs] == [1, 1, 1, 2, 2, 2]
    assert len({r["prompt"] for r in recs[:3]}) == 3          # three different prompts, not one group
    for r in recs:
        assert set(r) >= {"prompt", "completion", "reward", "status", "advantage"}
        assert any(r["reward"] == pytest.approx(v) for v in (0.0, 0.1, 1.0, 1.1))   # rewards are float32
    cfg = json.load(open(tmp_path / "config.json"))
    assert cfg["reward_weights"] == "0.1,1" and cfg["log_completions"] == 3


STATEFUL = '''
import os
D = os.environ["PLUGIN_STATE"]

def boom(completions, rows):
    """Raises from its third call on, on one row (the first row of that call), until D/fixed exists."""
    n = int(open(os.path.join(D, "calls")).read()) if os.path.exists(os.path.join(D, "calls")) else 0
    open(os.path.join(D, "calls"), "w").write(str(n + 1))
    bad = os.path.join(D, "bad")
    if n == 2 and not os.path.exists(bad):
        open(bad, "w").write(rows[0]["id"])
    if os.path.exists(bad) and not os.path.exists(os.path.join(D, "fixed")):
        if any(r["id"] == open(bad).read() for r in rows):
            raise RuntimeError("boom")
    return [float(" 1" in c) for c in completions]
'''


def test_raising_reward_stops_after_a_checkpoint_and_resumes(world, tmp_path, monkeypatch):
    (tmp_path / "boom_reward.py").write_text(STATEFUL)
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("PLUGIN_STATE", str(state))
    out = tmp_path / "out"
    argv = _args(world, out, "--steps", "4", "--save-every", "10", "--eval-size", "0", "--reward",
                 str(tmp_path / "boom_reward.py") + ":boom")
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    bad = (state / "bad").read_text()
    assert "boom_reward.py:boom raised RuntimeError: boom" in str(e.value) and repr(bad) in str(e.value)
    # step 3 failed: steps 1-2 are checkpointed (no --save-every boundary was reached), and load
    assert train.latest_checkpoint(str(out)).endswith("ckpt-000002"), str(e.value)
    (state / "fixed").write_text("")
    train.main(argv + ["--resume"])
    assert [l["step"] for l in _lines(out) if "reward" in l] == [1, 2, 3, 4]


def test_extra_columns_and_rows_without_gold_reach_the_function(world, tmp_path, monkeypatch):
    data = tmp_path / "cols.jsonl"
    with open(data, "w") as f:
        for i in range(8):
            f.write(json.dumps({"question": f"what is {i} plus {i}", "tests": f"t{i}", "meta": {"k": i}}) + "\n")
    (tmp_path / "seen_reward.py").write_text(
        "import json, os\n"
        "def seen(completions, rows):\n"
        "    with open(os.environ['SEEN'], 'a') as f:\n"
        "        f.writelines(json.dumps(sorted(r)) + '\\n' for r in rows)\n"
        "    return [float(len(c) % 2) for c in completions]\n")
    monkeypatch.setenv("SEEN", str(tmp_path / "seen.txt"))
    a = _args(world, tmp_path / "o", "--steps", "1", "--eval-size", "0", "--reward",
              str(tmp_path / "seen_reward.py") + ":seen")
    a[a.index("--dataset") + 1] = str(data)
    train.main(a)
    keys = {tuple(json.loads(l)) for l in open(tmp_path / "seen.txt")}
    assert keys == {("gold", "id", "meta", "question", "tests")}


def test_config_file_yaml_json_explicit_flags_win_and_unknown_keys(world, tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("prompts-per-step: 2\nsteps: 3\ngroup_size: 4\nreward: [math]\ngradient_checkpointing: false\n")
    args = train.parse_args(["--config", str(y), *_args(world, tmp_path, "--steps", "5")])
    assert (args.steps, args.group_size, args.reward) == (5, 8, "math")   # _args passes --group-size 8: it wins
    only = train.parse_args(["--model", str(world / "model"), "--config", str(y)])
    assert (only.prompts_per_step, only.steps, only.group_size) == (2, 3, 4)
    (tmp_path / "bad.json").write_text(json.dumps({"prompts_per_stepp": 2}))
    with pytest.raises(ValueError, match="unknown key 'prompts_per_stepp'.*prompts_per_step"):
        train.parse_args(["--config", str(tmp_path / "bad.json")])
    # the resolved settings a run saves read back as a config, to the same settings
    train.main(_args(world, tmp_path / "run", "--steps", "1", "--eval-size", "0"))
    again = train.parse_args(["--config", str(tmp_path / "run" / "config.json")])
    saved = json.load(open(tmp_path / "run" / "config.json"))
    assert {k: v for k, v in vars(again).items() if k in saved} == saved
    import compare
    assert compare.config_keys(f"--config {y}") == ["prompts_per_step", "steps", "group_size", "reward",
                                                    "gradient_checkpointing"]


def test_keep_checkpoints_peft_exports_and_adapter_config_matches_peft(world, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    train.main(_args(world, tmp_path, "--steps", "4", "--save-every", "1", "--keep-checkpoints", "2",
                     "--save-peft-every", "2", "--eval-size", "0", "--alpha", "8"))
    assert sorted(d for d in os.listdir(tmp_path) if d.startswith("ckpt-")) == ["ckpt-000003", "ckpt-000004"]
    assert sorted(d for d in os.listdir(tmp_path) if d.startswith("peft-")) == ["peft-000002", "peft-000004"]
    cfg = json.load(open(tmp_path / "peft-000004" / "adapter_config.json"))
    ours = AutoModelForCausalLM.from_pretrained(world / "model")
    geora.load_adapter(ours, str(tmp_path))
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(world / "model"),
                                           str(tmp_path / "peft-000004"))
    pc = peft_model.peft_config["default"]
    assert cfg["r"] == pc.r == 2 * 4 and cfg["lora_alpha"] == pc.lora_alpha == pytest.approx(2 * 8)  # rank 2r
    assert set(cfg["target_modules"]) == set(pc.target_modules) == {n.split(".")[-1] for n, _ in geora.adapted(ours)}
    ids = torch.randint(2, 50, (2, 7))
    with torch.no_grad():
        assert torch.allclose(ours(ids).logits, peft_model(ids).logits, atol=1e-5)
    res = eval_mod.main(["--model", str(world / "model"), "--adapter", str(tmp_path / "peft-000002"),
                         "--benchmarks", str(world / "data.jsonl"), "--limit", "2", "--max-new-tokens", "8",
                         "--out", str(tmp_path / "ev")])
    assert res[0][1]["benchmarks"]["data"]["problems"] == 2


def test_wandb_name_entity_and_resume_continue_the_same_run(world, tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("wandb")
    fake.util = types.SimpleNamespace(generate_id=lambda: "abc123")
    fake.init = lambda **k: calls.append(("init", k)) or setattr(fake, "run", types.SimpleNamespace(id=k["id"]))
    fake.log = lambda d, step: calls.append(("log", d, step))
    fake.finish = lambda: calls.append(("finish",))
    fake.Table = lambda columns, data: ("table", columns, data)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    a = ("--wandb", "proj", "--wandb-name", "my-run", "--wandb-entity", "team", "--eval-size", "0",
         "--log-completions", "2")
    train.main(_args(world, tmp_path, "--steps", "2", *a))
    train.main(_args(world, tmp_path, "--steps", "3", "--resume", *a))
    inits = [c[1] for c in calls if c[0] == "init"]
    assert [(k["id"], k["name"], k["entity"], k["project"], k["resume"]) for k in inits] == \
        [("abc123", "my-run", "team", "proj", "allow")] * 2
    tables = [c for c in calls if c[0] == "log" and "completions" in c[1]]
    assert [c[2] for c in tables] == [1, 2, 3] and tables[0][1]["completions"][1][:3] == ["step", "id", "sample"]


def test_tensorboard_writes_scalars_or_names_the_package(world, tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install tensorboard"):
            train.main(_args(world, tmp_path, "--steps", "1", "--eval-size", "0", "--tensorboard"))
        return
    train.main(_args(world, tmp_path, "--steps", "1", "--eval-size", "0", "--tensorboard"))
    assert any(f.startswith("events.") for f in os.listdir(tmp_path / "tensorboard"))


def test_system_prompt_and_no_chat_template():
    import tiny
    from data import format_prompt
    tok = tiny.make_tokenizer()
    assert format_prompt(tok, "q", "Be brief.").startswith("Be brief.\n\nQuestion: q")
    tok.chat_template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    assert format_prompt(tok, "q", "Be brief.").startswith("<system>Be brief.<user>q")
    assert format_prompt(tok, "q").startswith("<user>q")
    assert format_prompt(tok, "q", chat_template=False).startswith("Question: q")
    args = train.parse_args(["--system-prompt", "S", "--no-chat-template"])
    assert train.prompt_of(tok, {"question": "q"}, args).startswith("S\n\nQuestion: q")


def test_eval_with_a_plugin_reward(world, tmp_path):
    res = eval_mod.main(["--model", str(world / "model"), "--benchmarks", str(world / "data.jsonl"), "--limit", "4",
                         "--max-new-tokens", "12", "--out", str(tmp_path), "--reward", f"{FORMAT},math",
                         "--reward-weights", "0.5,1"])
    m = res[0][1]["benchmarks"]["data"]
    recs = [json.loads(l) for l in open(tmp_path / "data.jsonl")]
    assert all(r["reward"] == pytest.approx(0.5 * r["rewards"][0] + r["rewards"][1]) for r in recs)
    assert m["accuracy"] == pytest.approx(sum(r["status"] == "correct" for r in recs) / len(recs))
    assert math.isfinite(m["mean_reward"])


def test_compare_refuses_its_own_flags_in_train_args_and_their_config(tmp_path):
    import compare
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"lr": 1e-5, "max_new_tokens": 64}))
    with pytest.raises(SystemExit, match=r"lr \(in the --config file\)"):
        compare.main(["--model", "m", "--train-args", f"--config {cfg}"])
    with pytest.raises(SystemExit, match="--reward"):
        compare.main(["--model", "m", "--train-args", "--reward math"])
    p = dict(method="geora", dir=str(tmp_path), settings=dict(eval=dict(
        model="m", adapter=None, benchmarks=["gsm8k"], data_dir=None, n=1, temperature=0.0, top_p=1.0,
        max_new_tokens=8, limit=None, seed=0, reward=f"{FORMAT},math", reward_weights="0.1,1", chat_template=False)))
    cmd = compare.eval_job(p, "x", types.SimpleNamespace(eval_batch_size=4))["cmd"]
    assert cmd[cmd.index("--reward") + 1] == f"{FORMAT},math" and "--no-chat-template" in cmd
    assert cmd[cmd.index("--reward-weights") + 1] == "0.1,1"
