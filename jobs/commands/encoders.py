"""`repa-study encoders list | show | check`: browse and validate the encoder catalog."""
from __future__ import annotations

import json
import sys

import click


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
@click.option("--json", "as_json", is_flag=True, help="JSON list of {name, ok, grid, embed_dim, params_m, reason}.")
def check_cmd(names: tuple[str, ...], check_all: bool, meta: bool, as_json: bool) -> None:
    """Build entries at full size without weights, run a 256 px forward, and compare grid, embed_dim, prefix
    tokens and parameter count with the entry, and timm entries' mean, std and interpolation with timm's
    pretrained_cfg (unless timm_cfg_overrides gives a reason). Exit status 1 when any fails."""
    from encoders import check_encoder, list_encoders

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


def register(cli: click.Group) -> None:
    cli.add_command(encoders_group)
