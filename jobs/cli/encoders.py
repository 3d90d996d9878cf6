"""`repa-study encoders list | show | check | pretrain | features | score | predict`: browse and validate the
encoder catalog, train the local (miniature) encoders, cache encoder features, score spatial structure and
linear-probe accuracy, predict an encoder's REPA FID."""
from __future__ import annotations

import json
import math
import sys

import click

from encoders import ENCODER_WEIGHTS

WEIGHTS = click.Choice(list(ENCODER_WEIGHTS))


@click.group("encoders")
def encoders_group() -> None:
    """The encoder catalog (encoders/catalog.yaml): list, show, check; score and predict."""


@encoders_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry.")
@click.option("--study", is_flag=True, help="Only the 27 encoders of the paper's correlation study.")
def list_cmd(as_json: bool, study: bool) -> None:
    """List the catalog entries (variants such as NAME@clsmix=0.5 are accepted everywhere but not listed)."""
    from encoders import load_catalog

    specs = [s for s in load_catalog().values() if s.study or not study]
    if as_json:
        click.echo(json.dumps([s.summary() for s in specs], indent=1))
        return
    header = f"{'name':22s} {'family':8s} {'source':9s} {'res':>4s} {'patch':>5s} {'dim':>5s} {'prefix':>6s} " \
             f"{'params_m':>9s}  license"
    click.echo(header)
    for s in specs:
        click.echo(f"{s.name:22s} {s.family:8s} {s.source:9s} {s.input_res:4d} {s.patch_size:5d} {s.embed_dim:5d} "
                   f"{s.prefix_tokens:6d} {s.params_m:9.1f}  {s.license}{' (gated)' if s.gated else ''}")
    click.echo(f"{len(specs)} encoders")


@encoders_group.command("show")
@click.argument("name")
def show_cmd(name: str) -> None:
    """Show every field of one entry (a variant shows its base entry and the variant)."""
    import yaml

    from encoders import get_spec, parse_variant

    variant = parse_variant(name)
    data = get_spec(name).model_dump(mode="json")
    if variant.clsmix is not None:
        data["variant"] = {"clsmix": variant.clsmix, "form": variant.clsmix_form}
    click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110).rstrip())


@encoders_group.command("check")
@click.argument("names", nargs=-1)
@click.option("--all", "check_all", is_flag=True, help="Check every catalog entry.")
@click.option("--meta", is_flag=True, help="Build on the meta device: no memory, no weights (recommended).")
@click.option("--weights", "weights_only", is_flag=True,
              help="Only say whether each entry's pretrained weights are on disk, and where (offline, nothing built; "
                   "every entry when no NAME is given).")
@click.option("--json", "as_json", is_flag=True, help="JSON list of {name, ok, grid, embed_dim, params_m, reason}.")
def check_cmd(names: tuple[str, ...], check_all: bool, meta: bool, weights_only: bool, as_json: bool) -> None:
    """Build entries at full size without weights, run a 256 px forward, and compare grid, embed_dim, prefix
    tokens and parameter count with the entry, and timm entries' mean, std and interpolation with timm's
    pretrained_cfg (unless timm_cfg_overrides gives a reason). Exit status 1 when any fails.

    With --weights: which entries have their pretrained weights on this machine (exit status 1 when any lacks
    them)."""
    from encoders import check_encoder, list_encoders

    if weights_only:
        _check_weights(list(names) or list_encoders(), as_json)
        return
    if check_all == bool(names):
        raise click.UsageError("give encoder NAMEs or --all (not both)")
    targets = list_encoders() if check_all else list(names)
    results = []
    for name in targets:
        res = check_encoder(name, meta=meta)
        results.append(res)
        if not as_json:
            status = "ok  " if res["ok"] else "FAIL"
            detail = f" -- {res['reason']}" if not res["ok"] else ""
            click.echo(f"{status} {name:22s} grid={res['grid']} dim={res['embed_dim']} prefix={res['prefix_tokens']} "
                       f"params={res['params_m']}M ({res['seconds']}s){detail}")
    failed = [r for r in results if not r["ok"]]
    if as_json:
        click.echo(json.dumps(results, indent=1))
    else:
        click.echo(f"{len(results) - len(failed)} of {len(results)} ok")
    if failed:
        sys.exit(1)


def _check_weights(names: list[str], as_json: bool) -> None:
    from encoders import find_weights, get_spec

    rows = []
    for name in names:
        spec = get_spec(name)
        found = find_weights(spec)
        rows.append({"name": name, "on_disk": found.found, "where": found.where, "source": spec.source,
                     "gated": spec.gated, "license": spec.license})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        for r in rows:
            note = " (gated)" if r["gated"] else ""
            click.echo(f"{'on disk' if r['on_disk'] else 'missing':8s} {r['name']:22s} {r['where']}{note}")
        click.echo(f"{sum(r['on_disk'] for r in rows)} of {len(rows)} have their pretrained weights on disk")
    if not all(r["on_disk"] for r in rows):
        sys.exit(1)


# ------------------------------------------------------------------------------------ features and scores
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


@encoders_group.command("pretrain")
@click.argument("names", nargs=-1)
@click.option("--all", "all_local", is_flag=True, help="Every `source: local` entry of the catalog.")
@click.option("--force", is_flag=True, help="Train again even if the weights exist (they are replaced atomically).")
def pretrain_cmd(names: tuple[str, ...], all_local: bool, force: bool) -> None:
    """Train the weights of `source: local` entries (the miniature's tiny encoders) by their catalog recipe.

    Deterministic (seeded, one thread) and cached under $REPA_STUDY_WEIGHTS/local keyed by the entry's fingerprint;
    existing weights are kept unless --force. `repa-study run` and the study's jobs do this themselves.
    """
    from encoders import get_spec, load_catalog
    from study.pretrain import pretrain_encoder

    if all_local:
        names = names + tuple(n for n, s in load_catalog().items() if s.trained_here)
    if not names:
        raise click.UsageError("name at least one encoder (or --all)")
    for name in dict.fromkeys(get_spec(n).name for n in names):
        spec = get_spec(name)
        if spec.source == "local" and not spec.trained_here:
            click.echo(f"{name}: recipe 'none' (its seeded random init is the encoder): nothing to train")
            continue
        click.echo(f"{name}: {pretrain_encoder(name, force=force)}")


@encoders_group.command("features")
@click.argument("name")
@_common
@click.option("--split", type=click.Choice(["train", "val"]), default="train", show_default=True)
@click.option("--masks", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of foreground masks aligned with the images by file name (for SRSS).")
def features_cmd(name: str, data: str, split: str, limit: int | None, weights: str, device: str, batch_size: int,
                 num_workers: int | None, masks: str | None, bf16: bool) -> None:
    """Extract NAME's pooled features and per-image spatial metrics on DATA/SPLIT into the cache (resumable)."""
    from study.scoring import extract_encoder_features

    fs = extract_encoder_features(name, data, split, limit, weights=weights, device=device, batch_size=batch_size,
                                  num_workers=num_workers, masks=masks, bf16=bf16)
    click.echo(f"{fs.meta['encoder']} on {fs.meta['dataset']} ({split}): {fs.n} images, dim {fs.meta['embed_dim']}, "
               f"cls {'yes' if fs.cls is not None else 'no'}, masks {fs.meta['masks']}")
    click.echo(f"cache: {fs.path}")


@encoders_group.command("score")
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
        row = score_encoder(name, data, split=split, limit=limit, masks=masks, probe=not no_probe, weights=weights,
                            train_limit=train_limit, device=device, batch_size=batch_size, num_workers=num_workers,
                            seed=seed, srss_min_fraction=srss_min_fraction, bf16=bf16)
        rows.append(row)
        if not as_json:
            click.echo(_line(row))
    path = write_rows(rows, out)
    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))
    click.echo(f"wrote {len(rows)} row(s) to {path}", err=as_json)


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None or _nan(value) else format(value, spec)


def _line(row: dict) -> str:
    from analysis.display import display_value

    lp, lp_cls = (_fmt(display_value(k, row[k]), ".1f") for k in ("lp_top1", "lp_top1_cls"))
    return (f"{row['encoder']:28s} n={row['n_images']:<6d} lds={_fmt(row['lds'])} cds={_fmt(row['cds'])} "
            f"srss={_fmt(row['srss'])} rmsc={_fmt(row['rmsc'])} lp%={lp} lp_cls%={lp_cls} "
            f"({row['total_seconds']:.1f}s)")


# ------------------------------------------------------------------------------------------------ predict
@encoders_group.command("predict")
@click.argument("name")
@click.option("--data", default="synthetic", show_default=True,
              help="Dataset spec to score the encoder on: 'synthetic[:...]' or an ImageNet-style folder.")
@click.option("--weights", type=WEIGHTS, default="pretrained",
              show_default=True, help="Encoder weights ('tiny': offline random-init stand-in).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Images scored (default: all).")
@click.option("--masks", type=click.Path(exists=True, file_okay=False), default=None,
              help="Foreground masks for SRSS (default: the dataset's own, if any).")
@click.option("--probe", is_flag=True, help="Also train the linear probe (slow); not needed for the prediction.")
@click.option("--srss-min-fraction", type=click.FloatRange(0.0, 0.5), default=0.0, show_default=True,
              help="As in `encoders score`; the paper's SRSS used 0.25.")
@click.option("--device", default="auto", show_default=True)
@click.option("--fit-on", "fit_on", type=click.Choice(["auto", "results", "paper"]), default="auto",
              show_default=True, help="Known encoders to fit on: the results store's REPA rows, the paper's 27 "
                                      "points, or auto (results if they have enough encoders, else the paper).")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="Results root for --fit-on results.")
@click.option("--x", "predictors", multiple=True, default=("lds",), show_default=True,
              type=click.Choice(["lds", "cds", "srss", "rmsc", "lp_top1"]),
              help="Predictor(s) of the regression. Repeatable.")
@click.option("--method", "train_method", default="repa", show_default=True,
              help="Training method whose rows are fitted (the study's correlation uses repa).")
@click.option("--select", "select", multiple=True, metavar="COLUMN=VALUE",
              help="Row selection for --fit-on results, as in `repa-study analyze --select`.")
@click.option("--save", is_flag=True, help="Also write the encoder's scores to the results store's encoders table.")
@click.option("--json", "as_json", is_flag=True, help="Print the prediction rows as JSON.")
def predict_cmd(name: str, data: str, weights: str, limit: int | None, masks: str | None, probe: bool,
                srss_min_fraction: float, device: str, fit_on: str, root: str | None, predictors: tuple[str, ...],
                train_method: str, select: tuple[str, ...], save: bool, as_json: bool) -> None:
    """Score encoder NAME (spatial metrics; --probe adds LP accuracy) and predict its REPA FID per model size,
    with a 95% prediction interval, its rank among the known encoders and the fit's leave-one-out error.

    Warns (one line each) when NAME was scored on another dataset, resolution, weights or metric setting than the
    known encoders, and when a predictor lies outside their range (the prediction extrapolates)."""
    from analysis.display import display_value
    from analysis.predict import choose_fit_set, predict_fid
    from results import ResultStore
    from study.scoring import score_encoder

    if "lp_top1" in predictors and not probe:
        raise click.UsageError("--x lp_top1 needs the linear probe: add --probe")
    store = ResultStore(root)
    rows = (store.read("generation"), store.read("encoders")) if fit_on != "paper" else (None, None)
    fit = choose_fit_set(fit_on, *rows, method=train_method, select=list(select), exclude=name,
                         results_source=f"the results in {store.root}")
    row = score_encoder(name, data, split="val", limit=limit, masks=masks, probe=probe, weights=weights,
                        device=device, srss_min_fraction=srss_min_fraction)
    if save:
        click.echo(f"scores written to {store.write('encoders', [row])}", err=True)
    scores = {k: row.get(k) for k in ("lds", "cds", "srss", "rmsc", "lp_top1")}
    missing = [p for p in predictors if scores.get(p) is None or _nan(scores[p])]
    if missing:
        raise click.ClickException(f"{name} has no value for {missing} on {data} (SRSS needs masks); choose other "
                                   f"predictors with --x")
    table = predict_fid(scores, fit.known, x=list(predictors), y=fit.quality, by="model", encoder=name)
    table.insert(1, "fit_on", fit.source)
    warnings = fit.mismatches(row, predictors) + [
        f"{r.model}: {r.extrapolated}, the range of the {r.n_known} encoders fitted: the prediction extrapolates"
        for r in table.itertuples(index=False) if r.extrapolated]
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    if as_json:
        click.echo(json.dumps({"scores": scores, "predictions": json.loads(table.to_json(orient="records")),
                               "warnings": warnings}, indent=1))
        return
    click.echo(f"{name} on {data} ({weights} weights): " + ", ".join(
        f"{k} {display_value(k, v):.4g}" for k, v in scores.items() if v is not None and not _nan(v)))
    for r in table.itertuples(index=False):
        click.echo(f"{r.model}: predicted {r.y} {r.predicted:.2f} (95% PI {r.pi_low:.2f} to {r.pi_high:.2f}), rank "
                   f"{r.rank} of {r.n_known + 1} (1 = best); fit on {r.n_known} encoders of {fit.source}, "
                   f"{r.x}: r = {r.r:+.3f}, leave-one-out RMSE {r.loo_rmse:.2f} (MAE {r.loo_mae:.2f})")


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def register(cli: click.Group) -> None:
    cli.add_command(encoders_group)
