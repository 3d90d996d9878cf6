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
                        device=device)
    if save:
        click.echo(f"scores written to {store.write('encoders', [row])}", err=True)
    scores = {k: row.get(k) for k in ("lds", "cds", "srss", "rmsc", "lp_top1")}
    missing = [p for p in predictors if scores.get(p) is None or _nan(scores[p])]
    if missing:
        raise click.ClickException(f"{name} has no value for {missing} on {data} (SRSS needs masks); choose other "
                                   f"predictors with --x")
    for caveat in fit.caveats(data, weights):
        click.echo(f"warning: {caveat}", err=True)
    try:
        table = predict_fid(scores, fit.known, x=list(predictors), y=fit.quality, by="model", encoder=name)
    except (ValueError, KeyError) as exc:
        raise click.ClickException(f"cannot fit on {fit.source}: {exc}") from exc
    table.insert(1, "fit_on", fit.source)
    if as_json:
        click.echo(json.dumps({"scores": scores, "predictions": json.loads(table.to_json(orient="records"))},
                              indent=1))
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
    """Attach ``predict`` to the ``encoders`` group (registered earlier by jobs.commands.encoders)."""
    cli.commands["encoders"].add_command(predict_cmd)
