"""`repa-study train CONFIG [key=value ...]` and `repa-study sample RUN_DIR --step S --n N`."""
from __future__ import annotations

import json
from pathlib import Path

import click

from jobs.cli.sampler_options import sampler_options
from study.config import SamplerSettings


def _default_run_dir(config: str, cfg) -> Path:
    from results.store import default_root
    from study.run import run_hash

    return Path(default_root()) / "train" / f"{Path(config).stem}-{run_hash(cfg)}"


@click.command("train")
@click.argument("config")
@click.argument("overrides", nargs=-1)
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: RESULTS_ROOT/train/<config name>-<run hash>, the hash of the config "
                   "without its length: a higher steps=N resumes the same run); an existing one resumes.")
@click.option("--max-steps", type=int, default=None, help="Stop at this step (the run can be resumed later).")
@click.option("--print-config", is_flag=True, help="Print the resolved config as YAML and exit.")
def train_cmd(config: str, overrides: tuple[str, ...], run_dir: str | None, max_steps: int | None,
              print_config: bool) -> None:
    """Train a SiT with REPA/iREPA. CONFIG is a preset (repa, irepa, irepa-released, imagenet, tiny, smoke) or a
    YAML file; OVERRIDES are key=value pairs, e.g. `method=irepa encoder.name=mocov3-vit-b model.size=SiT-B/2`."""
    import yaml

    from study.config import load_train_config
    from study.training import train

    cfg = load_train_config(config, overrides)
    if print_config:
        click.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return
    out = train(cfg, Path(run_dir) if run_dir else _default_run_dir(config, cfg), max_steps=max_steps)
    click.echo(json.dumps(out, indent=1))


@click.command("sample")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--step", type=int, required=True, help="Checkpoint step (its EMA weights are used).")
@click.option("--n", "n", type=int, required=True, help="Number of samples.")
@sampler_options
@click.option("--batch-size", type=int, default=64, show_default=True, help="Per-rank batch.")
@click.option("--device", default=None, help="cpu, cuda (default: cuda when available).")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="Default: RUN_DIR/samples/step<S>-<mode>-steps<N>-cfg<scale>-seed<seed>.")
def sample_cmd(run_dir: str, step: int, n: int, sampler: SamplerSettings, batch_size: int, device: str | None,
               out_dir: str | None) -> None:
    """Write N samples of a run's checkpoint as ADM-style npz shards + manifest.json (torchrun spreads them)."""
    from study.sampling import sample_run

    out = sample_run(run_dir, step, n, sampler, batch_size=batch_size, device=device, out_dir=out_dir)
    click.echo(str(out))


def register(cli: click.Group) -> None:
    """Attach `train` and `sample` to the root command."""
    cli.add_command(train_cmd)
    cli.add_command(sample_cmd)
