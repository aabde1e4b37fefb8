"""Prompts and datasets shared by train.py and eval.py (placeholder: being written)."""

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def format_prompt(tokenizer, question):
    """One prompt for training and evaluation: the chat template when the tokenizer has one,
    otherwise a plain `Question: ... Answer:` template. Both ask for the answer in \\boxed{}."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": f"{question}\n{BOXED_INSTRUCTION}"}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"Question: {question}\n{BOXED_INSTRUCTION}\nAnswer:"
