"""Synthetic generation and encoder rows of a small study (the analysis tests and the analyze CLI test)."""
import numpy as np
import pandas as pd


def study_rows(seed=0, quality="fd_synthetic"):
    rng = np.random.default_rng(seed)
    gen, enc = [], []
    for i, e in enumerate(["tiny-a", "tiny-b", "tiny-c", "tiny-d", "tiny-a@clsmix=0.3"]):
        lds = 0.05 + 0.08 * i
        enc.append({"job_id": f"score-{e}", "encoder": e, "dataset": "synthetic:n=64", "lds": lds, "cds": lds / 8,
                    "srss": lds + 0.1 * rng.random(), "rmsc": 0.5 + lds, "lp_top1": 0.2 + 0.1 * rng.random()})
        for method in ("repa", "irepa"):
            for step in (50, 100):
                gen.append({"job_id": f"{e}-{method}-{step}", "encoder": e, "model": "smoke", "method": method,
                            "seed": 0, "step": step, "n_samples": 64, "reference": "synthetic-ref",
                            "extractor": "synthetic", "sampler_mode": "sde", "sampler_steps": 20, "cfg_scale": 1.0,
                            quality: 30 - 30 * lds + (4 if method == "repa" else 0) + (100 - step) / 10
                            + rng.normal(scale=0.3)})
    return pd.DataFrame(gen), pd.DataFrame(enc)
