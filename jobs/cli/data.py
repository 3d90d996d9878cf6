"""`repa-study data prepare | encode | show`: prepare ImageNet shards (images + SD-VAE moments), cache an encoder's
alignment targets, and inspect datasets."""
from __future__ import annotations

import json

import click


@click.group("data")
def data_group() -> None:
    """Datasets: prepare ImageNet (cropped images + SD-VAE latents) and inspect any dataset spec."""


@data_group.command("prepare")
@click.option("--src", type=click.Path(file_okay=False), help="ImageNet-style folder: SRC/<split>/<class>/*.JPEG.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory (OUT/<split>/...).")
@click.option("--split", "splits", multiple=True, type=click.Choice(["train", "val"]), default=("train",),
              show_default=True, help="Split(s) to prepare; repeat for both.")
@click.option("--shard", default="0/1", show_default=True,
              help="This task's share I/N (shards k with k % N == I), or 'slurm' for the array task.")
@click.option("--shard-size", default=1000, show_default=True, help="Images per shard.")
@click.option("--size", default=256, show_default=True, help="Center-crop size in px.")
@click.option("--batch-size", default=64, show_default=True, help="Images per VAE forward.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda when available), cpu, cuda, cuda:1...")
@click.option("--vae", default="stabilityai/sd-vae-ft-mse", show_default=True,
              help="AutoencoderKL repo id or local diffusers folder; 'none' stores images only.")
@click.option("--workers", default=4, show_default=True, help="DataLoader workers decoding JPEGs.")
@click.option("--stats", "stats_only", is_flag=True,
              help="Only (re)compute latent_stats.json from complete shards (no --src needed).")
@click.option("--masks", type=click.Path(exists=True, file_okay=False), default=None,
              help="ImageNet-S style foreground masks (MASKS/[<split>/]<class>/<stem>.png) the manifest points to, "
                   "for SRSS; may be added to a prepared split by running again with it.")
def prepare_cmd(src, out, splits, shard, shard_size, size, batch_size, device, vae, workers, stats_only,
                masks) -> None:
    """Write center-cropped uint8 images and SD-VAE posterior moments into resumable shards.

    Rerun the same command after a kill: finished shards are skipped. Split the work over an array job with
    --shard I/N (or --shard slurm). The last task to finish writes the latent scale/bias statistics.
    """
    from study.data import compute_latent_stats, parse_shard, prepare_split

    if stats_only:
        for split in splits:
            click.echo(f"{split}: wrote {compute_latent_stats(out, split)}")
        return
    if not src:
        raise click.UsageError("--src is required (unless --stats)")
    task, num_tasks = parse_shard(shard)
    codec = None
    if vae != "none":
        import torch

        from study.data import SDVAECodec

        dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        codec = SDVAECodec(vae, device=dev)
        codec.vae  # load now, so a missing download fails before any work
    for split in splits:
        res = prepare_split(src, out, split, task=task, num_tasks=num_tasks, shard_size=shard_size, size=size,
                            batch_size=batch_size, codec=codec, workers=workers, masks=masks)
        click.echo(f"{split}: task {task}/{num_tasks} wrote {len(res['written'])} shards, skipped "
                   f"{len(res['skipped'])} done, of {res['num_shards']}"
                   + (f"; statistics {res['stats']}" if res["stats"] else ""))


@data_group.command("encode")
@click.option("--encoder", "encoder_name", required=True, help="Catalog name (or NAME@clsmix=ALPHA) of the encoder.")
@click.option("--data", "spec", required=True, help="The training data: a prepared directory (or any dataset spec).")
@click.option("--split", default="train", show_default=True)
@click.option("--weights", default="pretrained", show_default=True, type=click.Choice(["pretrained", "random", "tiny"]))
@click.option("--bf16/--no-bf16", default=True, show_default=True,
              help="The trainings' encoder.bf16 (the imagenet preset's: true): bf16 weights and autocast on a GPU.")
@click.option("--shard", default="0/1", show_default=True,
              help="This task's share I/N (shards k with k % N == I), or 'slurm' for the array task.")
@click.option("--shard-size", type=int, default=None, help="Images per shard (default: the prepared data's, or 1000).")
@click.option("--batch-size", default=128, show_default=True, help="Images per encoder forward.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda when available), cpu, cuda, cuda:1...")
@click.option("--workers", default=4, show_default=True, help="DataLoader workers reading the images.")
def encode_cmd(encoder_name, spec, split, weights, bf16, shard, shard_size, batch_size, device, workers) -> None:
    """Write an encoder's patch tokens of every image once (bf16, resumable shards), for training with
    encoder.targets=cache instead of running the encoder on every step.

    Rerun the same command after a kill: finished shards are skipped. Split the work over an array job with
    --shard I/N (or --shard slurm). `repa-study sweep estimate` says what the cache saves and what it takes on disk.
    """
    from study.common import resolve_device
    from study.data import parse_shard, write_targets
    from study.pretrain import load_encoder

    task, num_tasks = parse_shard(shard)
    dev = resolve_device(device)
    enc = load_encoder(encoder_name, weights=weights, device=dev, bf16=bf16 and dev.type == "cuda")
    res = write_targets(enc, spec, split, weights=weights, bf16=bf16, task=task, num_tasks=num_tasks,
                        shard_size=shard_size, batch_size=batch_size, workers=workers)
    click.echo(f"{res['directory']}: task {task}/{num_tasks} wrote {len(res['written'])} shards, skipped "
               f"{len(res['skipped'])} done, of {res['num_shards']}")


@data_group.command("show")
@click.argument("spec")
@click.option("--split", default="train", show_default=True)
@click.option("--size", type=int, default=None)
@click.option("--masks", type=click.Path(exists=True, file_okay=False), default=None,
              help="A masks folder to open the dataset with (folders and prepared directories).")
def show_cmd(spec: str, split: str, size: int | None, masks: str | None) -> None:
    """Open a dataset spec (synthetic[:k=v,...], ImageNet-style folder, prepared dir) and print its summary."""
    from study.data import open_dataset

    ds = open_dataset(spec, split, size=size, masks=masks)
    counts = ds.labels.bincount(minlength=ds.num_classes)
    paths = getattr(ds, "mask_paths", None)
    n_masks = sum(p is not None for p in paths) if paths is not None else (len(ds) if ds.has_masks else 0)
    click.echo(json.dumps({"id": ds.id, "images": len(ds), "classes": ds.num_classes, "image_size": ds.image_size,
                           "has_masks": ds.has_masks, "images_with_masks": n_masks,
                           "per_class_min": int(counts.min()), "per_class_max": int(counts.max())}, indent=1))


def register(cli: click.Group) -> None:
    cli.add_command(data_group)
