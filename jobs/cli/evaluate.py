"""`repa-study eval`: generation quality of a trained run (FID/sFID/IS/P/R, or fd_synthetic on small data)."""
from __future__ import annotations

import json

import click

from jobs.cli.sampler_options import sampler_options
from study.config import EXTRACTORS, SamplerSettings


@click.group("eval")
def eval_group() -> None:
    """Evaluate trained runs: sample (or reuse samples) and score them against reference statistics."""


@eval_group.command("fid")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--step", type=int, required=True, help="Checkpoint step to evaluate.")
@click.option("--n", "n", type=click.IntRange(min=2), default=50_000, show_default=True,
              help="Number of samples (ADM protocol: 50000; never compare numbers made with different N).")
@click.option("--ref", default=None,
              help="Reference: an ADM reference batch (.npz, e.g. VIRTUAL_imagenet256_labeled.npz) or a dataset spec "
                   "(synthetic:..., a folder). Default: the run's training dataset (for Inception, numbers comparable "
                   "with the literature need ADM's npz).")
@click.option("--ref-n", type=click.IntRange(min=2), default=None,
              help="Use only the first N reference images when computing statistics from a dataset.")
@click.option("--extractor", type=click.Choice(EXTRACTORS), default="inception", show_default=True,
              help="inception: torch-fidelity InceptionV3 (ADM protocol, column fid); synthetic: small CNN trained "
                   "on the synthetic data (offline small data, column fd_synthetic); layout: a CNN that also sees "
                   "where the synthetic shapes are and their outline (column fd_layout).")
@sampler_options
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Batch size for sampling and feature extraction.")
@click.option("--device", default=None, help="cpu, cuda, ... (default: cuda when available).")
@click.option("--samples", type=click.Path(exists=True), default=None,
              help="Evaluate this sample directory (npz shards) or npz file instead of finding/making the run's.")
@click.option("--inception-weights", type=click.Path(dir_okay=False), default=None,
              help="Path to weights-inception-2015-12-05-6726825d.pth (else $REPA_STUDY_INCEPTION_WEIGHTS or the "
                   "torch.hub cache).")
@click.option("--job-id", default=None, help="job_id of the row (default: the run directory's name).")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Results root (default: $REPA_STUDY_ROOT or runs/).")
@click.option("--no-write", is_flag=True, help="Print the row only; do not write it to the results store.")
def fid_cmd(run_dir: str, step: int, n: int, ref: str | None, ref_n: int | None, extractor: str,
            sampler: SamplerSettings, batch_size: int,
            device: str | None, samples: str | None, inception_weights: str | None, job_id: str | None,
            root: str | None, no_write: bool) -> None:
    """Score checkpoint STEP of RUN_DIR on N samples and write one row to the `generation` table."""
    from study.evaluation import evaluate_run, row_protocol

    row = evaluate_run(run_dir, step, n=n, extractor=extractor, ref=ref, sampler=sampler, batch_size=batch_size,
                       device=device, samples=samples, inception_weights=inception_weights, ref_n=ref_n,
                       job_id=job_id)
    row = {**row, "protocol": row_protocol(row)}  # as sweep evaluations record it (analyze never mixes protocols)
    shown = {k: row.get(k) for k in ("job_id", "step", row["fd_metric"], "sfid", "inception_score", "precision",
                                     "recall", "n_samples", "protocol", "reference", "extractor", "time_total_s")
             if k in row}
    click.echo(json.dumps(shown, indent=1, default=str))
    if not no_write:
        from results import ResultStore

        path = ResultStore(root).write("generation", [row])
        click.echo(f"wrote {path}")


def _extractor(name: str, dataset: str, inception_weights: str | None, device: str | None):
    from study.evaluation import get_extractor

    return get_extractor(name, dataset=dataset, weights_path=inception_weights, device=device)


@eval_group.command("samples")
@click.argument("samples", type=click.Path(exists=True))
@click.option("--ref", required=True, help="ADM reference batch (.npz) or dataset spec.")
@click.option("--n", "n", type=click.IntRange(min=2), default=None, help="Use the first N samples (default: all).")
@click.option("--extractor", type=click.Choice(EXTRACTORS), default="inception", show_default=True)
@click.option("--dataset", default="synthetic", show_default=True,
              help="Dataset the synthetic or layout extractor is made for (ignored for inception).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--device", default=None)
@click.option("--inception-weights", type=click.Path(dir_okay=False), default=None)
def samples_cmd(samples: str, ref: str, n: int | None, extractor: str, dataset: str, batch_size: int,
                device: str | None, inception_weights: str | None) -> None:
    """Score a sample directory or ADM sample batch (.npz) against a reference; prints the metrics, writes nothing.

    E.g. the ADM regression check: `eval samples admnet_guided_upsampled_imagenet256.npz --ref
    VIRTUAL_imagenet256_labeled.npz` should give FID 3.94, sFID 6.14, P 0.83, R 0.53.
    """
    from study.evaluation import evaluate_samples, load_reference, npz_image_count, sample_shards

    ex = _extractor(extractor, dataset, inception_weights, device)
    reference = load_reference(ref, ex, batch_size=batch_size)
    total = sum(npz_image_count(p) for p in sample_shards(samples))
    out = evaluate_samples(samples, ex, reference, n=n or total, batch_size=batch_size, device=device)
    click.echo(json.dumps({**out, "reference": reference.id, "extractor_id": ex.id}, indent=1, default=str))


@eval_group.command("reference")
@click.argument("ref")
@click.option("--extractor", type=click.Choice(EXTRACTORS), default="inception", show_default=True)
@click.option("--dataset", default=None, help="Dataset the synthetic or layout extractor is made for (default: REF).")
@click.option("--split", default="train", show_default=True, help="Dataset split (dataset specs only).")
@click.option("--n", "n", type=click.IntRange(min=2), default=None, help="Use the first N images (default: all).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", default=None)
@click.option("--inception-weights", type=click.Path(dir_okay=False), default=None)
@click.option("--recompute", is_flag=True, help="Ignore a cached result.")
def reference_cmd(ref: str, extractor: str, dataset: str | None, split: str, n: int | None, batch_size: int,
                  num_workers: int, device: str | None, inception_weights: str | None, recompute: bool) -> None:
    """Compute (or show the cached) reference statistics of REF (ADM .npz or dataset spec), e.g. once per
    cluster before a sweep's evaluation jobs start."""
    from study.evaluation import load_reference

    ex = _extractor(extractor, dataset or ref, inception_weights, device)
    r = load_reference(ref, ex, n=n, split=split, batch_size=batch_size, num_workers=num_workers,
                       recompute=recompute)
    click.echo(json.dumps({"reference": r.id, "extractor_id": r.extractor_id, "n": r.n,
                           "dims": {k: v.dim for k, v in r.stats.items()},
                           "pr_images": None if r.pr_features is None else len(r.pr_features),
                           "stats_from": r.meta.get("stats_from"), "created_at": r.meta.get("created_at")}, indent=1))


def register(cli: click.Group) -> None:
    """Attach ``repa-study eval`` (``eval fid``, ``eval samples``, ``eval reference``)."""
    cli.add_command(eval_group)
