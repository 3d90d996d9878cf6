"""Tiny seeded image sets for the generation-metric tests (no dependency on study.data)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

PALETTE = torch.tensor([[230, 40, 40], [40, 200, 60], [50, 60, 220], [220, 200, 40]])


def toy_images(n: int, size: int = 32, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [n,3,size,size]: a class-coloured disc (even classes) or square (odd) on a noisy grey background."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cx = torch.randint(size // 4, 3 * size // 4, (n,), generator=g)[:, None, None]
    cy = torch.randint(size // 4, 3 * size // 4, (n,), generator=g)[:, None, None]
    r = torch.randint(size // 8, size // 4, (n,), generator=g)[:, None, None]
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2
    square = ((xx - cx).abs() <= r) & ((yy - cy).abs() <= r)
    shape = torch.where((labels % 2 == 0)[:, None, None], disc, square)
    background = 90.0 + 8.0 * torch.randn(n, 3, size, size, generator=g)
    foreground = PALETTE[labels % len(PALETTE)].float()[:, :, None, None].expand(-1, -1, size, size)
    return torch.where(shape[:, None], foreground, background).clamp(0, 255).to(torch.uint8), labels


def add_noise(images: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (images.float() + sigma * torch.randn(images.shape, generator=g)).clamp(0, 255).to(torch.uint8)


def box_blur(images: torch.Tensor, k: int) -> torch.Tensor:
    w = torch.ones(3, 1, k, k) / (k * k)
    x = F.pad(images.float(), (k // 2,) * 4, mode="replicate")
    return F.conv2d(x, w, groups=3).round().clamp(0, 255).to(torch.uint8)


class ToyDataset(torch.utils.data.Dataset):
    """Stands in for study.data's ImageDataset (same item layout and attributes)."""

    def __init__(self, n: int = 256, size: int = 32, seed: int = 0):
        self.images, self.labels = toy_images(n, size, seed=seed)
        self.num_classes, self.image_size, self.has_masks = 4, size, False
        self.id = f"toy:n={n},size={size},seed={seed}"

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": int(self.labels[i]), "mask": None}
