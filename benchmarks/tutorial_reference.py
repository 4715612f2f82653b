"""The tutorial's pipeline, re-implemented in its own style, as a timing reference only.

    python benchmarks/tutorial_reference.py --out /tmp/tut [--seeds 123,124,125] [--data-seed 42]
                                            [--mode runpy|single]

The tutorial (`cfpark00/spectral-compositional-generalization`, see `shared/reference/tutorial/`)
cannot be installed offline, so this file does what its code does, the way its code does it, so
that `bench_pipeline.py` can time both pipelines side by side on the same machine:

- generation: one spectrum at a time in Python. Component sets, abundances, temperature and noise
  level come from NumPy's *global* random state (`np.random.seed(data_seed + split_index)`); each
  spectrum is a float32 torch vector: Planck curve, divided by its maximum, then a loop over all
  20 lines computing the Gaussian profile and multiplying by (1 + s·a·g), then multiplicative
  noise from torch's global generator (which the tutorial never seeds);
- training: one process per training seed, run one after the other; `torch.utils.data.DataLoader`
  over a `TensorDataset` (batch 64, shuffled, `num_workers` from the tutorial's training.yaml: 4);
  `nn.Sequential` MLP 1024→128→64→20 with ReLU and dropout 0.1, Kaiming-normal init, AdamW;
  tqdm bars updated every step; a checkpoint every int(5 % of the steps) = 19 steps plus the last
  (21 in all), each of which evaluates the test loader, saves model + optimiser state, a
  stats.json and the test-set predictions as CSV (through pandas);
- analysis: reads every checkpoint's stats.json and prediction CSV back and writes
  trajectory_data.csv;
- figures: the nine figures with pyplot at 300 dpi, `bbox_inches="tight"`, at the tutorial's
  figure sizes.

`--mode runpy` (default) is the tutorial's `run.py`: every stage (generation, each training seed,
analysis) in a fresh Python subprocess with its output captured, and the figures redrawn in the
driver after each stage with whatever exists by then (5, then 6, then 9 figures).
`--mode single` is a lower bound on the tutorial's cost: one process, every figure drawn once.

Prints one line `TIMINGS {json}` with the wall time of each stage in seconds. Nothing here is
part of speccomp; the tutorial's quirks are kept on purpose (they are what is being timed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

TUTORIAL_CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "tutorial" / "configs"
PROJECT_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DPI = 300
H, C, K_B = 6.626e-34, 3e8, 1.381e-23  # the tutorial's constants


def config_dir() -> Path:
    return TUTORIAL_CONFIGS if TUTORIAL_CONFIGS.is_dir() else PROJECT_CONFIGS


def load_yaml(name: str) -> dict:
    with open(config_dir() / name) as fh:
        return yaml.safe_load(fh)


# ------------------------------------------------------------------------------------------------
# generation: one spectrum at a time
# ------------------------------------------------------------------------------------------------
def _draw(sampling: dict) -> float:
    lo, hi = sampling["range"]
    if sampling.get("distribution", "uniform") == "log_uniform":
        return float(np.exp(np.random.uniform(np.log(lo), np.log(hi))))
    return float(np.random.uniform(lo, hi))


def loop_spectrum(physics: dict, wavelengths, abundances, temperature: float, noise_level: float):
    """One spectrum, the tutorial's way (float32 torch ops on one 1024-bin vector)."""
    import torch

    lam_m = wavelengths * 1e-9
    intensity = (2 * H * C**2) / (lam_m**5 * (torch.exp(H * C / (lam_m * K_B * temperature)) - 1))
    spectrum = intensity / torch.max(intensity)
    for i, line in enumerate(physics["lines"]):
        profile = torch.exp(-0.5 * ((wavelengths - line["center"]) / line["width"]) ** 2)
        spectrum *= 1.0 + line["strength"] * abundances[i] * profile
    spectrum *= 1.0 + noise_level * torch.randn_like(spectrum)
    return spectrum


def loop_generate_split(physics: dict, split: dict, seed: int):
    """(spectra, abundances) of one split: abundances drawn for every sample first, then the
    spectra one by one (temperature and noise level drawn per spectrum), as the tutorial does."""
    import torch

    np.random.seed(seed)
    lines = physics["lines"]
    index = {ln["label"]: i for i, ln in enumerate(lines)}
    combos = split["distribution"]["combinations"]
    weights = np.array([c["weight"] for c in combos], dtype=float)
    weights /= weights.sum()
    n = split["n_samples"]
    abundances = torch.zeros(n, len(lines))
    for i in range(n):
        combo = combos[np.random.choice(len(combos), p=weights)]
        for name in combo["components"]:
            if name in index:  # the tutorial silently ignores unknown names
                abundances[i, index[name]] = _draw(physics["sampling"]["abundance"])
    wavelengths = torch.linspace(physics["wavelength_min"], physics["wavelength_max"], physics["n_bins"])
    spectra = torch.zeros(n, physics["n_bins"])
    for i in range(n):
        temperature = _draw(physics["sampling"]["temperature"])
        noise_level = _draw(physics["sampling"]["noise"])
        spectra[i] = loop_spectrum(physics, wavelengths, abundances[i], temperature, noise_level)
    return spectra, abundances


def stage_generate(out: Path, data_seed: int, sizes: dict[str, int]) -> None:
    import torch

    physics = load_yaml("synthetic_spectra.yaml")
    splits = load_yaml("data_distribution.yaml")["splits"]
    data_dir = out / "data" / f"seed-{data_seed}"
    data_dir.mkdir(parents=True, exist_ok=True)
    for k, (name, split) in enumerate(splits.items()):
        split = {**split, "n_samples": sizes.get(name, split["n_samples"])}
        spectra, abundances = loop_generate_split(physics, split, data_seed + k)
        torch.save(spectra, data_dir / f"{name}_spectra.pt")
        torch.save(abundances, data_dir / f"{name}_abundances.pt")
    (data_dir / "metadata.json").write_text(json.dumps({"seed": data_seed, "splits": list(splits)}))


# ------------------------------------------------------------------------------------------------
# training: one seed at a time, DataLoader, checkpoints with test predictions as CSV
# ------------------------------------------------------------------------------------------------
def build_mlp(n_in: int, n_out: int, hidden: list[int], dropout: float):
    from torch import nn

    layers, prev = [], n_in
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU(), nn.Dropout(dropout)]
        prev = h
    layers.append(nn.Linear(prev, n_out))
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return net


def stage_train(out: Path, data_seed: int, seed: int, epochs: int | None) -> None:
    import random

    import pandas as pd
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from tqdm import tqdm

    cfg = load_yaml("training.yaml")
    epochs = epochs or cfg["epochs"]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    data_dir = out / "data" / f"seed-{data_seed}"
    x_train = torch.load(data_dir / "train_spectra.pt", weights_only=True)
    y_train = torch.load(data_dir / "train_abundances.pt", weights_only=True)
    x_test = torch.load(data_dir / "test_spectra.pt", weights_only=True)
    y_test = torch.load(data_dir / "test_abundances.pt", weights_only=True)
    workers = cfg.get("num_workers", 4)
    train_loader = DataLoader(TensorDataset(x_train, y_train), batch_size=cfg["batch_size"], shuffle=True, num_workers=workers)
    test_loader = DataLoader(TensorDataset(x_test, y_test), batch_size=cfg["batch_size"], shuffle=False, num_workers=workers)

    model = build_mlp(x_train.shape[1], y_train.shape[1], cfg["hidden_dims"], cfg["dropout_rate"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])
    criterion = nn.MSELoss(reduction="none")
    total_steps = len(train_loader) * epochs
    interval = max(1, int(total_steps * cfg.get("checkpoint_ratio", 0.05)))
    run_dir = out / "runs" / f"seed-{seed}" / "train"
    ckpts = run_dir / "ckpts"
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    step = n_ckpt = 0
    epoch_losses = []
    for epoch in tqdm(range(epochs), desc="Epochs"):
        model.train()
        losses = []
        bar = tqdm(train_loader, desc=f"Epoch {epoch + 1}", leave=False)
        for batch_idx, (xb, yb) in enumerate(bar):
            optimizer.zero_grad()
            loss = criterion(model(xb), yb).mean()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            bar.set_postfix({"Loss": f"{loss.item():.4f}", "Step": f"{step}/{total_steps}"})
            if step % (cfg.get("log_every_n_step", 1) * 10) == 0:
                tqdm.write(f"Step {step}/{total_steps}, Loss: {loss.item():.4f}")
            if step % interval == 0 or step == total_steps:
                n_ckpt += 1
                model.eval()
                val = []
                with torch.no_grad():
                    for xv, yv in test_loader:
                        val.extend(criterion(model(xv), yv).mean(dim=1).numpy())
                stats = {"checkpoint_num": n_ckpt, "step": step, "epoch": epoch, "batch_idx": batch_idx,
                         "train_loss": sum(losses) / len(losses), "test_loss": float(sum(val) / len(val))}
                d = ckpts / f"ckpt-{n_ckpt}"
                d.mkdir(parents=True, exist_ok=True)
                torch.save({"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
                            **{k: stats[k] for k in ("step", "epoch", "batch_idx")}}, d / "model.pt")
                (d / "stats.json").write_text(json.dumps(stats, indent=2))
                with torch.no_grad():
                    pred = model(x_test).numpy()
                pd.DataFrame(pred, columns=[f"component_{i}" for i in range(pred.shape[1])]).to_csv(
                    d / "test_predictions.csv", index=False)
                model.train()
        epoch_losses.append(sum(losses) / len(losses))
    (run_dir / "logs" / "training_log.json").write_text(json.dumps({"total_steps": total_steps, "train_losses_by_epoch": epoch_losses}))


# ------------------------------------------------------------------------------------------------
# analysis: read every checkpoint back
# ------------------------------------------------------------------------------------------------
def stage_analyse(out: Path, data_seed: int) -> None:
    import pandas as pd
    import torch

    plot = load_yaml("analysis.yaml")["plot_config"]
    xc, yc = plot["x_component"] - 1, plot["y_component"] - 1
    targets = torch.load(out / "data" / f"seed-{data_seed}" / "test_abundances.pt", weights_only=True)
    rows = []
    for run in sorted((out / "runs").glob("seed-*")):
        ckpts = sorted((run / "train" / "ckpts").glob("ckpt-*"), key=lambda p: int(p.name.split("-")[1]))
        for d in ckpts:
            stats = json.loads((d / "stats.json").read_text())
            pred = torch.tensor(pd.read_csv(d / "test_predictions.csv").values, dtype=torch.float32)
            mse = ((pred - targets) ** 2).mean(dim=0).numpy()
            rows.append({"seed": run.name, **{k: stats[k] for k in ("checkpoint_num", "step", "epoch", "train_loss", "test_loss")},
                         f"component_{xc + 1}_mse": mse[xc], f"component_{yc + 1}_mse": mse[yc]})
    (out / "analysis").mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "analysis" / "trajectory_data.csv", index=False)


# ------------------------------------------------------------------------------------------------
# figures: pyplot, 300 dpi, the tutorial's sizes
# ------------------------------------------------------------------------------------------------
def _save(plt, fig, path: Path) -> None:
    plt.tight_layout()
    fig.savefig(path, dpi=int(os.environ.get("TUTORIAL_REFERENCE_DPI", DPI)), bbox_inches="tight")
    plt.close()


def draw_figures(out: Path, data_seed: int) -> int:
    """Draw every figure whose inputs exist (as the tutorial's create_visualizations does);
    returns how many were drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import torch

    physics = load_yaml("synthetic_spectra.yaml")
    plot = load_yaml("analysis.yaml")["plot_config"]
    xc, yc = plot["x_component"] - 1, plot["y_component"] - 1
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    lines = physics["lines"]
    wl = np.linspace(physics["wavelength_min"], physics["wavelength_max"], physics["n_bins"])
    drawn = 0

    # diverse_samples: ten fresh spectra from the generator, continuum dashed
    fig, ax = plt.subplots(figsize=(14, 8))
    wl_t = torch.linspace(physics["wavelength_min"], physics["wavelength_max"], physics["n_bins"])
    for i in range(10):
        temp = _draw(physics["sampling"]["temperature"])
        active = np.random.choice(len(lines), np.random.randint(1, 4), replace=False)
        a = torch.zeros(len(lines))
        for j in active:
            a[j] = _draw(physics["sampling"]["abundance"])
        spec = loop_spectrum(physics, wl_t, a, temp, _draw(physics["sampling"]["noise"]))
        lam = wl * 1e-9
        bb = 2 * H * C**2 / (lam**5 * (np.exp(H * C / (lam * K_B * temp)) - 1))
        ax.plot(wl, bb / bb.max(), "--", color=f"C{i}", alpha=0.5, linewidth=1)
        ax.plot(wl, spec.numpy(), color=f"C{i}", alpha=0.8, linewidth=1.5, label=f"{int(temp)}K, {len(active)} comp")
    ax.set_xlabel("Wavelength (nm)")
    ax.set_ylabel("Intensity")
    ax.legend(ncol=2, fontsize=8)
    ax.grid(True, alpha=0.3)
    _save(plt, fig, plots / "diverse_samples.png")
    drawn += 1

    # spectral_lines: profiles on a 4096-point grid, then centre vs strength with labels
    fig = plt.figure(figsize=(12, 8))
    ax1, ax2 = plt.subplot2grid((2, 1), (0, 0)), plt.subplot2grid((2, 1), (1, 0))
    hi = np.linspace(physics["wavelength_min"], physics["wavelength_max"], 4096)
    for ln in lines:
        ax1.plot(hi, np.exp(-0.5 * ((hi - ln["center"]) / ln["width"]) ** 2), label=f"{ln['label']} (w={ln['width']:.1f})", alpha=0.7)
    ax1.legend(bbox_to_anchor=(1.05, 1), loc="upper left", frameon=False)
    ax1.grid(True, alpha=0.3)
    for ln in lines:
        color = "red" if ln["strength"] < 0 else "blue"
        ax2.plot([ln["center"]] * 2, [0, ln["strength"]], color=color, alpha=0.5, linewidth=1.5)
        ax2.scatter([ln["center"]], [ln["strength"]], c=color, s=100, alpha=0.7, edgecolors="black")
        ax2.annotate(ln["label"], (ln["center"], ln["strength"]), xytext=(5, 5), textcoords="offset points", fontsize=7)
    ax2.axhline(0, color="k", linestyle="--", alpha=0.5)
    ax2.grid(True, alpha=0.3)
    plt.subplots_adjust(hspace=0.3, right=0.85)
    _save(plt, fig, plots / "spectral_lines.png")
    drawn += 1

    data_dir = out / "data" / f"seed-{data_seed}"
    if not (data_dir / "train_spectra.pt").is_file():
        return drawn
    data = {s: (torch.load(data_dir / f"{s}_spectra.pt", weights_only=True), torch.load(data_dir / f"{s}_abundances.pt", weights_only=True)) for s in ("train", "test")}

    # train_samples: two of each kind (bare, x only, y only)
    x, a = data["train"]
    fig, ax = plt.subplots(figsize=(14, 8))
    kinds = [(a.sum(1) == 0, "gray"), ((a[:, xc] > 0) & (a[:, yc] == 0), None), ((a[:, xc] == 0) & (a[:, yc] > 0), None)]
    for k, (mask, color) in enumerate(kinds):
        for i, idx in enumerate(torch.where(mask)[0][:2]):
            ax.plot(wl, x[idx].numpy(), color=color or f"C{2 * k + i}", alpha=0.8, linewidth=1.5, label=f"kind {k} #{i}")
    ax.legend()
    ax.grid(True, alpha=0.3)
    _save(plt, fig, plots / "train_samples.png")
    drawn += 1

    # test_samples: five with both tracked components
    x, a = data["test"]
    fig, ax = plt.subplots(figsize=(14, 8))
    for i, idx in enumerate(torch.where((a[:, xc] > 0) & (a[:, yc] > 0))[0][:5]):
        ax.plot(wl, x[idx].numpy(), color=f"C{i}", alpha=0.8, linewidth=1.5, label=f"a1={a[idx, xc]:.2f}, a2={a[idx, yc]:.2f}")
    ax.legend()
    ax.grid(True, alpha=0.3)
    _save(plt, fig, plots / "test_samples.png")
    drawn += 1

    # abundance_scatter
    fig, ax = plt.subplots(figsize=(10, 10))
    for name, color, marker in (("train", "blue", "o"), ("test", "red", "s")):
        ab = data[name][1]
        ax.scatter(ab[:, xc].numpy(), ab[:, yc].numpy(), c=color, marker=marker, alpha=0.5, s=30, label=name)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_aspect("equal")
    ax.legend(fontsize=12)
    ax.grid(True, alpha=0.3)
    _save(plt, fig, plots / "abundance_scatter.png")
    drawn += 1

    runs = sorted((out / "runs").glob("seed-*")) if (out / "runs").is_dir() else []
    if not runs:
        return drawn

    # training_curves: from the checkpoints' stats.json, by checkpoint and by step
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 6))
    for run in runs:
        stats = [json.loads(p.read_text()) for p in (run / "train" / "ckpts").glob("ckpt-*/stats.json")]
        stats.sort(key=lambda s: s["checkpoint_num"])
        for ax, key in ((ax1, "checkpoint_num"), (ax2, "step")):
            ax.plot([s[key] for s in stats], [s["train_loss"] for s in stats], "b-o", alpha=0.8)
            ax.plot([s[key] for s in stats], [s["test_loss"] for s in stats], "r-s", alpha=0.8)
    for ax in (ax1, ax2):
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    _save(plt, fig, plots / "training_curves.png")
    drawn += 1

    traj_path = out / "analysis" / "trajectory_data.csv"
    if not traj_path.is_file():
        return drawn
    df = pd.read_csv(traj_path)
    xcol, ycol = f"component_{xc + 1}_mse", f"component_{yc + 1}_mse"

    # mse_trajectory
    fig, ax = plt.subplots(figsize=(12, 8))
    for i, (_, d) in enumerate(df.groupby("seed")):
        color = f"C{i}"
        ax.plot(d[xcol], d[ycol], "-", color=color, linewidth=2, alpha=0.5)
        ax.scatter(d[xcol].iloc[0], d[ycol].iloc[0], color=color, s=100, marker="o", zorder=5)
        ax.scatter(d[xcol].iloc[-1], d[ycol].iloc[-1], color=color, s=100, marker="s", zorder=5)
        ax.scatter(d[xcol], d[ycol], color=color, s=30, alpha=0.2, zorder=3)
    mean = df.groupby("checkpoint_num")[[xcol, ycol]].mean()
    ax.plot(mean[xcol], mean[ycol], "k--", linewidth=4, alpha=0.8)
    ax.legend(["trajectories"], bbox_to_anchor=(1.05, 1), loc="upper left")
    ax.grid(True, alpha=0.3)
    _save(plt, fig, plots / "mse_trajectory.png")
    drawn += 1

    # mse_time_series
    fig, ax = plt.subplots(figsize=(12, 8))
    for _, d in df.groupby("seed"):
        ax.plot(d["step"], d[xcol], "-", color="blue", alpha=0.3, linewidth=1)
        ax.plot(d["step"], d[ycol], "-", color="red", alpha=0.3, linewidth=1)
    mean = df.groupby("step")[[xcol, ycol]].mean()
    ax.plot(mean.index, mean[xcol], "-", color="blue", linewidth=3)
    ax.plot(mean.index, mean[ycol], "-", color="red", linewidth=3)
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    _save(plt, fig, plots / "mse_time_series.png")
    drawn += 1

    # test_abundance_mse: final checkpoint's predictions, per-sample MSE averaged over seeds
    _, a = data["test"]
    per_sample = []
    for run in runs:
        last = max((run / "train" / "ckpts").glob("ckpt-*"), key=lambda p: int(p.name.split("-")[1]))
        pred = torch.tensor(pd.read_csv(last / "test_predictions.csv").values, dtype=torch.float32)
        per_sample.append([((pred[i] - a[i]) ** 2).mean().item() for i in range(a.shape[0])])  # the tutorial's per-sample loop
    log_mse = np.log10(np.mean(per_sample, axis=0) + 1e-10)
    fig, ax = plt.subplots(figsize=(12, 10))
    vmin, vmax = np.percentile(log_mse, [5, 95])
    sc = ax.scatter(a[:, xc].numpy(), a[:, yc].numpy(), c=log_mse, cmap="viridis", s=50, alpha=0.7,
                    edgecolors="black", linewidth=0.5, vmin=vmin, vmax=vmax)
    plt.colorbar(sc, ax=ax)
    ax.set_aspect("equal")
    ax.grid(True, alpha=0.3)
    _save(plt, fig, plots / "test_abundance_mse.png")
    drawn += 1
    return drawn


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------
def _stage_cmd(args: argparse.Namespace, stage: str, seed: int | None = None) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(args.out), "--stage", stage,
           "--data-seed", str(args.data_seed)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if args.n_train:
        cmd += ["--n-train", str(args.n_train)]
    if args.n_test:
        cmd += ["--n-test", str(args.n_test)]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    return cmd


def _run_stage(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)  # as run.py does
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise RuntimeError(f"stage failed: {' '.join(cmd)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seeds", default="123,124,125")
    p.add_argument("--data-seed", type=int, default=42)
    p.add_argument("--mode", choices=("runpy", "single"), default="runpy")
    p.add_argument("--stage", choices=("generate", "train", "analyse"), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--n-train", type=int, default=0, help="shrink the training split (smoke tests only)")
    p.add_argument("--n-test", type=int, default=0, help="shrink the test split (smoke tests only)")
    p.add_argument("--epochs", type=int, default=0, help="override the epochs (smoke tests only)")
    p.add_argument("--dpi", type=int, default=0, help="override the figures' 300 dpi (smoke tests only)")
    args = p.parse_args(argv)
    if args.dpi:
        os.environ["TUTORIAL_REFERENCE_DPI"] = str(args.dpi)  # the stage subprocesses inherit it
    sizes = {k: v for k, v in (("train", args.n_train), ("test", args.n_test)) if v}

    if args.stage == "generate":
        stage_generate(args.out, args.data_seed, sizes)
        return 0
    if args.stage == "train":
        stage_train(args.out, args.data_seed, args.seed, args.epochs or None)
        return 0
    if args.stage == "analyse":
        stage_analyse(args.out, args.data_seed)
        return 0

    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    pc = time.perf_counter
    start = pc()

    def timed(name: str, fn) -> None:
        t0 = pc()
        fn()
        timings[name] = timings.get(name, 0.0) + pc() - t0

    n_drawn = 0

    def figures() -> None:
        nonlocal n_drawn
        n_drawn += draw_figures(args.out, args.data_seed)

    if args.mode == "runpy":
        timed("generate", lambda: _run_stage(_stage_cmd(args, "generate")))
        timed("figures", figures)
        for seed in seeds:
            timed("train", lambda s=seed: _run_stage(_stage_cmd(args, "train", s)))
        timed("figures", figures)
        timed("analyse", lambda: _run_stage(_stage_cmd(args, "analyse")))
        timed("figures", figures)
    else:
        timed("generate", lambda: stage_generate(args.out, args.data_seed, sizes))
        for seed in seeds:
            timed("train", lambda s=seed: stage_train(args.out, args.data_seed, s, args.epochs or None))
        timed("analyse", lambda: stage_analyse(args.out, args.data_seed))
        timed("figures", figures)
    timings["total_in_process"] = pc() - start
    timings["figures_drawn"] = n_drawn
    print("TIMINGS " + json.dumps({"mode": args.mode, **timings}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
