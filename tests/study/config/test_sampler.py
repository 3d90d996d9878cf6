"""SamplerSettings: one object from the YAML / CLI to the sampler, with the flat YAML and the ids unchanged."""
import pytest
from click.testing import CliRunner

from jobs.spec import FidSettings
from study.config import SamplerSettings, load_train_config


def test_the_flat_sections_hand_out_one_sampler_object():
    fid = FidSettings(mode="ode", num_steps=30, cfg_scale=1.5, seed=3)
    assert fid.sampler == SamplerSettings(mode="ode", num_steps=30, cfg_scale=1.5, seed=3)
    assert "sampler" not in fid.model_dump()  # the YAML (and the eval ids that hash it) keep their flat keys
    cfg = load_train_config("smoke", ["preview.mode=sde", "preview.num_steps=7", "seed=5"])
    assert cfg.preview.sampler(cfg.seed) == SamplerSettings(mode="sde", num_steps=7, seed=5)


def test_names_manifest_keys_and_row_columns():
    s = SamplerSettings(mode="sde", num_steps=250, cfg_scale=1.8, guidance_interval=(0.0, 0.7), seed=1)
    assert s.dir_name(100_000) == "step0100000-sde-steps250-cfg1.8-gi0_0.7-seed1"
    assert SamplerSettings().dir_name(7) == "step0000007-sde-steps250-cfg1-seed0"
    assert SamplerSettings(rounding="round").dir_name(7) == "step0000007-sde-steps250-cfg1-seed0-round"
    assert s.manifest() == {"mode": "sde", "num_steps": 250, "cfg_scale": 1.8, "seed": 1,
                            "guidance_interval": [0.0, 0.7], "rounding": "floor"}
    assert s.row() == {"sampler_mode": "sde", "sampler_steps": 250, "cfg_scale": 1.8, "sample_seed": 1,
                       "guidance_interval": "[0.0, 0.7]", "sample_rounding": "floor"}


@pytest.mark.parametrize("bad", [{"guidance_interval": (0.8, 0.2)}, {"mode": "leapfrog"}, {"num_steps": 0},
                                 {"rounding": "ceil"},
                                 {"temperature": 1.0}])
def test_bad_settings_are_rejected(bad):
    with pytest.raises(ValueError):
        SamplerSettings(**bad)


def test_cli_sampler_options_are_validated_before_anything_runs(tmp_path):
    from jobs.cli import cli

    (tmp_path / "run").mkdir()
    out = CliRunner().invoke(cli, ["sample", str(tmp_path / "run"), "--step", "1", "--n", "2",
                                   "--guidance-interval", "0.9", "0.1"])
    assert out.exit_code == 2 and "guidance_interval" in out.output, out.output
