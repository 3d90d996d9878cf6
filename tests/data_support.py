"""Small data the data tests make: a tiny random-init SD-VAE stand-in and a tiny ImageNet folder."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CLASSES = ["n01440764", "n01443537", "n01484850"]


def tiny_vae(seed=0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4,
                         norm_num_groups=4, sample_size=64)


def write_fake_imagenet(root: Path, per_class=(4, 2), masks=True, seed=0) -> Path:
    """A tiny ImageNet: JPEG/PNG images of assorted sizes; val masks in ImageNet-S RGB encoding for some images."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "val"), per_class):
        for c, wnid in enumerate(CLASSES):
            d = root / split / wnid
            d.mkdir(parents=True)
            for i in range(count):
                h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                arr[: h // 2] = (c * 80, 50, 200 - c * 60)  # class-dependent top half
                ext = ".JPEG" if i % 2 == 0 else ".png"
                Image.fromarray(arr).save(d / f"{wnid}_{split}{i}{ext}")
                if masks and split == "val" and i == 0:
                    md = root / "masks" / split / wnid
                    md.mkdir(parents=True, exist_ok=True)
                    seg = np.zeros((h, w, 3), dtype=np.uint8)
                    seg[h // 4: 3 * h // 4, w // 4: 3 * w // 4, 0] = c + 1  # class id c+1 = R + 256*G
                    seg[:2, :2] = (1000 % 256, 1000 // 256, 0)  # "ignore" counts as background
                    Image.fromarray(seg).save(md / f"{wnid}_{split}{i}.png")
    (root / "train" / "README.txt").write_text("stray files are ignored")
    return root
