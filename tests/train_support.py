"""Helpers shared by the training and sampling tests (engineer "train")."""
from __future__ import annotations

import socket

import torch

SMOKE_DATA = "synthetic:n=64,size=32,classes=4,seed=0"


class _SyntheticStandIn(torch.utils.data.Dataset):
    """study.data.synthetic as an ImageDataset, used only while study.data.open_dataset has not landed."""

    def __init__(self, n: int = 64, size: int = 32, classes: int = 4, seed: int = 0) -> None:
        from study.data.synthetic import make_synthetic

        self.images, self.labels, _ = make_synthetic(n, size, classes, seed)
        self.num_classes, self.image_size, self.id, self.has_masks = classes, size, f"synthetic-{n}-{size}", False

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": int(self.labels[i]), "mask": None}


def install_dataset_fallback() -> None:
    import study.data
    import study.train

    if not hasattr(study.data, "open_dataset"):
        def open_train_dataset(cfg):
            kv = dict(p.split("=") for p in cfg.data.spec.split(":", 1)[1].split(","))
            return _SyntheticStandIn(int(kv["n"]), int(kv["size"]), int(kv["classes"]), int(kv["seed"]))
        study.train.open_train_dataset = open_train_dataset


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smoke_config(*overrides: str):
    from study.train import load_train_config

    return load_train_config("smoke", [f"data.spec={SMOKE_DATA}", "device=cpu", *overrides])


def params(run_dir, step: int) -> dict[str, torch.Tensor]:
    from study.train import checkpoint_path

    state = torch.load(checkpoint_path(run_dir, step), map_location="cpu", weights_only=False)
    return {**{f"model.{k}": v for k, v in state["model"].items()}, **{f"ema.{k}": v for k, v in state["ema"].items()}}
