"""`repa-study encoders features | score`: cache encoder features; score spatial structure and linear-probe accuracy."""
from __future__ import annotations

import contextlib
import json
import math

import click

WEIGHTS = click.Choice(["pretrained", "random", "tiny"])


@contextlib.contextmanager
def _user_errors():
    """Bad names, data or missing weights -> a one-line error instead of a traceback."""
    from encoders import UnknownEncoderError

    try:
        yield
    except (UnknownEncoderError, FileNotFoundError, ValueError) as exc:  # incl. MissingWeightsError, DatasetError
        raise click.ClickException(str(exc)) from exc


def _common(fn):
    fn = click.option("--bf16", is_flag=True, help="Run the encoder under bf16 autocast (cached apart from fp32).")(fn)
    fn = click.option("--weights", type=WEIGHTS, default="pretrained", show_default=True,
                      help="Encoder weights; 'tiny' = offline random-init stand-ins (tests, embedded study).")(fn)
    fn = click.option("--device", default="auto", show_default=True, help="cuda, cpu, cuda:1, or auto.")(fn)
    fn = click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)(fn)
    fn = click.option("--workers", "num_workers", type=click.IntRange(min=0), default=None,
                      help="Data-loading workers (default: 0 on CPU, up to 8 on GPU).")(fn)
    fn = click.option("--limit", type=click.IntRange(min=1), default=None,
                      help="Use a seeded random subset of N images per split (default: all).")(fn)
    fn = click.option("--data", "data", required=True,
                      help="Dataset spec: 'synthetic', 'synthetic:n=512,size=64', or an ImageNet-style folder.")(fn)
    return fn


@click.command("features")
@click.argument("name")
@_common
@click.option("--split", type=click.Choice(["train", "val"]), default="train", show_default=True)
@click.option("--masks", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of foreground masks aligned with the images by file name (for SRSS).")
def features_cmd(name: str, data: str, split: str, limit: int | None, weights: str, device: str, batch_size: int,
                 num_workers: int | None, masks: str | None, bf16: bool) -> None:
    """Extract NAME's pooled features and per-image spatial metrics on DATA/SPLIT into the cache (resumable)."""
    from study.features import extract_encoder_features

    with _user_errors():
        fs = extract_encoder_features(name, data, split, limit, weights=weights, device=device,
                                      batch_size=batch_size, num_workers=num_workers, masks=masks, bf16=bf16)
    click.echo(f"{fs.meta['encoder']} on {fs.meta['dataset']} ({split}): {fs.n} images, dim {fs.meta['embed_dim']}, "
               f"cls {'yes' if fs.cls is not None else 'no'}, masks {fs.meta['masks']}")
    click.echo(f"cache: {fs.path}")


@click.command("score")
@click.argument("names", nargs=-1, required=True)
@_common
@click.option("--split", default="val", show_default=True, help="Split scored (metrics and probe accuracy).")
@click.option("--masks", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of foreground masks aligned with the val images (SRSS); default: the dataset's own.")
@click.option("--train-limit", type=click.IntRange(min=1), default=None,
              help="Images of the train split for the probe (default: --limit).")
@click.option("--no-probe", is_flag=True, help="Spatial metrics only.")
@click.option("--srss-min-fraction", type=click.FloatRange(0.0, 0.5), default=0.0, show_default=True,
              help="SRSS only on images whose mask covers >= this fraction of tokens and leaves as much background "
                   "(the authors used 64/256 = 0.25).")
@click.option("--seed", type=int, default=0, show_default=True, help="Probe hold-out seed.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the rows to this parquet file instead of the results store's 'encoders' table.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def score_cmd(names: tuple[str, ...], data: str, split: str, limit: int | None, weights: str, device: str,
              batch_size: int, num_workers: int | None, masks: str | None, train_limit: int | None, no_probe: bool,
              srss_min_fraction: float, seed: int, out: str | None, as_json: bool, bf16: bool) -> None:
    """Score encoders: LDS, CDS, SRSS, RMSC and linear-probe top-1, one row per NAME (or NAME@clsmix=ALPHA)."""
    from study.scoring import score_encoder, write_rows

    rows = []
    for name in names:
        with _user_errors():
            row = score_encoder(name, data, split=split, limit=limit, masks=masks, probe=not no_probe,
                                weights=weights, train_limit=train_limit, device=device, batch_size=batch_size,
                                num_workers=num_workers, seed=seed, srss_min_fraction=srss_min_fraction, bf16=bf16)
        rows.append(row)
        if not as_json:
            click.echo(_line(row))
    with _user_errors():
        path = write_rows(rows, out)
    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))
    click.echo(f"wrote {len(rows)} row(s) to {path}", err=as_json)


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _line(row: dict) -> str:
    from analysis.display import display_value

    lp, lp_cls = (_fmt(display_value(k, row[k]), ".1f") for k in ("lp_top1", "lp_top1_cls"))
    return (f"{row['encoder']:28s} n={row['n_images']:<6d} lds={_fmt(row['lds'])} cds={_fmt(row['cds'])} "
            f"srss={_fmt(row['srss'])} rmsc={_fmt(row['rmsc'])} lp%={lp} lp_cls%={lp_cls} "
            f"({row['total_seconds']:.1f}s)")


def register(cli: click.Group) -> None:
    """Add `features` and `score` to the `encoders` group (registered by jobs.commands.encoders)."""
    group = cli.commands.get("encoders")
    if group is None:
        raise RuntimeError("the 'encoders' command group must be registered before jobs.commands.scoring")
    group.add_command(features_cmd)
    group.add_command(score_cmd)
