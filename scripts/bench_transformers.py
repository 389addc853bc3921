#!/usr/bin/env python3
"""The side-by-side peer for `tritium bench`: Hugging Face transformers in bf16 on
CUDA, random weights of the same Qwen2.5 shapes, prefill of a 512-token prompt
and greedy decoding of 128 tokens, one JSON object per shape.

    python3 scripts/bench_transformers.py --shapes 0.5b,1.5b,7b,32b -p 512 -n 128 -r 3
"""
import argparse
import json
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

# hidden, intermediate, layers, heads, kv heads, vocab, tied (as tritium's synth shapes)
SHAPES = {
    "0.5b": (896, 4864, 24, 14, 2, 151936, True),
    "1.5b": (1536, 8960, 28, 12, 2, 151936, True),
    "3b": (2048, 11008, 36, 16, 2, 151936, True),
    "7b": (3584, 18944, 28, 28, 4, 152064, False),
    "14b": (5120, 13824, 48, 40, 8, 152064, False),
    "32b": (5120, 27648, 64, 40, 8, 152064, False),
}


def build(shape):
    h, i, layers, heads, kv, vocab, tied = SHAPES[shape]
    config = Qwen2Config(hidden_size=h, intermediate_size=i, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, vocab_size=vocab, tie_word_embeddings=tied,
                         max_position_embeddings=32768, rope_theta=1e6)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    return model.eval()


@torch.inference_mode()
def run(model, p, n, vocab):
    prompt = torch.randint(0, vocab, (1, p), device="cuda")
    torch.cuda.synchronize()
    t = time.perf_counter()
    model(prompt, use_cache=False)
    torch.cuda.synchronize()
    prefill_s = time.perf_counter() - t
    t = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    torch.cuda.synchronize()
    total_s = time.perf_counter() - t
    assert out.shape[1] == p + n
    # generate() also runs the prompt; subtract one prefill to get the decode time.
    return prefill_s, max(total_s - prefill_s, 1e-9)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="0.5b,1.5b,7b,32b")
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-r", type=int, default=3)
    args = ap.parse_args()
    for shape in args.shapes.split(","):
        model = build(shape)
        vocab = SHAPES[shape][5]
        run(model, 16, 4, vocab)  # warm-up
        for rep in range(args.r):
            prefill_s, decode_s = run(model, args.p, args.n, vocab)
            print(json.dumps({"model": f"qwen2.5-{shape} (transformers bf16)", "device": torch.cuda.get_device_name(),
                              "prompt_tokens": args.p, "gen_tokens": args.n, "prefill_tok_s": args.p / prefill_s,
                              "decode_tok_s": args.n / decode_s, "repetition": rep,
                              "gpu_memory_bytes": torch.cuda.max_memory_allocated()}), flush=True)
        del model
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


if __name__ == "__main__":
    main()
