#!/usr/bin/env python
"""Billion-parameter backbones: peak training memory and step time against peft LoRA, and the estimate.

Llama-shaped backbones of the real configurations (Qwen2.5-0.5B, Llama 3.2 1B and 3B,
Llama 3 8B), with random weights (no download: memory and speed do not need trained
weights) and the real vocabularies. For each size, precision (float32, bfloat16, nf4),
method (C-Poly 4+1, Poly, shared LoRA, peft LoRA) and gradient checkpointing (off, on), a
fresh Python process fits one text-to-text estimator and reports:

* ``peak``: the peak memory of a training step. On CUDA, ``torch.cuda.max_memory_allocated``
  during a fit of three steps whose backbone is already loaded (the weights count: they
  are held). On the CPU, the bytes the C allocator has in use (glibc's ``mallinfo2``, which
  torch's CPU tensors go through), sampled every 2 ms during that fit, less the bytes in
  use before it, plus the loaded weights.
* ``step``: seconds per training step, from fits of one and three steps after a warm-up fit
  (their difference over two), and ``generate``: seconds to generate ``--new-tokens`` tokens for one batch.
* ``estimate``: ``estimator.estimate_memory(...).total`` for the same batch, made before
  loading any weight, and its ratio to the measured peak.

The table prints ratios against peft LoRA at the same size, precision and checkpointing.

Usage::

    python benchmarks/big_backbones.py --sizes 0.5B --precisions float32 bfloat16 --batch 2 --length 128
    python benchmarks/big_backbones.py --sizes 0.5B 1B 3B 8B --batch 8 --length 512   # on a GPU
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# The real shapes (config.json of each model); every size has its real vocabulary.
SIZES = {
    "0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "1B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "3B": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "8B": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}
METHODS = ("C-Poly", "Poly", "LoRA shared", "peft LoRA")
PRECISIONS = {"float32": ("float32", None), "bfloat16": ("bfloat16", None), "nf4": ("bfloat16", "nf4")}


def config_folder(size: str, folder: Path) -> Path:
    """A folder with only the configuration and tokenizer of ``size``: enough for ``estimate_memory``."""
    if not (folder / "config.json").exists():
        from transformers import LlamaConfig

        from skillfit.datasets import _tiny

        LlamaConfig(max_position_embeddings=4096, rope_theta=500000.0, **SIZES[size]).save_pretrained(folder)
        _tiny._tokenizer([f"w{i}" for i in range(200)], max_positions=4096).save_pretrained(folder)
    return folder


def planning_table(models: Path, batch: int, length: int, n_tasks: int) -> str:
    """Predicted peak training memory (GiB) by size, precision and checkpointing, for C-Poly 4+1 and peft LoRA."""
    gib = 1024**3
    rows = [f"| backbone | precision | checkpointing | C-Poly 4+1, {n_tasks} tasks | shared LoRA | fits in |",
            "|---|---|---|---:|---:|---|"]
    for size in SIZES:
        backbone = str(config_folder(size, models / f"config-{size}"))
        for precision in ("bfloat16", "nf4"):
            for checkpointing in (False, True):
                totals = [make_estimator(method, backbone, precision, checkpointing, batch, length, 16).estimate_memory(
                    n_tasks, batch_size=batch, sequence_length=length, target_length=16).total / gib
                    for method in ("C-Poly", "LoRA shared")]
                fits = next((f"{card} ({memory} GB)" for card, memory in GPUS if totals[0] * gib < memory * 1e9 * 0.95),
                            "none listed")
                rows.append(f"| Llama-shaped {size} | {precision} | {'on' if checkpointing else 'off'} "
                            f"| {totals[0]:.1f} | {totals[1]:.1f} | {fits} |")
    return "\n".join(rows)


# Cards a user may hold, smallest first (their memory in GB; 5% is kept free for the CUDA context).
GPUS = (("RTX 4060 Ti", 16), ("RTX 4090 / A10", 24), ("L40S / A6000", 48), ("A100 / H100", 80), ("H200", 141))


def build_backbone(size: str, folder: Path) -> Path:
    """A saved Llama-shaped model of ``size`` with random bfloat16 weights and a small offline tokenizer."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from skillfit.datasets import _tiny

    config = LlamaConfig(max_position_embeddings=4096, rope_theta=500000.0, **SIZES[size])
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    model.tie_weights()  # to_empty gives the input and output embeddings their own memory: tie them again
    generator = torch.Generator().manual_seed(0)
    for param in model.parameters():
        param.data.normal_(0.0, 0.02, generator=generator)
    model.save_pretrained(folder)
    words = [f"w{i}" for i in range(200)]
    _tiny._tokenizer(words, max_positions=4096).save_pretrained(folder)
    return folder


def make_estimator(method: str, backbone: str, precision: str, checkpointing: bool, batch: int, length: int,
                   new_tokens: int):
    from peers import PeftSeq2Seq
    from skillfit import CPolySeq2Seq, LoRASeq2Seq, PolySeq2Seq

    dtype, quantization = PRECISIONS[precision]
    common = dict(backbone=backbone, backbone_dtype=dtype, quantization=quantization, rank=8, batch_size=batch,
                  max_length=length, max_target_length=16, max_new_tokens=new_tokens, max_epochs=1,
                  gradient_checkpointing=checkpointing, random_state=0, device="auto")
    return {"C-Poly": lambda: CPolySeq2Seq(n_shared=4, n_exclusive=1, **common),
            "Poly": lambda: PolySeq2Seq(n_skills=8, **common),
            "LoRA shared": lambda: LoRASeq2Seq(sharing="shared", **common),
            "peft LoRA": lambda: PeftSeq2Seq(peft_method="lora", **common)}[method]()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _in_use() -> int:
    """Bytes the C allocator has handed out and not taken back (glibc's mallinfo2): torch's CPU tensors
    included, memory freed but kept by the allocator excluded (unlike the resident set size)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


class _PeakInUse:
    """The most bytes in use while the ``with`` block runs (sampled every 2 ms)."""

    def __enter__(self):
        self.start = self.peak = _in_use()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, _in_use())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, _in_use())


def one_case(case: dict) -> dict:
    """Fit, time and measure one case (run in its own process)."""
    import torch

    n_tasks, batch, length = case["tasks"], case["batch"], case["length"]
    make = lambda: make_estimator(case["method"], case["backbone"], case["precision"], case["checkpointing"],  # noqa: E731
                                  batch, length, case["new_tokens"])
    words = " ".join(f"w{i % 200}" for i in range(length * 2))
    rows = [(words, f"task{i % n_tasks}") for i in range(batch * 3)]
    fitted_tasks = len({task for _, task in rows})  # the measured fit's tasks: they size the exclusive skills
    estimate = make().estimate_memory(fitted_tasks, batch_size=batch, sequence_length=length, target_length=16)
    targets = [" ".join(f"w{(i + j) % 200}" for j in range(16)) for i in range(batch * 3)]
    cuda = torch.cuda.is_available()
    warm = make().fit(rows[:batch], targets[:batch])  # loads the backbone: kept in the cache for the next fits
    weights = sum(p.numel() * p.element_size() for p in warm.network_.backbone.parameters() if not p.requires_grad)
    del warm
    start = time.perf_counter()
    make().fit(rows[:batch], targets[:batch])
    one_step = time.perf_counter() - start
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    est = make()
    with _PeakInUse() as in_use:
        start = time.perf_counter()
        est.fit(rows, targets)
        three_steps = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if cuda else in_use.peak - in_use.start + weights
    start = time.perf_counter()
    est.predict(rows[:batch])
    generate = time.perf_counter() - start
    return {**case, "fitted_tasks": fitted_tasks, "device": torch.cuda.get_device_name() if cuda else "cpu", "peak": peak,
            "estimate": estimate.total, "estimate_parts": {k: getattr(estimate, k) for k in (
                "frozen_weights", "trainable", "gradients", "optimizer", "activations", "transient")},
            "step_seconds": (three_steps - one_step) / 2, "generate_seconds": generate, "loss": est.loss_curve_}


def run_case(case: dict) -> dict:
    """``one_case`` in a fresh process: peaks of different cases never mix."""
    proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(case)], capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {**case, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


def report(results: list[dict]) -> str:
    gib = 1024**3
    rows = ["| size | precision | checkpointing | method | peak GiB | vs peft LoRA | step s | vs peft LoRA | "
            "generate s | estimate GiB | estimate / peak |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['size']} | {r['precision']} | {r['checkpointing']} | {r['method']} | error: {r['error']} "
                        "| | | | | | |")
            continue
        peer = next((p for p in results if "error" not in p and p["method"] == "peft LoRA" and
                     (p["size"], p["precision"], p["checkpointing"]) == (r["size"], r["precision"], r["checkpointing"])),
                    None)
        mem = f"{r['peak'] / peer['peak']:.2f}" if peer else "-"
        step = f"{r['step_seconds'] / peer['step_seconds']:.2f}" if peer else "-"
        rows.append(f"| {r['size']} | {r['precision']} | {r['checkpointing']} | {r['method']} | {r['peak'] / gib:.2f} "
                    f"| {mem} | {r['step_seconds']:.2f} | {step} | {r['generate_seconds']:.2f} "
                    f"| {r['estimate'] / gib:.2f} | {r['estimate'] / r['peak']:.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", nargs="+", default=["0.5B"], choices=sorted(SIZES))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--checkpointing", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--models", type=Path, default=Path("/tmp/skillfit-big-backbones"))
    parser.add_argument("--output", type=Path, help="write the table and the raw records here (.md and .jsonl)")
    parser.add_argument("--plan", action="store_true", help="only print the predicted memory of every size (no weights)")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_case(json.loads(args.one))))
        return 0
    if args.plan:
        print(planning_table(args.models, args.batch, args.length, args.tasks))
        return 0
    results = []
    for size in args.sizes:
        backbone = str(build_backbone(size, args.models / f"llama-{size}"))
        for precision in args.precisions:
            for checkpointing in args.checkpointing:
                for method in args.methods:
                    case = dict(size=size, backbone=backbone, precision=precision, checkpointing=checkpointing == "on",
                                method=method, batch=args.batch, length=args.length, tasks=args.tasks,
                                new_tokens=args.new_tokens)
                    results.append(run_case(case))
                    print(json.dumps({k: v for k, v in results[-1].items() if k != "loss"}), flush=True)
    table = report(results)
    print(table)
    if args.output:
        args.output.with_suffix(".md").write_text(table + "\n")
        args.output.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
