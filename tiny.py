"""The tiny world: a ~0.8M-parameter Qwen2 that learns word problems on a laptop CPU, offline.

    python tiny.py            # print the shipped base's accuracies (tiny-base/, committed with the code)
    python tiny.py --force    # rebuild tiny-base/ from scratch (one thread, ~5 min; bit-identical on the same CPU model)

It is the default of train.py and eval.py, so the whole pipeline (prompt template, generate,
checker, GRPO, adapters, checkpoints) runs exactly as on Qwen, in minutes, with no hub access.

What is in it:
- Problems: GSM8K-style word problems with `#### N` answers, in three families.
    "chain" (the RL task): "Ann has 7 apples. She buys 5 more, then gives away 3, and then
      finds 2 more. How many apples does she have now?" 1-4 chained +/- steps (each length
      equally often), operands 1-9, every running total in [1, 18].
    "mul" and "total" (out of domain: pretrained on, never used for RL, so their accuracy after
      RL measures forgetting): "Ann has 3 boxes with 4 apples in each box. How many apples does
      she have?" (factors 2-5 x 2-9) and "Ann has 7 apples and Bob has 5 apples. How many
      apples do they have together?". Pretraining mix: 80% chain, 10% each of the others.
  Each family has a fixed 200-prompt "test" split and a 200-prompt "val" split, drawn from a
  constant seed and excluded, by question string, from every training example (pretraining
  and the RL "train" split).
- Two answer styles in pretraining, chosen at random per example: 30% show the work
  (" 7+5=12, 12-3=9, 9+2=11 #### 11") and 70% answer directly (" #### 11"). Greedy decoding
  follows the majority (direct): right on 1-step chains, mostly wrong on 3-4 step ones, which
  a 0.8M model cannot add up in one go. Sampling at temperature 1 shows the work about 30% of
  the time, one small fact per step, and is right far more often. So GRPO has reward contrast
  to select on: RL at this scale selects a behaviour the base already has; it cannot teach
  missing facts. (With 3-step chains only, the work was not reliably better than answering
  directly and GRPO gained nothing; with mostly 4-step chains the base fell below 30%.)
- Tokenizer: transformers' Qwen2Tokenizer itself (BPE, Qwen's pre-tokenizer regex, byte-level),
  given a tiny vocabulary whose merges spell each template word whole; digits are one token each
  as in Qwen. data.BOXED_INSTRUCTION is one added token, so prompts come from the same
  data.format_prompt that Qwen uses and stay short. Left padding is set at construction
  (transformers 5 does not save it when set afterwards). AutoTokenizer loads it back exactly.
- Model: Qwen2Config(hidden 128, MLP 384, 4 layers, 4 query / 2 KV heads, tied embeddings).
- Pretraining: 600 AdamW steps of 64 fresh problems, loss on the answer tokens (+ EOS) only,
  lr 3e-3 with 50 warm-up steps and a cosine to 10%, always on one thread (BUILD_THREADS),
  whatever the calling script set: the summation order of a matrix product depends on the thread
  count, so before that rule train.py (two threads) and eval.py (one) built two different bases
  (43.0% and 50.5% chain accuracy). Now the same seed on the same torch build and CPU type gives
  the same weights from every script; tiny.json records the seed, a sha256 of the weights and the
  test accuracies. Seed 0 here: chain 43.0%, mul 84.0%, total 88.5%, and `python train.py` lifts
  chain to 80.0 / 79.0 / 76.0% with GRPO seeds 0 / 1 / 2. Another CPU type (another SIMD width)
  can still round differently and land elsewhere; the base also varies with the seed (an earlier
  seed-1 build gave 36%, and its shown work was hardly better than its direct answers, so GRPO
  gained nothing). If a rebuild elsewhere does not improve under `python train.py`, try
  `python tiny.py --seed 1..3 --force`.
"""

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import time

import torch

from data import BOXED_INSTRUCTION, format_prompt

# where train.py and eval.py find the pretrained base: shipped with the code (3 MB), rebuilt by `tiny.py --force`
TINY_BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-base")
CHECK_STEPS = 20  # tiny.json records the weights' hash after this many pretraining steps: a quick rebuild check
TINY_MAX_NEW_TOKENS = 48     # answer budget of the tiny world (the longest shown work is ~25 tokens)
BUILD_THREADS = 1            # pretraining always runs on one thread: the same base from every script
FAMILIES = ("chain", "mul", "total")
EVAL_SEED = 1234            # the fixed held-out splits do not depend on the build or RL seed
N_HELDOUT = 200
SHOW_WORK = 0.3             # fraction of pretraining answers that show the work
MIX = {"chain": 0.8, "mul": 0.1, "total": 0.1}   # pretraining family mix
CHAIN_WEIGHTS = (1, 1, 1, 1)    # how often a chain has 1, 2, 3, 4 steps
MAX_TOTAL = 18                  # every running total stays in [1, MAX_TOTAL]

NAMES = [("Ann", "she"), ("Bob", "he"), ("Cal", "he"), ("Dee", "she"), ("Eve", "she"),
         ("Fay", "she"), ("Gus", "he"), ("Hal", "he"), ("Ivy", "she"), ("Jon", "he"),
         ("Kim", "she"), ("Lee", "he")]
OBJECTS = ["apples", "pens", "cards", "books", "coins", "shells", "stamps", "balls", "cups", "toys"]
UP = ["buys", "finds", "gets", "wins"]                  # "... 5 more"
DOWN = ["gives away", "loses", "sells", "breaks"]
ENDINGS = ["How many {obj} does {pron} have now?", "How many {obj} does {name} have now?",
           "How many {obj} does {pron} have in the end?"]


# ----------------------------------------------------------------------------- problems

def _chain(rng):
    name, pron = rng.choice(NAMES)
    obj = rng.choice(OBJECTS)
    steps = rng.choices(range(1, len(CHAIN_WEIGHTS) + 1), weights=CHAIN_WEIGHTS)[0]
    total = rng.randint(1, 9)
    start, clauses, work = total, [], []
    for _ in range(steps):
        up = total == 1 or (total < MAX_TOTAL and rng.random() < 0.5)
        b = rng.randint(1, min(9, MAX_TOTAL - total) if up else min(9, total - 1))
        clauses.append(f"{rng.choice(UP)} {b} more" if up else f"{rng.choice(DOWN)} {b}")
        new = total + b if up else total - b
        work.append(f"{total}{'+' if up else '-'}{b}={new}")
        total = new
    body = clauses[0] if steps == 1 else ", then ".join(clauses[:-1]) + f", and then {clauses[-1]}"
    ending = rng.choice(ENDINGS).format(obj=obj, pron=pron, name=name)
    q = f"{name} has {start} {obj}. {pron.capitalize()} {body}. {ending}"
    return q, total, ", ".join(work)


def _mul(rng):
    name, pron = rng.choice(NAMES)
    obj = rng.choice(OBJECTS)
    a, b = rng.randint(2, 5), rng.randint(2, 9)
    q = f"{name} has {a} boxes with {b} {obj} in each box. How many {obj} does {pron} have?"
    return q, a * b, f"{a}*{b}={a * b}"


def _total(rng):
    (n1, _), (n2, _) = rng.sample(NAMES, 2)
    obj = rng.choice(OBJECTS)
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    q = f"{n1} has {a} {obj} and {n2} has {b} {obj}. How many {obj} do they have together?"
    return q, a + b, f"{a}+{b}={a + b}"


MAKERS = {"chain": _chain, "mul": _mul, "total": _total}


def _answer(value, work, show):
    """The completion text (after "Answer:"), in one of the two styles."""
    return f" {work} #### {value}" if show else f" #### {value}"


def _fixed_split(family, which):
    """The 200 fixed questions of a held-out split ("test" or "val"): [(q, value)].
    One stream of distinct questions per family: the first 200 are test, the next 200 val."""
    rng = random.Random(f"{EVAL_SEED}-{family}")
    out, seen = [], set()
    while len(out) < 2 * N_HELDOUT:
        q, v, _ = MAKERS[family](rng)
        if q not in seen:
            seen.add(q)
            out.append((q, v))
    return out[:N_HELDOUT] if which == "test" else out[N_HELDOUT:]


def heldout_questions():
    """Every question string of every test and val split: never trained on."""
    return {q for f in FAMILIES for w in ("test", "val") for q, _ in _fixed_split(f, w)}


def tiny_rows(split, n=None, seed=0, family="chain"):
    """Rows {"id", "question", "gold"} of the tiny world.

    split "train": n fresh problems from `seed` (the RL prompts; default n 20000), excluding
    every held-out question. "test" / "val": the fixed 200-prompt held-out splits (seed
    ignored); n takes the first n. family: "chain" (the RL task), "mul" or "total" (out of domain).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {FAMILIES}")
    if split in ("test", "val"):
        n = N_HELDOUT if n is None else n
        if n > N_HELDOUT:
            raise ValueError(f"the tiny {split} split has {N_HELDOUT} prompts; ask for n <= {N_HELDOUT}")
        pairs = _fixed_split(family, split)[:n]
    elif split == "train":
        n = 20000 if n is None else n
        rng, banned, pairs = random.Random(f"train-{seed}-{family}"), heldout_questions(), []
        while len(pairs) < n:
            q, v, _ = MAKERS[family](rng)
            if q not in banned:
                pairs.append((q, v))
    else:
        raise ValueError(f"unknown tiny split {split!r}; use 'train', 'val' or 'test'")
    return [{"id": f"tiny-{family}-{split}-{i}", "question": q, "gold": str(v)}
            for i, (q, v) in enumerate(pairs)]


# ----------------------------------------------------------------------------- tokenizer, model

def make_tokenizer():
    """A Qwen2Tokenizer (BPE, Qwen's pre-tokenizer regex, byte-level) over the tiny world's words.

    The merges spell every word of the templates whole (" apples" is one token; digits stay one
    per token, as Qwen's regex splits them), and data.BOXED_INSTRUCTION is one added token so the
    prompt stays short. Because it is the real Qwen2Tokenizer class, AutoTokenizer loads it back
    exactly (a WordLevel tokenizer next to a qwen2 config does not survive AutoTokenizer in
    transformers 5: it is re-read as Qwen2's BPE and mangles every word)."""
    from tokenizers import AddedToken, Regex, pre_tokenizers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    # every piece a tiny-world text can contain: all template words, plus seeded sample texts
    # for the punctuation and digit contexts
    texts = [" " + " ".join(n for n, _ in NAMES + [(p.capitalize(), 0) for _, p in NAMES]),
             " " + " ".join(OBJECTS + UP + DOWN + ENDINGS), " she he has more then and boxes with in "
             "each box. How many do they have together? 12+3=15, 9-4=5, 3*4=12 #### 10"]
    rng = random.Random(0)
    for _ in range(500):
        for family in FAMILIES:
            q, v, work = MAKERS[family](rng)
            texts.append(f"Question: {q}\n" + "\nAnswer:" + _answer(v, work, True))
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(t)})
    vocab = {"<pad>": 0, "<eos>": 1}
    for c in sorted({c for w in words for c in w}):
        vocab[c] = len(vocab)
    # Left-to-right merges ("Ġ a", "Ġa p", ... "Ġapple s"), words with a leading space (Ġ) first:
    # BPE applies the lowest-ranked merge first, so no other word's merge can cut into a chain.
    merges = []
    for w in sorted(words, key=lambda w: not w.startswith("Ġ")):
        for k in range(2, len(w) + 1):
            if w[:k] not in vocab:
                vocab[w[:k]] = len(vocab)
                merges.append((w[:k - 1], w[k - 1]))
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<eos>",
                         pad_token="<pad>", padding_side="left")
    tok.add_tokens([AddedToken(BOXED_INSTRUCTION, normalized=False)])
    for w in words:  # each word is one token
        assert len(tok._tokenizer.model.tokenize(w)) == 1, w
    return tok


def make_model(tokenizer, seed=0):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=None)
    # eager attention for pretraining: as fast as sdpa at this size, and what the recorded
    # seed-0 build used (the kernels round differently, so they give different base models)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def fingerprint(model):
    """Per tensor (sorted by name): [sum, sum of |w|] in float64. Two CPUs with other vector units round
    differently, so a rebuild elsewhere matches these to ~1e-6 relative where the hash cannot match at all."""
    return [[float(v.double().sum()), float(v.double().abs().sum())] for _, v in sorted(model.state_dict().items())]


def weights_sha256(model):
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- pretraining

def _batch(tokenizer, rng, banned, size):
    """One pretraining batch of fresh problems: input_ids, attention_mask, position_ids, labels."""
    seqs, labels = [], []
    families, weights = zip(*MIX.items())
    while len(seqs) < size:
        family = rng.choices(families, weights)[0]
        q, v, work = MAKERS[family](rng)
        if q in banned:
            continue
        p = tokenizer.encode(format_prompt(tokenizer, q), add_special_tokens=False)
        a = tokenizer.encode(_answer(v, work, rng.random() < SHOW_WORK), add_special_tokens=False)
        a.append(tokenizer.eos_token_id)
        seqs.append(p + a)
        labels.append([-100] * len(p) + a)                          # loss on the answer only
    T = max(map(len, seqs))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (T - len(s)) + s for s in seqs])    # (B, T) left padded
    lab = torch.tensor([[-100] * (T - len(s)) + s for s in labels])
    attn = (torch.arange(T)[None, :] >= torch.tensor([T - len(s) for s in seqs])[:, None]).long()
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    return ids, attn, pos, lab


def pretrain(model, tokenizer, seed=0, steps=600, batch_size=64, lr=3e-3, warmup=50, log_every=100, stop_after=None):
    """AdamW on fresh problems with warmup then cosine decay over `steps`; stop_after=k runs only the first k
    steps of that same schedule (tiny.json's CHECK_STEPS hash, which a test reproduces in seconds)."""
    rng = random.Random(f"pretrain-{seed}")
    banned = heldout_questions()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    model.train()
    t0 = time.time()
    for step in range(steps if stop_after is None else stop_after):
        frac = (step + 1) / warmup if step < warmup else \
            0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        for g in opt.param_groups:
            g["lr"] = lr * frac
        ids, attn, pos, lab = _batch(tokenizer, rng, banned, batch_size)
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 lab[:, 1:].reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"  pretrain step {step + 1}/{steps} loss {loss.item():.4f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    return model


def accuracy(model, tokenizer, split="test", family="chain", n=None):
    """Greedy accuracy of `model` on a held-out split, graded by reward.grade."""
    import grpo
    import reward
    rows = tiny_rows(split, n, family=family)
    prompts = [format_prompt(tokenizer, r["question"]) for r in rows]
    acc, _ = grpo.evaluate(model, tokenizer, prompts, [r["gold"] for r in rows], reward.grade,
                           max_new_tokens=TINY_MAX_NEW_TOKENS)
    return acc


def build_tiny(out_dir=TINY_BASE, seed=0, force=False, steps=600):
    """Build (or reuse) the pretrained tiny model + tokenizer at out_dir; returns out_dir.

    A finished build has out_dir/tiny.json; it is written last and the directory is moved into
    place atomically, so an interrupted build never leaves a half-written model behind.
    """
    if os.path.exists(os.path.join(out_dir, "tiny.json")) and not force:
        return out_dir
    t0 = time.time()
    print(f"building the tiny world in {out_dir} (seed {seed}; once, then cached)", flush=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)  # summation order depends on the thread count: fix it
    try:
        tokenizer = make_tokenizer()
        early = pretrain(make_model(tokenizer, seed), tokenizer, seed=seed, steps=steps, stop_after=CHECK_STEPS)
        model = make_model(tokenizer, seed)
        pretrain(model, tokenizer, seed=seed, steps=steps)
        accs = {f: accuracy(model, tokenizer, "test", f) for f in FAMILIES}
    finally:
        torch.set_num_threads(threads)
    info = {"seed": seed, "steps": steps, "sha256": weights_sha256(model),
            f"sha256_step{CHECK_STEPS}": weights_sha256(early), f"fingerprint_step{CHECK_STEPS}": fingerprint(early),
            "params": sum(p.numel() for p in model.parameters()),
            "test_acc": accs, "build_seconds": round(time.time() - t0, 1),
            "torch": torch.__version__, "threads": BUILD_THREADS}
    tmp = f"{out_dir.rstrip('/')}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    with open(os.path.join(tmp, "tiny.json"), "w") as f:
        json.dump(info, f, indent=1)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
    os.replace(tmp, out_dir)
    print(f"tiny world built in {info['build_seconds']} s: {info['params']} params, greedy test "
          f"accuracy " + ", ".join(f"{f} {a:.1%}" for f, a in accs.items()), flush=True)
    return out_dir


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=TINY_BASE)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    path = build_tiny(args.out, args.seed, args.force, args.steps)
    print(json.dumps(json.load(open(os.path.join(path, "tiny.json"))), indent=1))
