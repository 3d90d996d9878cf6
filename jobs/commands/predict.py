"""`repa-study encoders predict NAME`: score an encoder and predict its REPA FID before training with it."""
from __future__ import annotations

import json
import math

import click


@click.command("predict")
@click.argument("name")
@click.option("--data", default="synthetic", show_default=True,
              help="Dataset spec to score the encoder on: 'synthetic[:...]' or an ImageNet-style folder.")
@click.option("--weights", type=click.Choice(["pretrained", "random", "tiny"]), default="pretrained",
              show_default=True, help="Encoder weights ('tiny': offline random-init stand-in).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Images scored (default: all).")
@click.option("--masks", type=click.Path(exists=True, file_okay=False), default=None,
              help="Foreground masks for SRSS (default: the dataset's own, if any).")
@click.option("--probe", is_flag=True, help="Also train the linear probe (slow); not needed for the prediction.")
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
def predict_cmd(name: str, data: str, weights: str, limit: int | None, masks: str | None, probe: bool, device: str,
                fit_on: str, root: str | None, predictors: tuple[str, ...], train_method: str,
                select: tuple[str, ...], save: bool, as_json: bool) -> None:
    """Score encoder NAME (spatial metrics; --probe adds LP accuracy) and predict its REPA FID per model size,
    with a 95% prediction interval, its rank among the known encoders and the fit's leave-one-out error."""
    from study.scoring import score_encoder

    from analysis.comparable import IncomparableRowsError

    if "lp_top1" in predictors and not probe:
        raise click.UsageError("--x lp_top1 needs the linear probe: add --probe")
    try:
        known, quality, source = _known_encoders(fit_on, root, train_method, list(select), exclude=name)
    except IncomparableRowsError as exc:
        raise click.ClickException(str(exc)) from exc
    row = score_encoder(name, data, split="val", limit=limit, masks=masks, probe=probe, weights=weights,
                        device=device)
    if save:
        from results import ResultStore

        click.echo(f"scores written to {ResultStore(root).write('encoders', [row])}", err=True)
    scores = {k: row.get(k) for k in ("lds", "cds", "srss", "rmsc", "lp_top1")}
    if scores.get("lp_top1") is not None and not _nan(scores["lp_top1"]) and scores["lp_top1"] <= 1.0:
        scores["lp_top1"] *= 100.0  # reports and the paper use percent
    missing = [p for p in predictors if scores.get(p) is None or _nan(scores[p])]
    if missing:
        raise click.ClickException(f"{name} has no value for {missing} on {data} (SRSS needs masks); choose other "
                                   f"predictors with --x")
    for caveat in _caveats(source, data, weights, known):
        click.echo(f"warning: {caveat}", err=True)
    from analysis.predict import predict_fid

    try:
        table = predict_fid(scores, known, x=list(predictors), y=quality, by="model", encoder=name)
    except (ValueError, KeyError) as exc:
        raise click.ClickException(f"cannot fit on {source}: {exc}") from exc
    table.insert(1, "fit_on", source)
    if as_json:
        click.echo(json.dumps({"scores": scores, "predictions": json.loads(table.to_json(orient="records"))},
                              indent=1))
        return
    click.echo(f"{name} on {data} ({weights} weights): " + ", ".join(
        f"{k} {v:.4g}" for k, v in scores.items() if v is not None and not _nan(v)))
    for r in table.itertuples(index=False):
        click.echo(f"{r.model}: predicted {r.y} {r.predicted:.2f} (95% PI {r.pi_low:.2f} to {r.pi_high:.2f}), rank "
                   f"{r.rank} of {r.n_known + 1} (1 = best); fit on {r.n_known} encoders of {source}, "
                   f"{r.x}: r = {r.r:+.3f}, leave-one-out RMSE {r.loo_rmse:.2f} (MAE {r.loo_mae:.2f})")


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _known_encoders(fit_on: str, root: str | None, method: str, select: list[str], exclude: str):
    """(known table one row per model x encoder, quality column, description) for the regression."""
    from analysis.reference import load_reference_data

    if fit_on in ("auto", "results"):
        from analysis.comparable import select_comparable
        from analysis.report import encoder_table, study_points
        from results import ResultStore

        store = ResultStore(root)
        gen, enc = store.read("generation"), store.read("encoders")
        if not gen.empty and not enc.empty and "method" in gen.columns:
            from analysis.comparable import parse_select

            sel_map = parse_select(select)
            gen = gen[gen["method"] == method]
            if not gen.empty:
                selection = select_comparable(gen, {k: v for k, v in sel_map.items()
                                                    if not k.startswith("encoders.")})
                table, _ = encoder_table(enc, sel_map)
                points = study_points(selection.rows, selection.quality, table)
                points = points[points["encoder"] != exclude]
                if fit_on == "results" or points.groupby("model")["encoder"].nunique().min() >= 4:
                    return points, selection.quality, f"the results in {store.root}"
        if fit_on == "results":
            from analysis.comparable import IncomparableRowsError

            raise IncomparableRowsError(f"no {method} generation rows with encoder scores under {store.root}; run "
                                        f"the study first or use --fit-on paper")
    ref = load_reference_data("paper")
    points = ref.points[ref.points["encoder"] != exclude]
    return points, "fid", "the paper's 27 encoders (SiT-XL/2, REPA, 100K)"


def _caveats(source: str, data: str, weights: str, known) -> list[str]:
    out = []
    if source.startswith("the paper") and (weights != "pretrained" or str(data).startswith("synthetic")):
        out.append(f"the paper's metrics come from pretrained encoders on ImageNet images; scores from {weights} "
                   f"weights on {data} are on another scale, so this prediction only exercises the pipeline")
    return out


def register(cli: click.Group) -> None:
    """Attach ``predict`` to the ``encoders`` group (registered earlier by jobs.commands.encoders)."""
    cli.commands["encoders"].add_command(predict_cmd)
