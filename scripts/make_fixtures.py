#!/usr/bin/env python3
"""Generate tiny random ternary (BitNet b1.58) Qwen2 test fixtures with reference outputs.

Each fixture folder holds a packed checkpoint (`model.safetensors`, or shards plus
`model.safetensors.index.json`), `config.json`, `logits.npy` (float32
[prompt_len, vocab], transformers' logits for every prompt position) and `expected.json`
({"prompt_ids", "greedy_ids", "max_new_tokens", "max_abs_logit", "description"}).
`greedy_ids` holds only the newly generated ids (never the prompt); generation may stop
early at `eos_token_id` (= vocab - 1), in which case the eos id is the last entry.

Packed format: every q/k/v/o/gate/up/down projection (and, with --pack-embeddings,
embed_tokens and lm_head) is stored as U8 [out, in/4]; byte = sum_j 3^j * (t_j + 1) for
the trits of columns 4k..4k+3. Companion `<name>.scales` [out, in/64] (F32/BF16/F16)
gives w[r, c] = t[r, c] * scales[r, c // 64]. Quantization per 64-group: scale =
f32(sum|w| in f64 / 64), 1.0 for an all-zero group; t = clamp(round_half_even(w / scale
in f32), -1, 1). The reference model is run by transformers (float32, eager attention)
on exactly the dequantized weights the file describes.

Usage:
    python3 scripts/make_fixtures.py --all              # regenerate tests/fixtures/*
    python3 scripts/make_fixtures.py --out /tmp/m --hidden 256 --layers 4 --heads 4 \\
        --kv-heads 2 --intermediate 512 --vocab 1024 --untied --scale-dtype bf16 \\
        --linear-norms rms_norm --shards 3 --prompt-len 32 --max-new-tokens 20
    python3 scripts/make_fixtures.py --dense --out /tmp/d   # dense f32 checkpoint plus
        # packed_reference.safetensors, for testing a quantizer byte for byte
Run with --help for all flags. Every written folder is re-loaded and checked by an
independent decoder before the script exits.
"""
import argparse
import glob
import json
import math
import os

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

GROUP = 64
INIT_STD = 0.15  # larger than Qwen2's 0.02 so attention is far from uniform
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
FIXTURES = {
    "gqa-tied": "--hidden 128 --layers 2 --heads 4 --kv-heads 2 --intermediate 256 "
                "--vocab 512 --tied --rope-theta 10000 --prompt-len 24 --max-new-tokens 16 --seed 1",
    "mha-untied-bf16-rmsnorm": "--hidden 128 --layers 2 --heads 4 --kv-heads 4 --intermediate 192 "
                "--vocab 384 --untied --dense-dtype bf16 --scale-dtype bf16 --linear-norms rms_norm "
                "--shards 2 --rope-theta 1e6 --prompt-len 20 --max-new-tokens 12 --seed 2",
    "mqa-packed-norm": "--hidden 192 --layers 3 --heads 3 --kv-heads 1 --intermediate 320 "
                "--vocab 448 --untied --pack-embeddings --scale-dtype f16 --linear-norms norm "
                "--old-config-style --rope-theta 1e6 --prompt-len 16 --max-new-tokens 10 --seed 3",
    "long-prompt": "--hidden 64 --layers 1 --heads 2 --kv-heads 1 --intermediate 128 --vocab 256 "
                "--tied --pack-embeddings --max-pos 512 --prompt-len 300 --max-new-tokens 8 --seed 4",
    "dense-f32": "--dense --hidden 128 --layers 2 --heads 4 --kv-heads 2 --intermediate 256 "
                "--vocab 256 --untied --seed 5",
}


def quantize(w):
    """Ternary-quantize a float32 [out, in] matrix: returns (trits int8 [out, in], scales f32 [out, in/64])."""
    rows, cols = w.shape
    g = w.float().reshape(rows, cols // GROUP, GROUP)
    scales = (g.double().abs().sum(-1) / GROUP).float()
    scales[scales == 0] = 1.0
    trits = torch.clamp(torch.round(g / scales[..., None]), -1, 1)
    return trits.reshape(rows, cols).to(torch.int8), scales


def pack(trits):
    """Pack int8 trits [out, in] into base-3 bytes uint8 [out, in/4] (column 4k is the lowest digit)."""
    d = (trits.to(torch.int32) + 1).reshape(trits.shape[0], -1, 4)
    return (d * torch.tensor([1, 3, 9, 27], dtype=torch.int32)).sum(-1).to(torch.uint8)


def make_config(a):
    """Build the Qwen2Config described by the command-line arguments."""
    return Qwen2Config(
        vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
        num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
        max_position_embeddings=a.max_pos, rope_theta=a.rope_theta, rms_norm_eps=a.rms_eps,
        tie_word_embeddings=a.tied, initializer_range=INIT_STD, bos_token_id=0,
        eos_token_id=a.vocab - 1, architectures=["Qwen2ForCausalLM"])


def new_model(config):
    """Instantiate a float32, eager-attention Qwen2ForCausalLM in eval mode."""
    model = Qwen2ForCausalLM._from_config(config, attn_implementation="eager", dtype=torch.float32)
    return model.float().eval()


def randomize_norms_and_biases(model):
    """Give RMSNorm weights values around 1 and biases small random values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))


def attach_linear_norms(model, tensors, eps):
    """Register a forward pre-hook RMSNorm on every projection that has a `<P>.{rms_norm,norm}.weight`."""
    for name, module in model.named_modules():
        if not any(name.endswith(lin) for lin in LINEARS):
            continue
        for style in ("rms_norm", "norm"):
            key = f"{name}.{style}.weight"
            if key in tensors:
                w = tensors[key].float()
                def hook(mod, args, w=w):
                    x = args[0].float()
                    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w,)
                module.register_forward_pre_hook(hook)


def write_checkpoint(tensors, out, shards):
    """Save tensors as one model.safetensors or N shards plus an index (scales stay beside their weight)."""
    if shards <= 1:
        save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
        return ["model.safetensors"]
    units = [[n] + ([n + ".scales"] if n + ".scales" in tensors else [])
             for n in tensors if not n.endswith(".scales")]
    nbytes = lambda t: t.numel() * t.element_size()
    total = sum(nbytes(t) for t in tensors.values())
    files, weight_map, acc, shard = [], {}, 0, 0
    for unit in units:
        weight_map.update({n: shard for n in unit})
        acc += sum(nbytes(tensors[n]) for n in unit)
        if acc >= total * (shard + 1) / shards and shard < shards - 1:
            shard += 1
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: t for n, t in tensors.items() if weight_map[n] == i}
        assert part, "too many shards for this model"
        save_file(part, os.path.join(out, fname), metadata={"format": "pt"})
        files.append(fname)
    index = {"metadata": {"total_size": total},
             "weight_map": {n: files[s] for n, s in sorted(weight_map.items())}}
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    return files + ["model.safetensors.index.json"]


def write_config(config, out, a, quantized=True):
    """Write config.json in the current transformers style or (--old-config-style) the older Qwen2.5 style."""
    cfg = json.loads(config.to_json_string())
    cfg["dtype"] = "bfloat16" if quantized and a.dense_dtype == "bf16" else "float32"
    if a.old_config_style:
        cfg["rope_theta"] = cfg.pop("rope_parameters")["rope_theta"]
        cfg["rope_scaling"] = None
        cfg["torch_dtype"] = cfg.pop("dtype")
        cfg.pop("layer_types", None)
    elif quantized:
        cfg["quantization_config"] = {"quant_method": "bitnet_158", "bits": 1.58,
                                      "group_size": GROUP, "packing": "base3_columns"}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dict(sorted(cfg.items())), f, indent=2)


def run_reference(model, a):
    """Return (prompt ids, logits [prompt_len, vocab], new greedy ids, smallest top-2 margin of greedy steps)."""
    gen = torch.Generator().manual_seed(a.seed)
    prompt = torch.randint(0, a.vocab - 1, (1, a.prompt_len), generator=gen)
    with torch.no_grad():
        logits = model(prompt).logits[0].float().numpy()
        out = model.generate(prompt, do_sample=False, max_new_tokens=a.max_new_tokens,
                             eos_token_id=model.config.eos_token_id, pad_token_id=0,
                             output_logits=True, return_dict_in_generate=True)
    new_ids = out.sequences[0, a.prompt_len:].tolist()
    margin = min(float(torch.topk(l[0], 2).values.diff().abs()) for l in out.logits)
    return prompt[0].tolist(), logits, new_ids, margin


def make_packed(a, out):
    """Build, quantize, run and write one packed fixture; returns the list of written files."""
    torch.manual_seed(a.seed)
    config = make_config(a)
    model = new_model(config)
    randomize_norms_and_biases(model)
    dense_dt, scale_dt = DTYPES[a.dense_dtype], DTYPES[a.scale_dtype]
    tensors = {}
    packed = {f"model.layers.{i}.{p}.weight" for i in range(a.layers) for p in LINEARS}
    if a.pack_embeddings:
        packed |= {"model.embed_tokens.weight", "lm_head.weight"}
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if a.tied and name == "lm_head.weight":
                continue
            if name in packed:
                trits, scales = quantize(p)
                stored = scales.to(scale_dt)
                tensors[name], tensors[name + ".scales"] = pack(trits), stored
                p.copy_(trits.float() * stored.float().repeat_interleave(GROUP, dim=1))
            else:
                tensors[name] = p.to(dense_dt).contiguous()
                p.copy_(tensors[name].float())
        if a.linear_norms != "none":
            for i in range(a.layers):
                for lin in LINEARS:
                    size = a.intermediate if lin == "mlp.down_proj" else a.hidden
                    w = (1 + 0.1 * torch.randn(size)).to(dense_dt)
                    tensors[f"model.layers.{i}.{lin}.{a.linear_norms}.weight"] = w
    attach_linear_norms(model, tensors, a.rms_eps)
    prompt, logits, greedy, margin = run_reference(model, a)
    os.makedirs(out, exist_ok=True)
    files = write_checkpoint(tensors, out, a.shards)
    write_config(config, out, a)
    np.save(os.path.join(out, "logits.npy"), logits)
    desc = (f"random Qwen2: hidden {a.hidden}, {a.layers} layers, {a.heads} heads / {a.kv_heads} kv, "
            f"intermediate {a.intermediate}, vocab {a.vocab}, {'tied' if a.tied else 'untied'}, "
            f"dense {a.dense_dtype}, scales {a.scale_dtype}, packed embeddings {a.pack_embeddings}, "
            f"linear norms {a.linear_norms}, {a.shards} shard(s), rope_theta {a.rope_theta:g}, "
            f"{'old' if a.old_config_style else 'new'} config style, seed {a.seed}; "
            f"smallest greedy top-2 logit margin {margin:.4f}")
    expected = {"prompt_ids": prompt, "greedy_ids": greedy, "max_new_tokens": a.max_new_tokens,
                "max_abs_logit": float(np.abs(logits).max()), "description": desc}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print(f"  greedy {greedy}\n  {desc}")
    return files + ["config.json", "logits.npy", "expected.json"]


def plant_ties(w):
    """Overwrite groups of a weight with exact-tie cases: w/scale = +-0.5, +-1, +-1.5 exactly, and all zeros."""
    pattern = torch.tensor([0.5] * 16 + [1.5] * 16 + [1.0] * 32)  # mean |v| = 1
    for row, unit in ((0, 2.0 ** -5), (1, 0.75 * 2.0 ** -6)):
        signs = torch.where(torch.rand(GROUP) < 0.5, -1.0, 1.0)
        w[row, :GROUP] = (pattern[torch.randperm(GROUP)] * signs * unit).float()
    w[2, :GROUP] = 0.0


def make_dense(a, out):
    """Write a dense float32 checkpoint plus packed_reference.safetensors made by `quantize`."""
    torch.manual_seed(a.seed)
    config = make_config(a)
    model = new_model(config)
    randomize_norms_and_biases(model)
    tensors, ref = {}, {}
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if a.tied and name == "lm_head.weight":
                continue
            if name.endswith(".weight") and p.dim() == 2:
                plant_ties(p)
                trits, scales = quantize(p)
                ref[name], ref[name + ".scales"] = pack(trits), scales
            tensors[name] = p.contiguous()
    os.makedirs(out, exist_ok=True)
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    save_file(ref, os.path.join(out, "packed_reference.safetensors"), metadata={"format": "pt"})
    write_config(config, out, a, quantized=False)
    return ["model.safetensors", "packed_reference.safetensors", "config.json"]


def np_unpack(b):
    """Independent decoder: uint8 [out, in/4] -> int trits [out, in]."""
    b = b.astype(np.int64)
    assert b.max() <= 80
    return np.stack([(b // 3 ** k) % 3 - 1 for k in range(4)], axis=-1).reshape(b.shape[0], -1)


def verify_packed(out):
    """Reload a packed fixture from disk into a fresh model and check logits and greedy ids."""
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    tensors = {}
    for path in sorted(glob.glob(os.path.join(out, "model*.safetensors"))):
        tensors.update(load_file(path))
    if os.path.exists(os.path.join(out, "model.safetensors.index.json")):
        with open(os.path.join(out, "model.safetensors.index.json")) as f:
            wm = json.load(f)["weight_map"]
        assert set(wm) == set(tensors)
        assert all(wm[n] == wm[n[:-len(".scales")]] for n in wm if n.endswith(".scales"))
    config = Qwen2Config(**cfg)
    torch.manual_seed(12345)
    model = new_model(config)
    state = {}
    for name, t in tensors.items():
        if name + ".scales" in tensors:
            s = tensors[name + ".scales"].float().numpy()
            w = np_unpack(t.numpy()) * np.repeat(s, GROUP, axis=1)
            state[name] = torch.from_numpy(w.astype(np.float32))
        elif not name.endswith(".scales"):
            state[name] = t.float()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) <= ({"lm_head.weight"} if config.tie_word_embeddings else set()), missing
    assert all(".rms_norm." in n or "_proj.norm." in n for n in unexpected), unexpected
    attach_linear_norms(model, tensors, config.rms_norm_eps)
    with open(os.path.join(out, "expected.json")) as f:
        exp = json.load(f)
    prompt = torch.tensor([exp["prompt_ids"]])
    with torch.no_grad():
        logits = model(prompt).logits[0].numpy()
        seq = model.generate(prompt, do_sample=False, max_new_tokens=exp["max_new_tokens"],
                             eos_token_id=config.eos_token_id, pad_token_id=0)
    diff = np.abs(logits - np.load(os.path.join(out, "logits.npy"))).max()
    assert diff < 1e-5, diff
    assert seq[0, len(exp["prompt_ids"]):].tolist() == exp["greedy_ids"]
    print(f"  verified: logits max abs diff {diff:.2e}, greedy ids match")


def verify_dense(out):
    """Re-quantize the dense checkpoint with numpy (math.fsum scales) and compare with packed_reference."""
    dense, ref = load_file(os.path.join(out, "model.safetensors")), \
        load_file(os.path.join(out, "packed_reference.safetensors"))
    for name, t in dense.items():
        if t.dim() != 2:
            continue
        g = t.numpy().reshape(t.shape[0], -1, GROUP)
        s = np.array([[np.float32(math.fsum(abs(float(v)) for v in grp) / GROUP) for grp in row]
                      for row in g], dtype=np.float32)
        s[s == 0] = 1.0
        trits = np.clip(np.round(g / s[..., None]), -1, 1).reshape(t.shape)
        assert np.array_equal(ref[name + ".scales"].numpy(), s), name
        assert np.array_equal(np_unpack(ref[name].numpy()), trits), name
        tie = t.numpy()[0, :GROUP] / s[0, 0]
        assert np.array_equal(trits[0, :GROUP], np.where(np.abs(tie) == 0.5, 0, np.sign(tie)))
        assert s[2, 0] == 1.0 and not trits[2, :GROUP].any()
    print(f"  verified: {len(ref) // 2} packed reference tensors match an independent quantizer")


def parser():
    """Command-line interface."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="output folder for one model")
    p.add_argument("--all", action="store_true", help="regenerate every fixture in tests/fixtures/")
    p.add_argument("--dense", action="store_true", help="write a dense f32 checkpoint + packed_reference")
    for flag, typ, default in [("--hidden", int, 128), ("--layers", int, 2), ("--heads", int, 4),
                               ("--kv-heads", int, 2), ("--intermediate", int, 256), ("--vocab", int, 512),
                               ("--max-pos", int, 128), ("--rope-theta", float, 10000.0),
                               ("--rms-eps", float, 1e-6), ("--shards", int, 1), ("--prompt-len", int, 24),
                               ("--max-new-tokens", int, 16), ("--seed", int, 1)]:
        p.add_argument(flag, type=typ, default=default)
    p.add_argument("--tied", dest="tied", action="store_true", default=True)
    p.add_argument("--untied", dest="tied", action="store_false")
    p.add_argument("--dense-dtype", choices=["f32", "bf16"], default="f32")
    p.add_argument("--scale-dtype", choices=["f32", "bf16", "f16"], default="f32")
    p.add_argument("--pack-embeddings", action="store_true")
    p.add_argument("--linear-norms", choices=["none", "rms_norm", "norm"], default="none")
    p.add_argument("--old-config-style", action="store_true")
    return p


def generate(a, out):
    """Write and verify one fixture folder."""
    print(f"{out}:")
    assert a.hidden % GROUP == 0 and a.intermediate % GROUP == 0, "dims must be multiples of 64"
    files = make_dense(a, out) if a.dense else make_packed(a, out)
    (verify_dense if a.dense else verify_packed)(out)
    for f in files:
        print(f"  wrote {os.path.join(out, f)} ({os.path.getsize(os.path.join(out, f))} bytes)")


def main():
    args = parser().parse_args()
    if args.all:
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
        for name, flags in FIXTURES.items():
            generate(parser().parse_args(flags.split()), os.path.normpath(os.path.join(root, name)))
    elif args.out:
        generate(args, args.out)
    else:
        parser().error("pass --out DIR or --all")


if __name__ == "__main__":
    main()
