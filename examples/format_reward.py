"""A format reward to combine with the built-in math reward (docs/training.md, "Reward plug-ins").

    python train.py --reward examples/format_reward.py:format_reward,math --reward-weights 0.1,1

format_reward gives 1.0 to a completion whose final answer the math checker can find (a closed \\boxed{...},
a GSM8K `#### N` line or an explicit "the answer is ..."), 0.0 otherwise, and no status: the combined
status (no_answer / correct / wrong) comes from `math`, the next function in --reward. Choices:
- It reuses reward.extract_answer, so "well formatted" means exactly "the checker can read it": a format
  reward that accepted answers the checker cannot grade would pay the policy for ungradable text.
- A small weight (0.1 above): it helps a model that has not learnt the format yet get any contrast, and
  stops mattering once every completion has it (its reward_format_reward mean in metrics.jsonl then sits
  at 1.0 and it adds the same to every completion of a group: zero advantage).
- Hedging several boxed answers ("\\boxed{3} or \\boxed{4}") earns the format reward (it is readable) and
  never the math reward (a list never equals a single gold): the math weight must dominate.
"""
from reward import extract_answer


def format_reward(completions, rows):
    """1.0 when the checker finds a final answer in the completion, else 0.0 (rows are not needed)."""
    out = []
    for text in completions:
        try:
            found = extract_answer(text) is not None
        except Exception:  # extract_answer is meant never to raise; a bug there must not look like a format error
            found = False
        out.append(1.0 if found else 0.0)
    return out
