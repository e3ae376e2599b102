"""Check the whole GPU path on any CUDA machine, in one command; every figure goes to a JSON file.

1. placement: a dcgan28 trial and a dcgan64 trial (`ganops sweep`, gpus_per_worker 1) train on
   the GPU; their MLflow runs' `ganops.placement` tag must show parameters, optimizer state,
   batches, fixed noise and the eval network all on cuda.
2. step: images/s of ganops' train step against a plain PyTorch loop of the same net on the
   same GPU (pytorch/examples' dcgan step, autocast + one GradScaler for fp16), for fp32, bf16
   and fp16, with torch.compile off and on (compile: ganops compiled, the plain loop not, so
   the ratio says whether compile pays). Target: ganops >= 1.0x the plain loop.
3. sharing: 8 dcgan28 trials at gpus_per_worker 0.25 (four at a time on one GPU) against the
   same 8 at 1 GPU each (one at a time). Target: >= 3x the images/s of one trial alone.

Without CUDA it says so and exits 0 (`--cpu-smoke` runs every part on the CPU with tiny
sizes, to check the script itself).

    python bench/gpu_check.py --out gpu_check.json
    python bench/gpu_check.py --skip-sharing --iters 200        # the step figures only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.step_throughput import digits_folder  # noqa: E402
from trainers.config import TrainerConfig  # noqa: E402
from trainers.data import make_data  # noqa: E402
from trainers.models import build_models, sample_latent  # noqa: E402
from trainers.precision import DTYPES, build_precision  # noqa: E402
from trainers.step import build_optimizers, train_step  # noqa: E402

PRECISIONS = ("fp32", "bf16", "fp16")


def _machine(device: torch.device) -> dict:
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(
            gpu=p.name,
            capability=f"{p.major}.{p.minor}",
            gpu_memory_gib=round(p.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
        )
    return info


def _cfg(model: str, folder: str, **kw) -> TrainerConfig:
    if model == "dcgan64":
        return TrainerConfig(model=model, data="image_folder", data_dir=folder, image_size=64, channels=3, **kw)
    return TrainerConfig(model=model, data="mnist", **kw)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _setup(cfg: TrainerConfig, device: torch.device):
    torch.manual_seed(0)
    G, D = build_models(cfg)
    G.to(device), D.to(device)
    if cfg.channels_last:
        G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    opt_g, opt_d = build_optimizers(G, D, cfg)
    data = make_data(cfg).to(device)
    return G, D, opt_g, opt_d, data, torch.Generator(device=device).manual_seed(0)


def plain_loop(cfg: TrainerConfig, device: torch.device, iters: int) -> float:
    """pytorch/examples' dcgan step, on `device`, with autocast and (fp16) one GradScaler; images/s."""
    G, D, opt_g, opt_d, data, gen = _setup(cfg, device)
    dtype = DTYPES[cfg.precision]
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    B = cfg.batch_size

    def step():
        real = data.sample(B, gen)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            D.zero_grad()
            out = D(real).view(-1)
            err_real = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
            fake = G(sample_latent(B, cfg, gen))
            out = D(fake.detach()).view(-1)
            err_fake = F.binary_cross_entropy_with_logits(out, torch.zeros_like(out))
            err_d = err_real + err_fake
        (scaler.scale(err_d) if scaler else err_d).backward()
        scaler.step(opt_d) if scaler else opt_d.step()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            G.zero_grad()
            out = D(fake).view(-1)
            err_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        (scaler.scale(err_g) if scaler else err_g).backward()
        if scaler:
            scaler.step(opt_g)
            scaler.update()
        else:
            opt_g.step()
        _ = err_d.item(), err_g.item(), torch.sigmoid(out.float()).mean().item()  # the host syncs ganops makes

    for _ in range(5):
        step()  # warm-up: cuDNN autotune, allocator
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return B * iters / (time.perf_counter() - t0)


def ganops_step(cfg: TrainerConfig, device: torch.device, iters: int) -> tuple[float, float]:
    """(images/s, seconds spent before the timed iterations: warm-up, with compile its compile time)."""
    G, D, opt_g, opt_d, data, gen = _setup(cfg, device)
    precision = build_precision(cfg.precision, device)
    t_start = time.perf_counter()
    if cfg.compile:
        # Dynamo caches compiled code per function across model instances: the earlier
        # configurations' graphs would count toward its recompile limit (then it runs eager).
        torch._dynamo.reset()
        G.compile()
        D.compile()
    for i in range(5):
        train_step(G, D, opt_g, opt_d, data, cfg, gen, step=i + 1, precision=precision)
    _sync(device)
    warm = time.perf_counter() - t_start
    t0 = time.perf_counter()
    for i in range(iters):
        train_step(G, D, opt_g, opt_d, data, cfg, gen, step=i + 6, precision=precision)
    _sync(device)
    return cfg.batch_size * iters / (time.perf_counter() - t0), warm


def step_figures(
    device: torch.device, folder: str, iters: int, repeats: int, batch: int, width: int, compile_modes
) -> list[dict]:
    rows = []
    for model in ("dcgan28", "dcgan64"):
        for precision in PRECISIONS:
            if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
                rows.append({"model": model, "precision": precision, "skipped": "bf16 unsupported on this GPU"})
                continue
            for compiled in compile_modes:
                cfg = _cfg(
                    model,
                    folder,
                    batch_size=batch,
                    width=width,
                    precision=precision,
                    compile=compiled,
                    channels_last=device.type == "cuda",
                )
                ref, ours, warm = [], [], []
                for _ in range(repeats):  # alternate, so drift hits both alike
                    ref.append(plain_loop(cfg.model_copy(update={"compile": False}), device, iters))
                    rate, w = ganops_step(cfg, device, iters)
                    ours.append(rate), warm.append(w)
                row = {
                    "model": model,
                    "precision": precision,
                    "compile": compiled,
                    "batch": batch,
                    "width": width,
                    "plain_img_s": round(statistics.median(ref), 1),
                    "ganops_img_s": round(statistics.median(ours), 1),
                    "ratio": round(statistics.median(ours) / statistics.median(ref), 3),
                    "warmup_s": round(max(warm), 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def _sweep(text: str, home: Path):
    """Run a spec through ganops' own API in a fresh GANOPS_HOME; (result, MlflowClient)."""
    from mlflow import MlflowClient

    from orchestrator.api import run_sweep, spec_from_text

    os.environ["GANOPS_HOME"] = str(home)
    result = run_sweep(spec_from_text(text), spec_text=text)
    return result, MlflowClient(result.tracking_uri)


NO_BALANCE_STOPS = {"d_overpowers": None, "d_fooled": None, "mode_collapse": None, "gradient_explosion": None}


def _spec(name: str, trainer: dict, gpus: float, **sweep) -> str:
    import yaml

    return yaml.safe_dump(
        {
            "name": name,
            "trainer": trainer,
            "sweep": {"num_samples": 1, **sweep},
            "resources": {"gpus_per_worker": gpus},
            "stopping": NO_BALANCE_STOPS,
        },
        sort_keys=False,
    )


def placement_figures(device: torch.device, folder: str, steps: int, home: Path) -> list[dict]:
    gpus = 1 if device.type == "cuda" else 0
    rows = []
    for model in ("dcgan28", "dcgan64"):
        data = (
            {"data": "image_folder", "data_dir": folder, "image_size": 64, "channels": 3}
            if model == "dcgan64"
            else {"data": "mnist"}
        )
        text = _spec(
            f"gpu-check-{model}",
            {"model": model, **data, "steps": steps, "eval_every": steps, "width": 16, "eval_samples": 256},
            gpus,
        )
        result, client = _sweep(text, home / model)
        trial = result.trials[0]
        tags = client.get_run(trial.run_id).data.tags
        report = json.loads(tags.get("ganops.placement", "{}"))
        row = {
            "model": model,
            "status": trial.status,
            "device_tag": tags.get("ganops.device"),
            "placement": report,
            "gpu_mem_peak_mb": trial.metrics.get("gpu_mem_peak_mb"),
            "on_device": bool(report)
            and not report.get("off_device")
            and report.get("device", "").startswith(device.type),
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "placement"}), flush=True)
    return rows


def sharing_figures(device: torch.device, steps: int, home: Path, trials: int = 8) -> dict:
    """`trials` dcgan28 trials at 0.25 GPU (four at a time) against as many at 1 GPU (one at a time)."""
    import yaml

    out = {}
    for label, gpus, concurrent in (("alone", 1.0, 1), ("shared", 0.25, 4)):
        gpus = gpus if device.type == "cuda" else 0
        spec = yaml.safe_load(
            _spec(
                f"gpu-share-{label}",
                {
                    "model": "dcgan28",
                    "data": "mnist",
                    "steps": steps,
                    "eval_every": steps,
                    "width": 32,
                    "batch_size": 64,
                    "eval_samples": 256,
                },
                gpus,
                max_concurrent_trials=concurrent,
            )
        )
        spec["sweep"]["num_samples"] = trials
        spec["search"] = {"lr_d": {"loguniform": [1e-4, 1e-3]}}
        t0 = time.perf_counter()
        result, _ = _sweep(yaml.safe_dump(spec), home / label)
        wall = time.perf_counter() - t0
        done = [t for t in result.trials if t.metrics.get("train_seconds")]
        images = sum(t.metrics["step"] * 64 for t in done)
        per_trial = [t.metrics["step"] * 64 / t.metrics["train_seconds"] for t in done]
        out[label] = {
            "trials": len(done),
            "gpus_per_worker": gpus,
            "concurrent": concurrent,
            "wall_s": round(wall, 1),
            "sweep_img_s": round(images / wall, 1),  # everything: Ray Train start-up, evals, checkpoints
            "training_img_s_per_trial": round(statistics.median(per_trial), 1) if per_trial else None,
            # while `concurrent` trials (at most the trials there are) train at once, each at its own rate
            "training_img_s_aggregate": round(statistics.median(per_trial) * min(concurrent, len(per_trial)), 1)
            if per_trial
            else None,
        }
        print(json.dumps({label: out[label]}), flush=True)
    a, s = out["alone"], out["shared"]
    if a["training_img_s_aggregate"] and s["training_img_s_aggregate"]:
        out["training_speedup"] = round(s["training_img_s_aggregate"] / a["training_img_s_aggregate"], 2)
        out["sweep_speedup"] = round(s["sweep_img_s"] / a["sweep_img_s"], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_check.json", help="JSON file for every figure")
    ap.add_argument("--iters", type=int, default=300, help="timed iterations per step measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--trial-steps", type=int, default=300, help="steps of each placement trial")
    ap.add_argument("--share-steps", type=int, default=1500, help="steps of each of the 8 sharing trials")
    ap.add_argument(
        "--skip-compile", action="store_true", help="compile off only (compiling takes tens of seconds per net)"
    )
    ap.add_argument("--skip-sharing", action="store_true")
    ap.add_argument("--skip-trials", action="store_true")
    ap.add_argument("--skip-step", action="store_true")
    ap.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="no CUDA: run every part on the CPU with tiny sizes (checks the script)",
    )
    args = ap.parse_args()

    if not torch.cuda.is_available() and not args.cpu_smoke:
        print(
            f"no CUDA GPU visible to torch {torch.__version__} (torch.cuda.is_available() is False): nothing to "
            "check here. "
            "Run this on a machine with a CUDA GPU; `--cpu-smoke` exercises the script on the CPU."
        )
        Path(args.out).write_text(json.dumps({"cuda": False, "machine": _machine(torch.device("cpu"))}, indent=2))
        return 0
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if args.cpu_smoke:
        args.iters, args.repeats, args.width, args.trial_steps, args.share_steps = 3, 1, 8, 20, 20
    result: dict = {"cuda": device.type == "cuda", "machine": _machine(device), "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        folder = Path(tmp) / "digits"
        folder.mkdir()
        digits_folder(folder)
        if not args.skip_trials:
            result["placement"] = placement_figures(device, str(folder), args.trial_steps, Path(tmp) / "runs")
        if not args.skip_step:
            result["step"] = step_figures(
                device,
                str(folder),
                args.iters,
                args.repeats,
                args.batch,
                args.width,
                (False,) if args.skip_compile else (False, True),
            )
        if not args.skip_sharing:
            result["sharing"] = sharing_figures(
                device, args.share_steps, Path(tmp) / "share", trials=2 if args.cpu_smoke else 8
            )
    Path(args.out).write_text(json.dumps(result, indent=2))
    failed = [r["model"] for r in result.get("placement", []) if not r["on_device"]]
    print(f"wrote {args.out}" + (f"; NOT on {device}: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
