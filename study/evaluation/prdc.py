"""k-NN precision/recall (Kynkäänniemi et al., k=3) and the Inception Score, as ADM's ``evaluator.py`` computes them.

Precision/recall: each feature set defines a manifold, the union of balls around its points whose radius is the
*squared* distance to the k-th nearest neighbour, counting the point itself as the 0-th (so k=3 is the third
other point). Precision = fraction of samples inside the reference manifold; recall = fraction of reference points
inside the sample manifold. ADM computes distances in fp16 (fp32 if anything overflows); we do the same on CUDA
and use fp32 on CPU (P/R differ by ~1e-3 at most between the two).

Inception Score: softmax of the bias-free logits, split into consecutive chunks of 5000, ``exp(E KL(p(y|x) ‖ p(y)))``
per chunk, mean over chunks (ADM reports the mean only).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["pairwise_sq_distances", "manifold_radii", "precision_recall", "inception_score"]


def _as_tensor(x: Any, device: torch.device | None) -> torch.Tensor:
    t = x.float() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float32))
    return t.to(device) if device is not None else t


def pairwise_sq_distances(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[len(u), len(v)]`` in float32, via ``|u|² − 2uv + |v|²`` clipped at 0 (fp16
    first on CUDA, like ADM, with an fp32 retry when non-finite)."""
    if u.is_cuda:
        uh, vh = u.half(), v.half()
        d = ((uh * uh).sum(1, keepdim=True) - 2 * uh @ vh.T + (vh * vh).sum(1)[None]).clamp_min(0)
        if torch.isfinite(d).all():
            return d.float()
    u, v = u.float(), v.float()
    return ((u * u).sum(1, keepdim=True) - 2 * u @ v.T + (v * v).sum(1)[None]).clamp_min(0)


def manifold_radii(features: Any, k: int = 3, *, batch_size: int = 10000,
                   device: str | torch.device | None = None) -> np.ndarray:
    """Squared distance of each point to its k-th nearest neighbour (the point itself is the 0-th)."""
    x = _as_tensor(features, torch.device(device) if device else None)
    if len(x) <= k:
        raise ValueError(f"need more than k={k} points for k-NN radii, got {len(x)}")
    radii = torch.empty(len(x), dtype=torch.float32)
    for i in range(0, len(x), batch_size):
        d = torch.cat([pairwise_sq_distances(x[i:i + batch_size], x[j:j + batch_size])
                       for j in range(0, len(x), batch_size)], dim=1)
        radii[i:i + batch_size] = torch.kthvalue(d, k + 1, dim=1).values.cpu()
    return radii.numpy()


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch_size: int) -> np.ndarray:
    """For each point, whether it lies within radius of at least one centre."""
    out = torch.zeros(len(points), dtype=torch.bool)
    for i in range(0, len(points), batch_size):
        hit = torch.zeros(min(batch_size, len(points) - i), dtype=torch.bool, device=points.device)
        for j in range(0, len(centres), batch_size):
            d = pairwise_sq_distances(points[i:i + batch_size], centres[j:j + batch_size])
            hit |= (d <= radii[j:j + batch_size][None]).any(dim=1)
        out[i:i + batch_size] = hit.cpu()
    return out.numpy()


def precision_recall(ref_features: Any, sample_features: Any, k: int = 3, *, batch_size: int = 10000,
                     device: str | torch.device | None = None) -> tuple[float, float]:
    """``(precision, recall)`` of samples against reference features (ADM: 10K reference images vs all samples)."""
    dev = torch.device(device) if device else None
    ref, smp = _as_tensor(ref_features, dev), _as_tensor(sample_features, dev)
    if ref.shape[1] != smp.shape[1]:
        raise ValueError(f"reference features are {ref.shape[1]}-d but sample features {smp.shape[1]}-d")
    r_ref = torch.as_tensor(manifold_radii(ref, k, batch_size=batch_size)).to(ref.device)
    r_smp = torch.as_tensor(manifold_radii(smp, k, batch_size=batch_size)).to(smp.device)
    precision = float(_inside(smp, ref, r_ref, batch_size).mean())
    recall = float(_inside(ref, smp, r_smp, batch_size).mean())
    return precision, recall


def inception_score(logits: Any, split_size: int = 5000) -> float:
    """ADM's Inception Score from bias-free logits ``[N, C]`` (consecutive splits of ``split_size``)."""
    x = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"logits must be [N, C] with N > 0, got shape {tuple(x.shape)}")
    scores = []
    for i in range(0, len(x), split_size):
        logp = torch.log_softmax(x[i:i + split_size], dim=1)
        log_py = torch.logsumexp(logp, dim=0) - np.log(len(logp))
        kl = (logp.exp() * (logp - log_py[None])).sum(1).mean()
        scores.append(float(torch.exp(kl)))
    return float(np.mean(scores))
