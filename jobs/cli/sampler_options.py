"""The sampler's command-line options, shared by `repa-study sample` and `repa-study eval fid`.

``@sampler_options`` adds ``--mode --num-steps --cfg-scale --guidance-interval --seed --rounding --precision`` and
hands the command one ``sampler: SamplerSettings`` (validated) instead of loose values.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import click

from study.config import SAMPLE_PRECISIONS, SAMPLER_MODES, SamplerSettings

_DEFAULT = SamplerSettings()


def sampler_options(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, mode: str, num_steps: int, cfg_scale: float, guidance_interval: tuple[float, float],
                seed: int, rounding: str, precision: str, **kwargs: Any) -> Any:
        try:
            sampler = SamplerSettings(mode=mode, num_steps=num_steps, cfg_scale=cfg_scale,
                                      guidance_interval=guidance_interval, seed=seed, rounding=rounding,
                                      precision=precision)
        except ValueError as exc:  # pydantic's ValidationError: a bad option value
            raise click.BadParameter(str(exc)) from None
        return command(*args, sampler=sampler, **kwargs)

    options = [
        click.option("--mode", type=click.Choice(list(SAMPLER_MODES)), default=_DEFAULT.mode, show_default=True,
                     help="Sampler: Euler-Maruyama SDE (REPA's FID sampler) or Euler ODE; heun (JiT: Heun steps, "
                          "ode = Euler); meanflow (MeanFlow runs: --num-steps jumps = NFE)."),
        click.option("--num-steps", type=click.IntRange(min=1), default=_DEFAULT.num_steps, show_default=True,
                     help="Sampler steps."),
        click.option("--cfg-scale", type=click.FloatRange(min=0), default=_DEFAULT.cfg_scale, show_default=True,
                     help="Classifier-free guidance scale (1: none)."),
        click.option("--guidance-interval", type=(float, float), default=_DEFAULT.guidance_interval,
                     show_default=True, help="Apply guidance only for t in [LOW, HIGH]."),
        click.option("--seed", type=int, default=_DEFAULT.seed, show_default=True,
                     help="Seed of the per-sample noise."),
        click.option("--rounding", type=click.Choice(["floor", "round"]), default=_DEFAULT.rounding,
                     show_default=True, help="Output to uint8: floor = clamp then truncate (the authors' and ADM's "
                                             "convention, paper-comparable FIDs); round = nearest."),
        click.option("--precision", type=click.Choice(list(SAMPLE_PRECISIONS)), default=_DEFAULT.precision,
                     show_default=True, help="The sampler's matmuls: tf32 (the run's tf32 setting, the paper's) or "
                                             "bf16 autocast (the adm-50k-sde250-bf16 protocol; never the default)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
