"""Prompts and datasets shared by train.py and eval.py.

    from data import format_prompt, load_rows, load_tokenizer
    rows = load_rows("math500", split="test")                  # Hugging Face hub
    rows = load_rows("math500", "test", data_dir="data")       # data/math500/test.jsonl
    rows = load_rows("my.jsonl", question_key="q", answer_key="a")
    rows = load_rows("tiny", "test")                           # the offline tiny world (tiny.py)
    # -> [{"id": "test/precalculus/807.json", "question": "...", "gold": "..."}, ...]
    tokenizer = load_tokenizer("out/tiny-base")                # AutoTokenizer minus a v5 pitfall

Every loader returns the same three fields, so train.py and eval.py never look at dataset shapes.
Choices and simplifications:
- One rule picks the fields of every dataset: the question is the first of `question`, `problem`
  present in a row; the gold is the first of `final_answer`, `answer`, `solution`. That reads all the
  named datasets below, on the hub and in the local layout alike (GSM8K's `answer` is a worked
  solution ending in `#### N`; MATH has only a `solution` whose final \\boxed{} answer is the gold (adjacent
  boxes form one list answer, as reward.gold_answer reads them: "find all solutions"); MATH-500
  has both and `answer` wins; OlympiadBench's `final_answer` is a list). `--question-key` /
  `--answer-key` override the rule for other files.
- Raw golds (strings, AMC floats, OlympiadBench lists, whole solutions) become one gold string with
  reward.gold_answer, the same function the checker is built around, once, at load time. Rows where
  it finds nothing are skipped and the count is printed; a dataset with no usable row is an error.
- Row ids come from the dataset (`unique_id`, `id` or `idx`) when they are unique, otherwise the
  row's position in the file: eval.py resumes by id, so ids must be stable and unique.
- Hub copies: GSM8K is `openai/gsm8k` (main); MATH is EleutherAI/hendrycks_math (its seven subject
  configs concatenated in a fixed order); DeepMath is `zwhe99/DeepMath-103K` (train only);
  MATH-500 is `HuggingFaceH4/MATH-500`; AIME24, AMC23, OlympiadBench and Minerva are widely used
  copies (`HuggingFaceH4/aime_2024`, `math-ai/amc23`, `math-ai/olympiadbench`, `math-ai/minervamath`;
  their field names are taken from public code that loads them: the hub paths are not exercised by
  the offline tests). With `data_dir`, the same names read DATA_DIR/<name>/<split>.jsonl in the
  layout of the project's shared data folder (Minerva's folder there is `minerva_math`).
- The paper's two further math benchmarks, hub only (no local copy in the shared data folder, so
  they are untested offline: the ids, configs and fields below were read from public code and
  dataset cards that load them, never exercised here). AIME25 is `math-ai/aime25` (split `test`,
  30 rows, fields `problem`, `answer` (str), `id`). OlymMATH is `RUC-AIBOX/OlymMATH`, English
  subsets as two benchmarks, `olymmath-en-easy` and `olymmath-en-hard` (configs `en-easy` /
  `en-hard`, split `test`, 200 problems in all, fields `problem`, `answer` (LaTeX), `subject`,
  `unique_id`). Which OlymMATH subset the paper reports is not stated where we could read it:
  both are offered. With `data_dir` they read DATA_DIR/aime25/test.jsonl and
  DATA_DIR/olymmath_en_easy|olymmath_en_hard/test.jsonl, for anyone who saves a copy there.
- No loader touches the network when given a local path or `data_dir`; a hub failure (offline,
  gated, renamed) becomes a ValueError that names --data-dir and a local PATH.jsonl.
"""
import json
import os

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def format_prompt(tokenizer, question, system_prompt=None, chat_template=True):
    """One prompt for training and evaluation: the chat template when the tokenizer has one (and
    chat_template is True), otherwise a plain `Question: ... Answer:` template. Both ask for the answer
    in \\boxed{}. system_prompt: a system turn (chat) or a first paragraph (plain). With no system turn,
    Qwen2.5's template inserts its own default one ("You are Qwen, created by Alibaba Cloud. You are a
    helpful assistant."): pass system_prompt="" to send an empty system turn instead."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
        messages.append({"role": "user", "content": f"{question}\n{BOXED_INSTRUCTION}"})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prefix = f"{system_prompt}\n\n" if system_prompt else ""
    return f"{prefix}Question: {question}\n{BOXED_INSTRUCTION}\nAnswer:"


def load_tokenizer(name_or_path):
    """AutoTokenizer.from_pretrained, except that a tokenizer saved as the generic fast class loads as
    that class. transformers 5 substitutes the model type's own class for some model types
    (Qwen2Tokenizer for any qwen2 config) even when tokenizer_config.json names the generic one, and
    that class re-splits a custom tokenizer.json: a word-level tokenizer silently lost its spaces
    (an early tiny world fell from 72% to 3.5% greedy accuracy)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from transformers.models.auto.tokenization_auto import get_tokenizer_config
    if get_tokenizer_config(name_or_path).get("tokenizer_class") in ("TokenizersBackend",
                                                                     "PreTrainedTokenizerFast"):
        return PreTrainedTokenizerFast.from_pretrained(name_or_path)
    return AutoTokenizer.from_pretrained(name_or_path)


# name -> (hub path, hub configs, {our split: hub split}, local folder)
_MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                  "number_theory", "prealgebra", "precalculus")
DATASETS = {
    "gsm8k": ("openai/gsm8k", ("main",), {"train": "train", "test": "test"}, "gsm8k"),
    "math": ("EleutherAI/hendrycks_math", _MATH_SUBJECTS, {"train": "train", "test": "test"}, "math"),
    "deepmath": ("zwhe99/DeepMath-103K", (None,), {"train": "train"}, "deepmath"),
    "math500": ("HuggingFaceH4/MATH-500", (None,), {"test": "test"}, "math500"),
    "aime24": ("HuggingFaceH4/aime_2024", (None,), {"test": "train"}, "aime24"),
    "amc23": ("math-ai/amc23", (None,), {"test": "test"}, "amc23"),
    "olympiadbench": ("math-ai/olympiadbench", (None,), {"test": "test"}, "olympiadbench"),
    "minerva": ("math-ai/minervamath", (None,), {"test": "test"}, "minerva_math"),
    "aime25": ("math-ai/aime25", (None,), {"test": "test"}, "aime25"),                  # untested offline
    "olymmath-en-easy": ("RUC-AIBOX/OlymMATH", ("en-easy",), {"test": "test"}, "olymmath_en_easy"),
    "olymmath-en-hard": ("RUC-AIBOX/OlymMATH", ("en-hard",), {"test": "test"}, "olymmath_en_hard"),
}
DATASETS["minerva_math"] = DATASETS["minerva"]  # the local folder's name works too
QUESTION_KEYS = ("question", "problem")
ANSWER_KEYS = ("final_answer", "answer", "solution")
ID_KEYS = ("unique_id", "id", "idx")
LOCAL_HELP = ("pass --data-dir DIR holding <name>/<split>.jsonl (the layout of the project's "
              "shared data folder), or a local file as --dataset PATH.jsonl (train.py) / "
              "--benchmarks PATH.jsonl (eval.py)")


def read_jsonl(path):
    """All rows of a JSONL file (blank lines ignored)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i} is not valid JSON ({e})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{i} is not a JSON object")
                rows.append(row)
    return rows


def _hub_rows(name, split):
    path, configs, splits, _ = DATASETS[name]
    if split not in splits:
        raise ValueError(f"dataset {name!r} has no {split!r} split (it has: {', '.join(splits)})")
    import datasets  # only here: the local paths must work without touching the hub
    rows = []
    try:
        for config in configs:
            rows.extend(datasets.load_dataset(path, config, split=splits[split]))
    except Exception as e:  # offline, gated, renamed, ...: all end in the same advice
        raise ValueError(f"could not load {name!r} ({path}, split {splits[split]}) from the "
                         f"Hugging Face hub: {type(e).__name__}: {e}\nWorking offline? "
                         f"{LOCAL_HELP}") from e
    return rows


def _pick(row, keys, override):
    """The value of the first of `keys` present (not None) in `row`, or of `override`; else None."""
    for k in (override,) if override is not None else keys:
        if row.get(k) is not None:
            return row[k]
    return None


def load_rows(name, split="train", data_dir=None, question_key=None, answer_key=None, limit=None,
              keep_columns=False, require_gold=True):
    """Rows of a dataset as [{"id": str, "question": str, "gold": str}], the first `limit` usable ones.
    `name` is a short name from DATASETS, "tiny" (tiny.tiny_rows: split "train", "val" or "test"),
    or a path to a .jsonl file (`split` ignored).
    keep_columns: every other column of the row stays too (a reward plug-in reads tests or metadata; off by
    default because DeepMath's three long solutions per row would cost gigabytes for nothing).
    require_gold=False keeps rows without a usable gold (gold None): a plug-in reward may not need one."""
    if name == "tiny":  # the offline world builds its own rows, golds already strings
        from tiny import tiny_rows
        return tiny_rows(split, n=limit)
    assert split in ("train", "test"), split
    if name.endswith(".jsonl") or os.path.isfile(name):
        if not os.path.isfile(name):
            raise ValueError(f"no such file: {name}; --dataset / --benchmarks PATH.jsonl must exist")
        source, raw = name, read_jsonl(name)
    elif name in DATASETS and data_dir is not None:
        source = os.path.join(data_dir, DATASETS[name][3], f"{split}.jsonl")
        if not os.path.isfile(source):
            raise ValueError(f"no local file {source} for {name!r} ({split}): check --data-dir "
                             f"(it must hold {DATASETS[name][3]}/{split}.jsonl), or pass the file "
                             f"itself as --dataset PATH.jsonl / --benchmarks PATH.jsonl")
        raw = read_jsonl(source)
    elif name in DATASETS:
        source, raw = DATASETS[name][0], _hub_rows(name, split)
    else:
        raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(sorted(DATASETS))}, "
                         f"'tiny', or {LOCAL_HELP} (with --question-key/--answer-key)")
    if not raw:
        raise ValueError(f"{source} has no rows")
    from reward import gold_answer  # here, not at the top: `import data` stays light for tiny.py

    # Dataset ids when they identify rows uniquely, otherwise the position in the file.
    id_key = next((k for k in ID_KEYS if all(r.get(k) is not None for r in raw)), None)
    if id_key is not None and len({str(r[id_key]) for r in raw}) < len(raw):
        id_key = None
    rows, skipped = [], 0
    for i, r in enumerate(raw):
        question, raw_gold = _pick(r, QUESTION_KEYS, question_key), _pick(r, ANSWER_KEYS, answer_key)
        gold = None if raw_gold is None else gold_answer(raw_gold)
        if (gold is None and require_gold) or not isinstance(question, str) or not question.strip():
            skipped += 1
            continue
        row = dict(r) if keep_columns else {}
        row.update(id=str(r[id_key]) if id_key else str(i), question=question, gold=gold)
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    if skipped:
        print(f"{source}: skipped {skipped} rows with no usable gold answer or question")
    if not rows:
        raise ValueError(f"{source}: no row has a usable question and gold answer (fields of the "
                         f"first row: {sorted(raw[0])}); pass --question-key/--answer-key")
    return rows
