"""Training speed and memory: FLOP rate vs the machine's matmul limits, 3 seeds vs 1, peak RSS.

    python benchmarks/bench_train.py [--repeats 3] [--threads N] [--no-threads] [--no-memory]
                                     [--profile] [--smoke] [--json PATH]

Everything on the default configuration (MLP 1024→128→64→20, batch 64, 6 epochs, 4,096 training
spectra, 384 steps, checkpoints at 21 steps, each evaluating test (1,024) and validation (512)),
data seed 42, one process.

(a) FLOP rate of single-seed training, `speccomp.core.training.train(cfg, data, [123], NullLogger())`,
    no out_dir. The checkpoint evaluations (`_evaluate`), the end-of-training predictions and
    metrics, and the set-up are timed separately by wrapping those functions; "loop" is what is
    left: the 384 optimiser steps. FLOPs, per sample and linear layer in→out (in·out MACs):
      - 6·in·out, the usual "forward + backward = 3× forward" count;
      - exact: 2·in·out forward, 2·in·out for the weight gradient dW = xᵀ·dY, 2·in·out for the
        input gradient dX = dY·Wᵀ except in the first layer (its input needs no gradient).
    Two limits, both measured in this process at the same thread count:
      - the literal target's: torch.mm of 2048×2048 float32, 10 per trial, best of 5 trials;
        the rate (6·in·out count) over the loop must be >= 50 % of it;
      - shape-matched: the GEMMs one step does, at batch 64, run back to back alone (forward
        baddbmm x·W per layer, backward bmm dW and dX with the transposed views autograd passes),
        and the same GEMMs as 2-D torch.mm/addmm; the faster is the limit of this machine for this
        model's work. Rate (exact count) over the loop >= 50 % of it, i.e. the step's GEMMs alone
        take at least half of the measured step.
    The fused AdamW update alone (`FlatAdam.step`, the optimiser train() builds) is timed too.
(b) Three seeds [123, 124, 125] trained together vs seed 123 alone: wall time of `train()`.
    Target: <= 3.3x.
(c) Peak memory of a default three-seed training, data generation included, in a fresh
    subprocess: `resource.getrusage(RUSAGE_SELF).ru_maxrss` after the imports and at the end.
    Target: < 1 GB.


Unless --no-threads: train() at 1 thread, quiet, and with one core kept busy by a CPU burner this
script starts and stops, at 1 thread and at the default count. With --profile: torch.profiler's
table of one real train() call (operators by input shape), and the time its step GEMMs take
inside train() next to the same GEMMs alone.

--smoke: the same measurements on the `smoke` preset (512 training spectra of 256 bins, 2 epochs,
16 steps), one repeat, one thread, small matmul limits; figures printed, no verdicts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from _common import Report, add_smoke_flag, best_of, machine_line, probed

import speccomp.core.training as training_module
from speccomp.core.config import default_config_dir, load_config
from speccomp.core.training import NullLogger, checkpoint_steps, train
from speccomp.spectra.data import generate_datasets
from speccomp.spectra.task import SpectraTask

PROMISES = (  # measures every run prints (the smoke test checks them in the JSON); a prefix is enough
    '1 seed: train() wall',
    'FLOP rate over the loop vs the 2048² matmul limit',
    'FLOP rate over the loop vs the shape-matched limit',
    '3 seeds vs 1 seed, train() wall',
    'peak RSS, 3-seed training',
    '1 seed, one core busy elsewhere',
)

TARGET_PEAK_FRACTION = 0.5
TARGET_SEED_RATIO = 3.3
TARGET_RSS_MB = 1024.0
SEEDS = [123, 124, 125]
SMOKE_PRESETS = ["smoke"]


# ------------------------------------------------------------------------------------------------
# FLOPs and the machine's limits
# ------------------------------------------------------------------------------------------------
def mlp_dims(cfg, n_bins: int, n_out: int) -> list[tuple[int, int]]:
    dims = [n_bins, *cfg.training.hidden_dims, n_out]
    return list(zip(dims[:-1], dims[1:], strict=True))


def flops_per_sample(dims: list[tuple[int, int]]) -> tuple[int, int]:
    """(6·Σ in·out, exact) forward + backward FLOPs of one sample (see the module docstring)."""
    macs = sum(a * b for a, b in dims)
    return 6 * macs, 6 * macs - 2 * dims[0][0] * dims[0][1]


def matmul_peak_gflops(n: int = 2048, per_trial: int = 10, trials: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    seconds, _ = best_of(lambda: [torch.mm(a, b) for _ in range(per_trial)], trials)
    return 2 * n**3 * per_trial / seconds / 1e9


def step_gemms(dims: list[tuple[int, int]], batch: int) -> tuple[list[Callable], list[Callable], list[tuple], int]:
    """The GEMMs of one single-member training step: (as autograd calls them, as 2-D mm, their
    (label, operator, input shapes) as torch.profiler records them, their FLOPs)."""
    as_autograd, as_mm, signatures, flops = [], [], [], 0
    for k, (n_in, n_out) in enumerate(dims):
        x, w = torch.rand(1, batch, n_in), torch.randn(1, n_in, n_out) / n_in**0.5
        bias, dy = torch.zeros(1, 1, n_out), torch.randn(1, batch, n_out)
        as_autograd += [lambda b=bias, x=x, w=w: torch.baddbmm(b, x, w),  # forward
                        lambda x=x, dy=dy: torch.bmm(x.transpose(1, 2), dy)]  # dW
        as_mm += [lambda b=bias[0, 0], x=x[0], w=w[0]: torch.addmm(b, x, w),
                  lambda x=x[0], dy=dy[0]: torch.mm(x.t(), dy)]
        signatures += [(f"forward {n_in}→{n_out}", "aten::baddbmm", [1, 1, n_out], [1, batch, n_in], [1, n_in, n_out]),
                       (f"dW {n_in}→{n_out}", "aten::bmm", [1, n_in, batch], [1, batch, n_out])]
        flops += 2 * 2 * batch * n_in * n_out
        if k:  # dX; the first layer's input needs no gradient
            as_autograd.append(lambda dy=dy, w=w: torch.bmm(dy, w.transpose(1, 2)))
            as_mm.append(lambda dy=dy[0], w=w[0]: torch.mm(dy, w.t()))
            signatures.append((f"dX {n_in}→{n_out}", "aten::bmm", [1, batch, n_out], [1, n_out, n_in]))
            flops += 2 * batch * n_in * n_out
    return as_autograd, as_mm, signatures, flops


def gemm_sequence_seconds(calls: list[Callable], per_trial: int = 200, trials: int = 5) -> float:
    """Seconds of one pass over `calls`, run back to back: best of `trials` of `per_trial` passes."""

    def passes():
        for _ in range(per_trial):
            for call in calls:
                call()

    for _ in range(10):
        for call in calls:
            call()
    seconds, _ = best_of(passes, trials)
    return seconds / per_trial


def optimizer_step_alone(cfg, n_bins: int, n_out: int, n_steps: int = 200, trials: int = 5) -> float:
    """Seconds of one optimiser step (`FlatAdam`, as train() builds it) on a one-member model."""
    from speccomp.core.models import ModelSpec, build_model
    from speccomp.core.seeding import torch_generator

    spec = ModelSpec.from_training(cfg.training, n_bins, n_out)
    optimizer = training_module._optimizer(build_model(spec, [torch_generator(SEEDS[0], "init")]), cfg.training)
    optimizer.grads.normal_()
    optimizer.step()
    seconds, _ = best_of(lambda: [optimizer.step() for _ in range(n_steps)], trials)
    return seconds / n_steps


# ------------------------------------------------------------------------------------------------
# timing train() by parts
# ------------------------------------------------------------------------------------------------
class PartTimer:
    """Wraps functions that train() calls (module-level ones of speccomp.core.training, and the
    spectra task's methods) so that train() reports where its time went. Nested wrapped calls count
    for the outermost one only. A probed function that is gone ends the script (exit 3, naming it)."""

    PARTS = [  # (owner, function name, part)
        (training_module, "_evaluate", "checkpoint_eval"),
        (training_module, "predict", "final_eval"),  # outside _evaluate: the end-of-training predictions
        (SpectraTask, "final_metrics", "final_eval"),
        (training_module, "extract_member", "final_eval"),
        (training_module, "build_model", "setup"),
        (training_module, "_optimizer", "setup"),
        (training_module, "_flush_train_loss", "logging"),
        (training_module, "_save_checkpoint", "checkpoint_io"),
    ]

    def __init__(self):
        self.spent: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._depth = 0
        self._saved = []
        for owner, name, _ in self.PARTS:
            probed(owner, name)  # all of them exist, or nothing is wrapped

    def __enter__(self):
        for owner, name, bucket in self.PARTS:
            original = probed(owner, name)
            self._saved.append((owner, name, original))
            setattr(owner, name, self._wrap(original, bucket))
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    def _wrap(self, fn, bucket):
        def wrapper(*args, **kwargs):
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[bucket] += time.perf_counter() - t0
                self.calls[bucket] += 1
                self._depth -= 1

        return wrapper


def timed_train(cfg, datasets, seeds: list[int]) -> dict[str, float]:
    with PartTimer() as timer:
        t0 = time.perf_counter()
        result = train(cfg, datasets, seeds, NullLogger())
        total = time.perf_counter() - t0
    parts = dict(timer.spent)
    parts["total"] = total
    parts["loop"] = total - sum(v for k, v in timer.spent.items())
    parts["n_checkpoint_evals"] = timer.calls["checkpoint_eval"]
    parts["total_steps"] = result.total_steps
    return parts


# ------------------------------------------------------------------------------------------------
# peak memory in a fresh process
# ------------------------------------------------------------------------------------------------
MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    def vm_hwm_kb():  # the peak RSS of this process's own address space (not inherited)
        with open("/proc/self/status") as fh:
            return next((int(l.split()[1]) for l in fh if l.startswith("VmHWM")), -1)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    import numpy, torch, yaml, pandas
    from speccomp.core.config import default_config_dir, load_config
    from speccomp.spectra.data import generate_datasets
    from speccomp.core.training import NullLogger, train
    if {threads}:
        torch.set_num_threads({threads})
    after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cfg = load_config(default_config_dir(), presets={presets!r})
    data = generate_datasets(cfg, 42)
    after_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    train(cfg, data, {seeds}, NullLogger())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({{"at_start_kb": start, "after_imports_kb": after_imports, "after_data_kb": after_data,
                      "peak_kb": peak, "vm_hwm_kb": vm_hwm_kb()}}))
    """
)


def peak_memory(threads: int, presets: list[str]) -> dict[str, float]:
    """Run MEMORY_SCRIPT in a fresh interpreter started by /bin/sh. Started straight from this
    (large) process, the child's ru_maxrss would begin at this process's RSS: Linux carries the
    parent's high-water mark across fork + exec (measured: a child of a 600 MB parent reported
    600 MB before importing anything). The shell in between is small, and `; exit` keeps it from
    exec-ing Python in its own place."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(MEMORY_SCRIPT.format(threads=threads, seeds=SEEDS, presets=presets))
        path = fh.name
    try:
        out = subprocess.run(["/bin/sh", "-c", f'"{sys.executable}" "{path}"; exit $?'],
                             capture_output=True, text=True, check=True)
    finally:
        Path(path).unlink()
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return {k.replace("_kb", "_mb"): v / 1024 for k, v in data.items()}


# ------------------------------------------------------------------------------------------------
# thread count, quiet and with one core busy elsewhere
# ------------------------------------------------------------------------------------------------
def threads_report(report: Report, cfg, datasets, default_threads: int, one_default: dict, repeats: int) -> None:
    """A busy core (a shared machine, a browser, a second experiment): torch's threads wait for
    each other at every operation."""
    torch.set_num_threads(1)
    quiet = min((timed_train(cfg, datasets, [SEEDS[0]]) for _ in range(repeats)), key=lambda r: r["total"])
    report.info("1 seed, quiet: train() wall at 1 thread vs the default",
                f"{quiet['total']:.3f} s (loop {quiet['loop']:.3f}) at 1 thread; {one_default['total']:.3f} s "
                f"(loop {one_default['loop']:.3f}) at {default_threads}")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        for threads in sorted({default_threads, 1}, reverse=True):
            torch.set_num_threads(threads)
            r = min((timed_train(cfg, datasets, [SEEDS[0]]) for _ in range(2)), key=lambda r: r["total"])
            report.info(f"1 seed, one core busy elsewhere: train() wall at {threads} thread(s)",
                        f"{r['total']:.3f} s (loop {r['loop']:.3f})")
            report.context[f"busy_core_{threads}_threads"] = r
    finally:
        burner.kill()
        burner.wait()
        torch.set_num_threads(default_threads)
    report.context["quiet_1_thread"] = quiet


def profile_report(report: Report, cfg, datasets, signatures: list[tuple], steps: int, alone_s: float) -> None:
    """torch.profiler over one real train() call: its top operators, and what the step's GEMMs
    take inside train() (profiler overhead included) next to the same GEMMs alone."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        train(cfg, datasets, [SEEDS[0]], NullLogger())
    averages = prof.key_averages(group_by_input_shape=True)
    print(averages.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=32,
                         max_shapes_column_width=70))
    wanted = {(name, *map(tuple, shapes)): label for label, name, *shapes in signatures}
    in_step: dict[str, float] = {}
    for event in averages:
        shapes = [tuple(s) for s in event.input_shapes]
        key = next((k for k in ((event.key, *shapes[:2]), (event.key, *shapes[:3])) if k in wanted), None)
        if key is not None:
            in_step[wanted[key]] = in_step.get(wanted[key], 0.0) + event.self_cpu_time_total * 1e-6  # µs -> s
    gemm_s = sum(in_step.values()) / steps
    report.info("the step's GEMMs inside train() (torch.profiler, one call)",
                f"{gemm_s * 1e6:.0f} µs per step vs {alone_s * 1e6:.0f} µs alone "
                f"({len(in_step)} of {len(wanted)} GEMM shapes found); largest: "
                + ", ".join(f"{k} {v / steps * 1e6:.0f} µs" for k, v in sorted(in_step.items(), key=lambda kv: -kv[1])[:3]))


# ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--no-threads", action="store_true", help="skip the 1-thread and busy-core runs")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    p.add_argument("--profile", action="store_true", help="also run train() under torch.profiler")
    p.add_argument("--json", default="")
    add_smoke_flag(p)
    args = p.parse_args(argv)
    if args.smoke:
        args.threads = args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    presets = SMOKE_PRESETS if args.smoke else []
    if args.smoke:
        args.repeats = 1
    # the matmul limits: (size, products per trial, trials) and (passes per trial, trials)
    mm_sizes, gemm_sizes = ((256, 2, 1), (10, 1)) if args.smoke else ((2048, 10, 5), (200, 5))

    report = Report("train", smoke=args.smoke)
    print("bench_train:", machine_line())
    report.context["machine_start"] = machine_line()
    cfg = load_config(default_config_dir(), presets=presets)
    datasets = generate_datasets(cfg, 42)
    n_train, n_bins = datasets["train"].spectra.shape
    n_out = datasets["train"].abundances.shape[1]
    n_eval = len(datasets["test"]) + (len(datasets["val"]) if "val" in datasets else 0)
    dims, batch = mlp_dims(cfg, n_bins, n_out), cfg.training.batch_size
    as_autograd, as_mm, signatures, step_gemm_flops = step_gemms(dims, batch)

    def limits() -> tuple[float, float, float]:
        return (matmul_peak_gflops(*mm_sizes), gemm_sequence_seconds(as_autograd, *gemm_sizes),
                gemm_sequence_seconds(as_mm, *gemm_sizes))

    peak, gemm_autograd_s, gemm_mm_s = limits()
    train(cfg, datasets, [SEEDS[0]], NullLogger())  # warm-up (allocator, kernels)
    one, three = None, None
    for _ in range(args.repeats):  # alternate, keep each one's fastest
        r1 = timed_train(cfg, datasets, [SEEDS[0]])
        r3 = timed_train(cfg, datasets, SEEDS)
        one = r1 if one is None or r1["total"] < one["total"] else one
        three = r3 if three is None or r3["total"] < three["total"] else three
    again = limits()  # again after training: the better of two readings
    peak, gemm_autograd_s, gemm_mm_s = max(peak, again[0]), min(gemm_autograd_s, again[1]), min(gemm_mm_s, again[2])
    gemm_s = min(gemm_autograd_s, gemm_mm_s)
    shape_limit = step_gemm_flops / gemm_s / 1e9
    opt_step = optimizer_step_alone(cfg, n_bins, n_out)

    steps = one["total_steps"]
    per_sample_6, per_sample_exact = flops_per_sample(dims)
    train_flops = per_sample_6 * n_train * cfg.training.epochs
    exact_flops = per_sample_exact * n_train * cfg.training.epochs
    assert exact_flops == step_gemm_flops * steps, "the step's GEMMs and the exact count disagree"
    eval_flops = 2 * sum(a * b for a, b in dims) * n_eval * one["n_checkpoint_evals"]
    rate_loop = train_flops / one["loop"] / 1e9
    rate_exact = exact_flops / one["loop"] / 1e9
    step_s = one["loop"] / steps

    print(f"\nlimits, {threads} thread(s):")
    report.info(f"matmul limit (torch.mm {mm_sizes[0]}², float32)", f"{peak:.1f} GFLOP/s at {threads} thread(s)")
    report.info(f"shape-matched limit (the step's {len(as_autograd)} GEMMs at batch {batch}, back to back)",
                f"{shape_limit:.1f} GFLOP/s = {gemm_s * 1e6:.0f} µs per step ({gemm_autograd_s * 1e6:.0f} µs as autograd "
                f"calls them, {gemm_mm_s * 1e6:.0f} µs as 2-D mm); {shape_limit / peak:.0%} of the 2048² limit")
    report.info("FLOPs counted per seed",
                f"{train_flops / 1e9:.2f} GFLOP training by 6·Σin·out ({per_sample_6 // 6:,} MACs per sample); "
                f"{exact_flops / 1e9:.2f} GFLOP exact (no first-layer input gradient); "
                f"+ {eval_flops / 1e9:.2f} GFLOP in {one['n_checkpoint_evals']} checkpoint evaluations of {n_eval} spectra")
    report.info("1 seed: train() wall", f"{one['total']:.3f} s = loop {one['loop']:.3f} + checkpoint evals {one['checkpoint_eval']:.3f} "
                f"+ final eval {one.get('final_eval', 0):.3f} + setup {one.get('setup', 0):.3f} + logging {one.get('logging', 0):.3f} "
                f"({steps} steps, {step_s * 1e6:.0f} µs/step)")
    report.target("FLOP rate over the loop vs the 2048² matmul limit (6·Σin·out count)", 100 * rate_loop / peak, "{:.1f} %",
                  f">= {TARGET_PEAK_FRACTION:.0%} of the 2048² limit", rate_loop / peak >= TARGET_PEAK_FRACTION)
    report.info("FLOP rate over the loop",
                f"{rate_loop:.1f} GFLOP/s by 6·Σin·out ({rate_loop / peak:.1%} of the 2048² limit); "
                f"{rate_exact:.1f} GFLOP/s exact ({rate_exact / peak:.1%})")
    report.target("FLOP rate over the loop vs the shape-matched limit (exact count)", 100 * rate_exact / shape_limit,
                  "{:.1f} %", f">= {TARGET_PEAK_FRACTION:.0%} of the shape-matched limit",
                  rate_exact / shape_limit >= TARGET_PEAK_FRACTION)
    budget = train_flops / steps / (TARGET_PEAK_FRACTION * peak * 1e9)
    report.info("one step: budget at the 2048² target vs what it holds",
                f"50 % of the 2048² limit allows {budget * 1e6:.0f} µs per step (6·Σin·out count); the step's GEMMs "
                f"alone take {gemm_s * 1e6:.0f} µs, the fused AdamW update alone {opt_step * 1e6:.0f} µs; "
                f"measured step {step_s * 1e6:.0f} µs")
    rate_with_eval = (train_flops + eval_flops) / (one["loop"] + one["checkpoint_eval"]) / 1e9
    rate_train_call = train_flops / one["total"] / 1e9
    report.info("FLOP rate, loop + checkpoint evaluations (their FLOPs counted)",
                f"{rate_with_eval:.1f} GFLOP/s = {rate_with_eval / peak:.1%} of the 2048² limit")
    report.info("FLOP rate over the whole train() call (training FLOPs only)",
                f"{rate_train_call:.1f} GFLOP/s = {rate_train_call / peak:.1%} of the 2048² limit")
    ratio = three["total"] / one["total"]
    report.info("3 seeds: train() wall", f"{three['total']:.3f} s = loop {three['loop']:.3f} + checkpoint evals "
                f"{three['checkpoint_eval']:.3f} + final eval {three.get('final_eval', 0):.3f}")
    report.target("3 seeds vs 1 seed, train() wall", ratio, "{:.2f}x", f"<= {TARGET_SEED_RATIO}x", ratio <= TARGET_SEED_RATIO)
    report.info("3 seeds vs 1 seed, loop only", f"{three['loop'] / one['loop']:.2f}x")
    report.context.update({"one": one, "three": three, "peak_gflops": peak, "shape_limit_gflops": shape_limit,
                           "step_gemms_s": {"autograd": gemm_autograd_s, "mm": gemm_mm_s}, "adamw_step_s": opt_step,
                           "threads": threads, "checkpoints": len(checkpoint_steps(cfg.training, steps))})

    if not args.no_memory:
        mem = peak_memory(args.threads, presets)
        report.info("RSS at interpreter start / after imports (torch, numpy, yaml, pandas, speccomp)",
                    f"{mem['at_start_mb']:.0f} MB / {mem['after_imports_mb']:.0f} MB")
        report.info("RSS high-water mark after data generation", f"{mem['after_data_mb']:.0f} MB")
        report.target("peak RSS, 3-seed training incl. generation (fresh process)", mem["peak_mb"], "{:.0f} MB",
                      f"< {TARGET_RSS_MB:.0f} MB", mem["peak_mb"] < TARGET_RSS_MB)
        report.info("cross-check: VmHWM of the same process", f"{mem['vm_hwm_mb']:.0f} MB")
        report.context["memory"] = mem

    if not args.no_threads:
        print("\nthread count (a CPU burner keeps one core busy for the second part):")
        threads_report(report, cfg, datasets, threads, one, args.repeats)
    if args.profile:
        profile_report(report, cfg, datasets, signatures, steps, gemm_autograd_s)
    return report.finish(args.json)


if __name__ == "__main__":
    raise SystemExit(main())
