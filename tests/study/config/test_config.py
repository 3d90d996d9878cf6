"""The typed config layer: YAML in, validated objects out, unknown keys are errors, stable hashes."""
import pytest

from study.config import ConfigError, StrictModel, config_hash, dump_config, load_config, parse_overrides


class Optim(StrictModel):
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)


class Cfg(StrictModel):
    steps: int = 10
    name: str = "x"
    optim: Optim = Optim()


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\noptim:\n  lr: 0.001\n")
    cfg = load_config(Cfg, path, ["optim.betas=[0.5, 0.6]", "name=abc"])
    assert cfg.steps == 5 and cfg.optim.lr == 0.001 and cfg.optim.betas == (0.5, 0.6) and cfg.name == "abc"


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\noptim:\n  lrr: 0.001\n")
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, path)
    assert "optim.lrr" in str(err.value) and "unknown key" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ConfigError, match="stepz"):
        load_config(Cfg, {}, ["stepz=3"])


def test_type_errors_and_bad_overrides(tmp_path):
    with pytest.raises(ConfigError, match="steps"):
        load_config(Cfg, {"steps": "many"})
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Cfg, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Cfg, bad)


def test_hash_is_stable_and_sensitive(tmp_path):
    a = load_config(Cfg, {"steps": 5, "optim": {"lr": 0.1}})
    b = load_config(Cfg, {"optim": {"lr": 0.1}, "steps": 5})
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(load_config(Cfg, {"steps": 6, "optim": {"lr": 0.1}}))
    path = dump_config(a, tmp_path / "out" / "config.yaml")
    assert load_config(Cfg, path) == a


def test_the_preview_section_was_grid_and_hashes_as_before(tmp_path):
    """``grid`` (the preview sheet's old name, still in run directories) is read as ``preview``; hashes see the old
    name, so renaming the section changed no run's hash."""
    from study.config import load_train_config
    from study.run import read_config, run_hash

    cfg = load_train_config("smoke", ["preview.n=3"])
    assert load_train_config("smoke", ["grid.n=3"]) == cfg
    run = tmp_path / "run"
    run.mkdir()
    dump_config(cfg, run / "config.yaml")
    text = (run / "config.yaml").read_text()
    assert "preview:" in text and "grid:" not in text
    (run / "config.yaml").write_text(text.replace("preview:", "grid:"))  # a run directory written before
    assert read_config(run) == cfg
    renamed = {("grid" if k == "preview" else k): v for k, v in cfg.model_dump(mode="json").items()}
    assert config_hash(cfg) == config_hash(renamed)
    assert run_hash(cfg) == config_hash({k: v for k, v in renamed.items()
                                         if k not in ("steps", "ckpt_every", "ckpt_keep", "ckpt_keep_every")})
