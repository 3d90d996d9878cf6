"""REPA-E's latent normalisation: a BatchNorm2d without affine parameters in place of fixed scale/bias.

[CODE] ``models/sit.py``: ``BatchNorm2d(C, eps=1e-4, momentum=0.1, affine=False, track_running_stats=True)``,
running stats initialised from the VAE's latent statistics (mean, 1/scale^2). The SiT's training pass normalises
with batch statistics (and updates the running ones); the VAE's alignment pass and sampling use the running ones
(of the EMA copy, for sampling: ``generate.py`` decodes with ``ema.bn.running_var.rsqrt()`` / ``running_mean``).
No affine parameters, so the diffusion loss cannot rescale the latents away.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from study.data import LatentStats

__all__ = ["LatentBatchNorm", "update_bn_ema"]


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class LatentBatchNorm(nn.BatchNorm2d):
    """Per-channel batch norm of raw VAE latents ``[B, C, h, w]``; state-dict keys as the official ``bn``.

    In training mode with several ranks the batch statistics are those of the global micro-batch (as the
    official SyncBatchNorm), so N ranks normalise like one process.
    """

    def __init__(self, channels: int, *, momentum: float = 0.1, eps: float = 1e-4) -> None:
        super().__init__(channels, eps=eps, momentum=momentum, affine=False, track_running_stats=True)

    @torch.no_grad()
    def init_from_stats(self, stats: LatentStats) -> None:
        """Running mean = ``stats.bias``, running var = ``1 / stats.scale**2`` (the official ``init_bn``)."""
        scale = torch.tensor(stats.scale, dtype=torch.float32, device=self.running_var.device)
        if scale.numel() != self.num_features:
            raise ValueError(f"latent statistics have {scale.numel()} channels, the latents {self.num_features}")
        self.running_mean.copy_(torch.tensor(stats.bias, dtype=torch.float32))
        self.running_var.copy_(scale.pow(-2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not self.training or _world() == 1:
            return super().forward(z)
        if z.requires_grad:
            raise RuntimeError("LatentBatchNorm's multi-rank batch statistics are for detached latents (the SiT "
                               "pass); the VAE's pass uses the running statistics (normalize_frozen)")
        return self._global_batch_norm(z)

    @torch.no_grad()
    def _global_batch_norm(self, z: torch.Tensor) -> torch.Tensor:
        zf = z.float()
        n = torch.tensor([zf.numel() / zf.shape[1]], device=z.device, dtype=torch.float64)
        sums = torch.cat([zf.sum((0, 2, 3)), zf.pow(2).sum((0, 2, 3))]).double()
        dist.all_reduce(sums)
        dist.all_reduce(n)
        mean, sq = sums.chunk(2)
        mean, var = mean / n, sq / n - (mean / n) ** 2
        m = self.momentum
        self.running_mean.mul_(1 - m).add_(mean.float(), alpha=m)
        self.running_var.mul_(1 - m).add_((var * n / (n - 1)).float(), alpha=m)
        self.num_batches_tracked.add_(1)
        shape = (1, -1, 1, 1)
        return ((zf - mean.float().view(shape)) / torch.sqrt(var.float().view(shape) + self.eps)).to(z.dtype)

    def normalize_frozen(self, z: torch.Tensor) -> torch.Tensor:
        """Normalise with the running statistics whatever the mode, without updating them (gradient flows to z).
        Copies of the statistics: autograd keeps them for backward, and the SiT pass updates the originals."""
        return F.batch_norm(z, self.running_mean.clone(), self.running_var.clone(), None, None, False, 0.0, self.eps)

    def latent_stats(self, source: str = "repae-bn") -> LatentStats:
        """The running statistics as a codec's ``(z - bias) * scale``: scale ``rsqrt(var)``, as ``generate.py``."""
        scale = self.running_var.detach().float().rsqrt().cpu().tolist()
        bias = self.running_mean.detach().float().cpu().tolist()
        return LatentStats(tuple(scale), tuple(bias), source)


@torch.no_grad()
def update_bn_ema(ema: LatentBatchNorm, bn: LatentBatchNorm, decay: float) -> None:
    """[CODE] ``update_ema`` also averages float buffers (the BN running stats) and copies the others."""
    for name, buf in bn.named_buffers():
        target = dict(ema.named_buffers())[name]
        if buf.is_floating_point():
            target.mul_(decay).add_(buf, alpha=1 - decay)
        else:
            target.copy_(buf)
