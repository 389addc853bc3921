#!/usr/bin/env python3
"""Record token ids and chat renderings of tests/fixtures/qwen2.5-tokenizer with
Hugging Face transformers, as the oracle for Tritium's tokenizer tests.

    python3 scripts/make_tokenizer_fixture.py     # writes .../qwen2.5-tokenizer/expected.json
"""
import json
import os

from transformers import AutoTokenizer

HERE = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "qwen2.5-tokenizer")
TEXTS = [
    "Hello, world!",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "Ternary weights: -1, 0, +1. Ünïcödé ✓ 日本語 🚀",
    "<|im_start|>user\nhi<|im_end|>",
    "   leading spaces and trailing\t\n",
]
CHATS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a prime."},
     {"role": "assistant", "content": "7"}, {"role": "user", "content": "Another?"}],
]


def main():
    tok = AutoTokenizer.from_pretrained(HERE)
    out = {
        "encode": [{"text": t, "ids": tok.encode(t, add_special_tokens=False)} for t in TEXTS],
        "chat": [],
    }
    for m in CHATS:
        text = tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
        out["chat"].append({"messages": m, "text": text, "ids": tok(text, add_special_tokens=False)["input_ids"]})
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
    print("wrote", os.path.join(HERE, "expected.json"))


if __name__ == "__main__":
    main()
