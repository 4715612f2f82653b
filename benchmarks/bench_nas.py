"""Architecture search speed and memory (issue #10), in one invocation.

    python benchmarks/bench_nas.py [--iterations 1000] [--rate-iterations 100] [--threads N] [--smoke]
                                   [--json benchmarks/results/nas.json]

On the default configuration (4,096 training and 512 validation spectra of 1,024 bins, data seed
42) and the default space `configs/nas/spectra.yaml` (4 input transforms; 2 conv positions of
conv3/5/7/identity with 4 channels, pool 4; 2 dense positions of dense32/64/128/256/identity; 3
activations per position; batch 64):

(a) search iterations per second: `run_search` for --rate-iterations iterations (after a warm-up
    of 10), and its two halves timed alone on fixed batches: the weight step (one hard-sampled
    path) and the α step (every candidate, for the straight-through gradient);
(b) the cost of one iteration relative to one training step of the largest candidate model
    (conv7 ×2, dense256 ×2, log+standardize, gelu; the `seq` model `main` would train, batch 64,
    FlatAdam), and the α step relative to the sum of the candidate operations' own steps: each
    (op, activation) candidate of each position run alone, forward + backward at batch 64 on its
    position's input, summed. Target: α step <= that sum;
(c) end to end in a fresh process: data generation, the default search (--iterations, 1000),
    derivation, and retraining the derived architecture for three seeds [123, 124, 125] with the
    default training settings (`train()`, one ensemble). Targets: < 60 s, peak RSS < 1 GB;
(d) the `speccomp nas` command at its defaults in a fresh process and store (3 searches, random
    search at equal budget, every retraining, every record): wall time (target < 180 s) and the
    largest child's peak RSS (the larger of (c)'s and (d)'s processes).

--smoke: the `smoke` preset's data and training (512 training spectra of 256 bins, 2 epochs), 20
search iterations end to end, 5 for the rate, one repeat, one thread, no verdict; (d), the longest
part, runs from the start in its own process while (a)-(c) are measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from _common import Report, add_smoke_flag, best_of, machine_line

from speccomp.core.config import default_config_dir, load_config
from speccomp.core.models import ModelSpec, build_model
from speccomp.core.optim import FlatAdam
from speccomp.core.seeding import torch_generator
from speccomp.nas import Supernet, init_alpha, load_space, preset_of, run_search, sample_weights, write_preset
from speccomp.spectra.data import generate_datasets
from speccomp.spectra.search import SPECTRA

PROMISES = (  # measures every run prints (the smoke test checks them in the JSON); a prefix is enough
    '(a) search iterations per second',
    '(b) one search iteration / one step',
    '(b) α step / Σ',
    '(c) end to end',
    '(c) peak memory',
    '(d) the nas command',
    '(d) peak memory',
)
COMMAND_TARGET_S = 180.0

SPACE = default_config_dir() / "nas" / "spectra.yaml"
TARGET_SECONDS = 60.0
TARGET_RSS_MB = 1024.0
BATCH = 64


def largest_choices(space) -> dict[str, str]:
    def biggest(options, kind):
        sized = [o for o in options if o.startswith(kind)]
        return max(sized, key=lambda o: int(o[len(kind):])) if sized else options[0]

    out = {}
    for d in space.decisions:
        if d.kind == "input":
            out[d.name] = "log+standardize" if "log+standardize" in d.options else d.options[-1]
        elif d.kind == "activation":
            out[d.name] = "gelu" if "gelu" in d.options else d.options[0]
        else:
            out[d.name] = biggest(d.options, d.kind)
    return out


def training_step_seconds(space, cfg, datasets, repeats: int, presets: list[str]) -> float:
    """One optimiser step of the largest candidate as `main` trains it (batch 64, FlatAdam)."""
    with tempfile.TemporaryDirectory() as tmp:
        preset = write_preset(preset_of(space, largest_choices(space)), Path(tmp) / "largest.yaml")
        big = load_config(default_config_dir(), presets=[*presets, preset])
    x, y = datasets["train"].spectra, datasets["train"].abundances
    spec = ModelSpec.from_training(big.training, x.shape[1], y.shape[1])
    model = build_model(spec, [torch_generator(123, "init")], x)
    model.dropout_generators = [torch_generator(123, "dropout")]
    opt = FlatAdam(model, lr=1e-3, weight_decay=1e-4)
    xb, yb = x[:BATCH].unsqueeze(0), y[:BATCH].unsqueeze(0)

    def step():
        for _ in range(10):
            out = ((model(xb) - yb) ** 2).mean()
            opt.zero_grad()
            out.backward()
            opt.step()

    step()
    seconds, _ = best_of(step, repeats)
    return seconds / 10


def candidate_sum_seconds(net: Supernet, z: torch.Tensor, repeats: int) -> float:
    """Σ over positions and (op, activation) candidates of that candidate alone, forward +
    backward at batch 64, on its position's input shape."""
    space = net.space
    total = 0.0
    shapes = []
    with torch.no_grad():
        cur = z.unsqueeze(1)
        for pos in net.convs:
            shapes.append((pos, cur.shape))
            cur = torch.zeros(cur.shape[0], pos.c_out, cur.shape[2] // space.pool)
        cur = cur.reshape(cur.shape[0], -1)
        for pos in net.denses:
            shapes.append((pos, cur.shape))
            cur = torch.zeros(cur.shape[0], pos.d_out)
    for pos, shape in shapes:
        h = torch.randn(shape, requires_grad=True)
        for j, op in enumerate(pos.ops):
            for act in space.activations if op.kind in ("conv", "dense") else [None]:
                if op.kind == "zero":
                    continue
                w = torch.zeros(len(pos.ops))
                w[j] = 1.0
                v = torch.zeros(len(space.activations))
                if act is not None:
                    v[space.activations.index(act)] = 1.0

                def run(pos=pos, h=h, w=w, v=v):
                    for _ in range(10):
                        pos(h, w, v, space.activations).sum().backward()

                run()
                seconds, _ = best_of(run, repeats)
                total += seconds / 10
    return total


def half_steps(net: Supernet, z_train, y_train, repeats: int) -> tuple[float, float]:
    """(weight step, α step) seconds on a fixed batch."""
    space = net.space
    alpha = init_alpha(space)
    gen = torch.Generator().manual_seed(0)
    opt = FlatAdam(net, lr=1e-3)
    zb, yb = z_train[:, :BATCH], y_train[:BATCH]

    def weight_step():
        for _ in range(5):
            with torch.no_grad():
                w = sample_weights({k: v.detach() for k, v in alpha.items()}, 1.0, True, gen)
            out = SPECTRA.loss(net(zb, w), yb)
            opt.zero_grad()
            out.backward()
            opt.step()

    def alpha_step():
        for _ in range(5):
            out = SPECTRA.loss(net.sample_forward(zb, alpha, 1.0, True, gen), yb)
            torch.autograd.grad(out, list(alpha.values()))

    weight_step(), alpha_step()
    return best_of(weight_step, repeats)[0] / 5, best_of(alpha_step, repeats)[0] / 5


END_TO_END = textwrap.dedent(
    """
    import json, resource, sys, time
    t0 = time.perf_counter()
    import torch
    from speccomp.core.config import default_config_dir, load_config
    from speccomp.spectra.data import generate_datasets
    from speccomp.core.training import NullLogger, train
    from speccomp.nas import load_space, run_search, write_preset
    if {threads}:
        torch.set_num_threads({threads})
    t_imports = time.perf_counter() - t0
    cfg = load_config(default_config_dir(), presets={presets!r})
    data = generate_datasets(cfg, 42)
    space = load_space({space!r}).with_search(architecture_search_iterations={iterations})
    t1, c1 = time.perf_counter(), time.process_time()
    result = run_search(space, data["train"], data["val"], 123)
    t_search, c_search = time.perf_counter() - t1, time.process_time() - c1
    path = write_preset(result.preset, {preset!r})
    derived = load_config(default_config_dir(), presets=[*{presets!r}, path])
    t2, c2 = time.perf_counter(), time.process_time()
    train(derived, data, [123, 124, 125], NullLogger())
    t_train, c_train = time.perf_counter() - t2, time.process_time() - c2
    print(json.dumps({{"total_s": time.perf_counter() - t0, "imports_s": t_imports, "search_s": t_search,
                      "retrain_s": t_train, "search_cpu_s": c_search, "retrain_cpu_s": c_train,
                      "cpu_s": time.process_time(), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "choices": result.choices}}))
    """
)


def end_to_end(iterations: int, threads: int, presets: list[str]) -> dict:
    """END_TO_END in a fresh interpreter started through /bin/sh (so that ru_maxrss starts small)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "e2e.py"
        script.write_text(END_TO_END.format(threads=threads, space=str(SPACE), iterations=iterations, presets=presets,
                                            preset=str(Path(tmp) / "arch.yaml")))
        out = subprocess.run(["/bin/sh", "-c", f'"{sys.executable}" "{script}"; exit $?'], capture_output=True,
                             text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=1000, help="search iterations of the end-to-end run")
    parser.add_argument("--rate-iterations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--json", default=None)
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.threads = args.threads or 1  # two threads on a busy 2-core machine: several times slower
    if args.threads:
        torch.set_num_threads(args.threads)
    presets = ["smoke"] if args.smoke else []
    if args.smoke:
        args.iterations, args.rate_iterations, args.repeats = 20, 5, 1
    report = Report("nas", smoke=args.smoke)
    print("start:", machine_line())
    early = ThreadPoolExecutor(1).submit(nas_command, True) if args.smoke else None  # (d) meanwhile
    report.context["machine_start"] = machine_line()
    cfg = load_config(default_config_dir(), presets=presets)
    datasets = generate_datasets(cfg, 42)
    space = load_space(SPACE)

    warm = space.with_search(architecture_search_iterations=10)
    run_search(warm, datasets["train"], datasets["val"], 1)
    rate_space = space.with_search(architecture_search_iterations=args.rate_iterations)
    result = run_search(rate_space, datasets["train"], datasets["val"], 123)
    per_iteration = result.seconds / args.rate_iterations
    report.info("(a) search iterations per second, default space",
                f"{1 / per_iteration:.1f} it/s ({per_iteration * 1000:.1f} ms per iteration, {args.rate_iterations} iterations)")

    net = Supernet(space, cfg.physics.n_bins, len(cfg.physics.labels), torch_generator(0, "bench"))
    x_train = datasets["train"].spectra
    net.fit_inputs(x_train)
    z_train = net.inputs.candidates(x_train[: 4 * BATCH])
    w_s, a_s = half_steps(net, z_train, datasets["train"].abundances, args.repeats)
    step_s = training_step_seconds(space, cfg, datasets, args.repeats, presets)
    sum_s = candidate_sum_seconds(net, z_train[0, :BATCH], args.repeats)
    report.info("(b) weight step (one sampled path) / α step (every candidate)", f"{w_s * 1000:.1f} ms / {a_s * 1000:.1f} ms")
    report.info("(b) one training step of the largest candidate (conv7×2, dense256×2, batch 64)", f"{step_s * 1000:.1f} ms")
    report.info("(b) one search iteration / one step of the largest candidate",
                f"{per_iteration / step_s:.2f}× (weight step {w_s / step_s:.2f}×, α step {a_s / step_s:.2f}×)")
    report.target("(b) α step / Σ of the candidates' own steps", a_s / sum_s, "{:.2f}", "<= 1",
                  a_s <= sum_s)
    report.note(f"Σ of the candidate operations' own forward+backward steps: {sum_s * 1000:.1f} ms")

    e2e = end_to_end(args.iterations, args.threads, presets)
    report.target(f"(c) end to end: generation + search ({args.iterations} it) + retraining 3 seeds",
                  e2e["total_s"], "{:.1f} s", f"< {TARGET_SECONDS:.0f} s", e2e["total_s"] < TARGET_SECONDS)
    report.note(f"of which imports {e2e['imports_s']:.1f} s, search {e2e['search_s']:.1f} s "
                f"({args.iterations / e2e['search_s']:.1f} it/s), retraining {e2e['retrain_s']:.1f} s; CPU time "
                f"{e2e['cpu_s']:.1f} s (search {e2e['search_cpu_s']:.1f} s, retraining {e2e['retrain_cpu_s']:.1f} s): "
                f"what a core of its own would take at 1 thread; "
                f"derived: {e2e['choices']}")
    report.target("(c) peak memory of the end-to-end process", e2e["peak_mb"], "{:.0f} MB",
                  f"< {TARGET_RSS_MB:.0f} MB", e2e["peak_mb"] < TARGET_RSS_MB)
    command = early.result() if early else nas_command(args.smoke)
    report.target("(d) the nas command as a user runs it: 3 searches + random search + retraining",
                  command["seconds"], "{:.0f} s", f"< {COMMAND_TARGET_S:.0f} s", command["seconds"] < COMMAND_TARGET_S)
    report.note(f"searches {command['search_s']:.0f} s, random draws {command['random_s']:.0f} s, the rest "
                f"(start-up, data, retraining, records) {command['seconds'] - command['search_s'] - command['random_s']:.0f} s")
    report.info("(d) peak memory of the nas command", f"{command['peak_mb']:.0f} MB")
    return report.finish(args.json)


def nas_command(smoke: bool) -> dict:
    """`speccomp nas` at its defaults (smoke: one seed, one search of 10 iterations, 2 draws) in a
    fresh process on a fresh store: wall time, peak RSS and the parts the run logged."""
    import resource
    import time

    from mlflow import MlflowClient

    extra = ["--seeds", "1", "--search-seeds", "1", "--architecture-search-iterations", "10", "--random-draws", "2",
             "--preset", "smoke"] if smoke else []
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(Path(__file__).parents[1])}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "speccomp_cli", "nas", "--run-name", "bench", *extra], check=True,
                       env=env, capture_output=True, text=True, cwd=tmp)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        client = MlflowClient(uri)
        (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                    "attributes.run_name = 'bench'")
        m = run.data.metrics
        return {"seconds": seconds, "peak_mb": peak, "search_s": m.get("nas/search_seconds", 0.0),
                "random_s": m.get("nas/random_seconds", 0.0)}


if __name__ == "__main__":
    sys.exit(main())
