#!/usr/bin/env python3
"""Hugging Face side of scripts/gpu-check.sh (needs torch and transformers).

  make --dir DIR         fill DIR (config.json and tokenizer already there) with
                         random weights: transformers' own init of
                         Qwen2ForCausalLM, saved as one bf16 model.safetensors
  compare --model DIR --ours DIR
                         logits of the same tokens through transformers in f32
                         (TF32 off) and f16, against the engine's logits_<dtype>.bin
  peaks                  measured ceilings on this machine: f32 (no TF32) and
                         f16 matrix products, device-to-device copy bandwidth

Each prints one JSON object as its last stdout line.
Relative error of a row: max |ours - hf| / max |hf| over the vocabulary;
`max_rel_err` is the largest over the positions.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time


def fail(msg):
    print(f"gpu_check_hf.py: {msg}", file=sys.stderr)
    sys.exit(1)


try:
    import numpy as np
    import torch
    import transformers
    from transformers import AutoConfig, Qwen2ForCausalLM
except ImportError as e:  # the report names this as the reason the step did not run
    fail(f"needs numpy, torch and transformers: {e}")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def load(path, dtype):
    try:
        return Qwen2ForCausalLM.from_pretrained(path, dtype=dtype).to(DEVICE).eval()
    except TypeError:  # transformers < 4.56 spells it torch_dtype
        return Qwen2ForCausalLM.from_pretrained(path, torch_dtype=dtype).to(DEVICE).eval()


def make(args):
    cfg_path = os.path.join(args.dir, "config.json")
    if not os.path.exists(cfg_path):
        fail(f"{cfg_path}: missing (gpu_check.ts writes it before calling make)")
    t0 = time.time()
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(args.dir)
    with torch.device(DEVICE):
        model = Qwen2ForCausalLM(config)
    model = model.to(torch.bfloat16)
    # Nonzero q/k/v biases and norm weights away from 1, so the comparison exercises them.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.02)
            elif "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
    # Only the weights move into DIR: save_pretrained would rewrite config.json
    # (transformers 5: rope_parameters, dtype) and generation_config.json.
    tmp = tempfile.mkdtemp(dir=args.dir)
    model.save_pretrained(tmp, safe_serialization=True, max_shard_size="100GB")
    os.replace(os.path.join(tmp, "model.safetensors"), os.path.join(args.dir, "model.safetensors"))
    shutil.rmtree(tmp)
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"params": n, "seconds": round(time.time() - t0, 1), "device": DEVICE, "transformers": transformers.__version__}))


def compare(args):
    tokens = json.load(open(os.path.join(args.ours, "tokens.json")))
    ids = torch.tensor([tokens], device=DEVICE)
    out = {"device": DEVICE, "torch": torch.__version__, "transformers": transformers.__version__, "tokens": len(tokens)}
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    hf = {}
    for name, dtype in (("f32", torch.float32), ("f16", torch.float16)):
        if name == "f16" and DEVICE == "cpu":
            continue  # f16 matmuls on the CPU are slow and not what a GPU computes
        model = load(args.model, dtype)
        with torch.no_grad():
            hf[name] = model(ids).logits[0].float().cpu().numpy().astype(np.float64)
        del model
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    V = hf["f32"].shape[1]
    for ours_dtype in ("f32", "f16"):
        path = os.path.join(args.ours, f"logits_{ours_dtype}.bin")
        if not os.path.exists(path):
            continue
        ours = np.fromfile(path, dtype="<f4").astype(np.float64).reshape(len(tokens), V)
        for ref_dtype, ref in hf.items():
            d = np.abs(ours - ref)
            rel = d.max(axis=1) / np.maximum(np.abs(ref).max(axis=1), 1e-30)
            out[f"ours_{ours_dtype}_vs_hf_{ref_dtype}"] = {
                "max_rel_err": float(rel.max()),
                "max_abs_err": float(d.max()),
                "finite": bool(np.isfinite(ours).all()),
                "argmax_agree": float((ours.argmax(axis=1) == ref.argmax(axis=1)).mean()),
            }
    print(json.dumps(out))


def peaks(args):
    if DEVICE != "cuda":
        fail("peaks needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")

    def timed(fn, reps):
        fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000 / reps

    out = {"device": torch.cuda.get_device_name(0)}
    n = 8192
    for name, dtype in (("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        s = timed(lambda: a @ b, 10 if dtype == torch.float32 else 50)
        out[f"matmul_{name}_tflops"] = 2 * n**3 / s / 1e12
        del a, b
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    s = timed(lambda: y.copy_(x), 20)
    out["copy_gbps"] = 2 * x.numel() / s / 1e9  # read + write bytes
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--dir", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--model", required=True)
    c.add_argument("--ours", required=True)
    sub.add_parser("peaks")
    args = p.parse_args()
    {"make": make, "compare": compare, "peaks": peaks}[args.cmd](args)


if __name__ == "__main__":
    main()
