"""study.objectives.objective: a config picks its objective, each draws its own times and refuses the samplers its
model cannot run, with a message that says which it can."""
import pytest
import torch

from study.config import OBJECTIVE_SAMPLERS, SamplerSettings, load_train_config
from study.models import build_network
from study.objectives import FlowMatching, MeanFlow, XPrediction, objective_for


@pytest.mark.parametrize("preset, kind, cls", [("smoke", "flow", FlowMatching), ("meanflow", "meanflow", MeanFlow),
                                               ("jit", "xpred", XPrediction)])
def test_a_config_picks_its_objective(preset, kind, cls):
    cfg = load_train_config(preset)
    objective = objective_for(cfg)
    assert isinstance(objective, cls) and objective.kind == cfg.objective == kind
    times = objective.draw_times(6, torch.Generator().manual_seed(0))
    assert set(times) == ({"r", "t"} if kind == "meanflow" else {"t"})
    again = objective.draw_times(6, torch.Generator().manual_seed(0))
    assert all(torch.equal(times[k], again[k]) for k in times)  # a function of the generator alone
    if kind == "meanflow":
        assert (times["t"] >= times["r"]).all()


def test_each_objective_refuses_the_samplers_its_model_cannot_run():
    net = build_network("smoke", input_size=8, in_channels=3, num_classes=4, patch_size=2).eval()
    y = torch.zeros(2, dtype=torch.long)

    def noise():
        return torch.randn(2, 3, 8, 8)

    flow = FlowMatching()
    for mode in OBJECTIVE_SAMPLERS["flow"]:
        out = flow.sample(net, y, noise, SamplerSettings(mode=mode, num_steps=3))
        assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()
    for mode in ("heun", "meanflow"):
        with pytest.raises(ValueError, match=f"sampler mode '{mode}' does not fit this model .*sde, ode"):
            flow.sample(net, y, noise, SamplerSettings(mode=mode, num_steps=3))
    xpred = objective_for(load_train_config("jit"))
    with pytest.raises(ValueError, match="no SDE sampler"):
        xpred.sample(net, y, noise, SamplerSettings(mode="sde", num_steps=3))
