"""The estimate as text: the table `sweep estimate` prints, the line `sweep submit` prints first, and the budget
check that refuses a submission over ``--max-gpu-hours``."""
from __future__ import annotations

from typing import Any, Mapping

from jobs.cost.estimate import EstimateSettings, estimate_spec

__all__ = ["summary_text", "estimate_text", "check_budget"]


def _h(x: float) -> str:
    if x == 0:
        return "0"
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}" if x >= 1 else f"{x:.3f}" if x >= 0.01 else f"{x:.1e}"


def summary_text(est: Mapping[str, Any]) -> str:
    """A few lines: the total and the stages (what `sweep submit` prints first)."""
    s = est["by_stage"]
    cal = "calibrated" if est.get("calibration") else "uncalibrated"
    return (f"estimate ({est['gpu_name']}, {cal}): {_h(est['total_gpu_hours'])} GPU-hours = train "
            f"{_h(s['train'])} + eval {_h(s['eval'])} + score {_h(s['score'])} (repa-study sweep estimate for how)")


def estimate_text(est: Mapping[str, Any], top: int = 8) -> str:
    lines = [f"sweep {est['spec']}: {est['jobs']['train']} train jobs ({est['runs']} runs), {est['jobs']['eval']} "
             f"eval, {est['jobs']['score']} score, {est['jobs']['analyze']} analyze; GPU-hours on {est['gpu_name']}"
             + (f", every training at {est['all_steps']} steps" if est.get("all_steps") else "")]
    rows = [[m, _h(v["train"]), _h(v["eval"]), _h(v["total"]), str(v["runs"])] for m, v in est["by_model"].items()]
    s = est["by_stage"]
    rows.append(["scoring", "", "", _h(s["score"]), ""])
    rows.append(["total", _h(s["train"]), _h(s["eval"]), _h(est["total_gpu_hours"]), str(est["runs"])])
    head = ["model", "train", "eval", "total", "runs"]
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]
    fmt = "  ".join(f"{{:>{w}}}" if i else f"{{:<{w}}}" for i, w in enumerate(widths))
    lines += ["", fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]
    encs = list(est["by_encoder"].items())[:top]
    if encs:
        lines += ["", "most expensive encoders (train + eval + score): " + ", ".join(
            f"{e} {_h(v['total'])}" for e, v in encs)]
    if est.get("compare"):
        c = est["compare"]
        lines += ["", f"with every training at {c['all_steps']} steps: {_h(c['total_gpu_hours'])} GPU-hours; this plan "
                      f"is {c['ratio']:.3f} of it"]
    fixed = est.get("fixed") or {}
    if fixed.get("per_step"):
        lines += ["", f"fixed per-step costs (optimizer, EMA, casts, last all-reduce bucket): "
                      f"{_h(fixed['train_gpu_hours'])} of the train GPU-hours; per GPU and step " + ", ".join(
                          f"{m} {v['ms_per_gpu']:.3g} ms" for m, v in fixed["per_step"].items())]
    targets = est.get("targets") or {}
    if targets:
        rows = sorted(targets.items(), key=lambda kv: -kv[1]["online_gpu_hours"])[:top]
        lines += ["", "alignment targets, online vs cached (encoder.targets=cache; `repa-study data encode` writes the "
                      "cache once): encoder  mode  online GPU-h  cache GPU-h  cache TB  read GB/s per job"]
        lines += [f"  {e}  {v['mode']}  {_h(v['online_gpu_hours'])}  {_h(v['cache_gpu_hours'])}  "
                  f"{v['cache_tb']:.2f}  {v['read_gb_per_s']:.1f}" for e, v in rows]
    lines += ["", "throughput:"]
    for label, t in est["throughput"].items():
        lines.append(f"  {label}: {t['sustained_tflops']:g} TFLOP/s sustained = {t['peak_tflops']:g} peak x MFU "
                     f"{t['mfu']:g} ({t['source']})")
    lines += ["", "assumptions:", *(f"  - {a}" for a in est["assumptions"])]
    return "\n".join(lines)


def check_budget(spec: Any, max_gpu_hours: float | None, *, gpu: str = "h100") -> str:
    """The summary line `sweep submit` prints first; raises ValueError (nothing submitted) when the estimate
    exceeds ``max_gpu_hours``, or when there is a budget and the estimate cannot be made."""
    try:
        est = estimate_spec(spec, EstimateSettings(gpu=gpu))
    except Exception as exc:  # noqa: BLE001 - an estimate problem must not block a submission without a budget
        if max_gpu_hours is not None:
            raise ValueError(f"cannot estimate the sweep's cost ({type(exc).__name__}: {exc}), so --max-gpu-hours "
                             f"cannot be checked; nothing was submitted") from None
        return f"estimate unavailable ({type(exc).__name__}: {exc})"
    line = summary_text(est)
    if max_gpu_hours is not None and est["total_gpu_hours"] > max_gpu_hours:
        raise ValueError(f"{line}\nthe estimate exceeds --max-gpu-hours {max_gpu_hours:g}; nothing was submitted "
                         f"(lower the sweep, or raise the budget)")
    return line
