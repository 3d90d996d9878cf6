"""Faults of a sweep that must fail (issue 19, cases 8 and 10): bad training overrides, encoders without weights, a
missing dataset or FID reference, a damaged reference, corrupt images. Before, each was submitted anyway and every job
failed after queueing; now `sweep submit` refuses with every problem at once and writes nothing, `sweep check` says
the same, `encoders check --weights` lists which weights are on disk, and an offline hub fails at once."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from fault_support import stub_slurm  # noqa: F401 (fixture)
from stage_fakes import fakes  # noqa: F401 (fixture)

import encoders
from jobs.cli import cli

SMALL = ["--set", "encoders=[dinov2-vit-b, mae-vit-l]", "--set", "eval_steps=[200]", "--set", "scoring.enabled=false"]


def _submit(root, *args: str):
    return CliRunner().invoke(cli, ["sweep", "submit", *args, "--root", str(root)])


@pytest.mark.parametrize("override, expected", [
    ("train_overrides=[optim.lr=fast]", "optim.lr"),                 # a value that does not load
    ("encoder_weights=pretrained", "encoder dinov2-vit-b: no pretrained weights"),
], ids=["bad-override", "no-weights"])
def test_a_sweep_that_must_fail_is_refused_before_anything_is_written(fakes, override, expected):
    root = fakes / "root"
    out = _submit(root, "smoke", *SMALL, "--set", override, "--executor", "debug")
    assert out.exit_code == 1 and expected in out.output, out.output
    assert "nothing was submitted" in out.output
    assert not root.exists(), sorted(p.name for p in root.rglob("*"))


def test_the_paper_sweep_without_its_inputs_reports_every_problem_and_queues_nothing(tmp_path, stub_slurm):
    """As a new user would: a stub sbatch, no dataset, no FID reference, no encoder weights."""
    root = tmp_path / "root"
    out = _submit(root, "paper", "--set", f"dataset={tmp_path / 'imagenet'}",
                  "--set", f"fid.reference={tmp_path / 'VIRTUAL_imagenet256_labeled.npz'}",
                  "--slurm-partition", "gpu")
    assert out.exit_code == 1, out.output
    for expected in (f"dataset {tmp_path / 'imagenet'} (train)", "VIRTUAL_imagenet256_labeled.npz not found",
                     "encoder dinov2-vit-b: no pretrained weights", "encoder pe-vit-g: no pretrained weights",
                     "InceptionV3 weights"):
        assert expected in out.output, expected
    assert not stub_slurm.exists(), "sbatch was called"
    assert not root.exists()


def test_a_damaged_fid_reference_is_found_before_the_trainings(fakes, tmp_path):
    ref = tmp_path / "ref.npz"
    sigma = np.eye(64)
    sigma[3, 3] = np.nan
    np.savez(ref, mu=np.zeros(64), sigma=sigma)  # NaN, and 64 dimensions where Inception has 2048
    root = fakes / "root"
    out = _submit(root, "smoke", *SMALL, "--set", "fid.extractor=inception", "--set", f"fid.reference={ref}",
                  "--executor", "debug")
    assert out.exit_code == 1, out.output
    assert "NaN or inf" in out.output and "2048" in out.output
    assert not root.exists()
    check = CliRunner().invoke(cli, ["sweep", "check", "smoke", *SMALL, "--set", "fid.extractor=inception",
                                     "--set", f"fid.reference={ref}"])
    assert check.exit_code == 1 and "NaN or inf" in check.output  # `sweep check` says the same, submits nothing


def test_a_first_open_pass_reports_every_corrupt_image(tmp_path):
    from data_support import write_fake_imagenet

    src = write_fake_imagenet(tmp_path / "imagenet", per_class=(3, 1), masks=False)
    bad = sorted((src / "train" / "n01443537").iterdir())[0]
    bad.write_bytes(b"GIF89a not really")
    out = CliRunner().invoke(cli, ["sweep", "check", "smoke", *SMALL, "--set", f"dataset={src}",
                                   "--set", "train_base=tiny", "--verify-images"])
    assert out.exit_code == 1 and bad.name in out.output and "1 image(s) do not decode" in out.output, out.output


def _hub_cache_with(tmp_path, repo: str, filename: str):
    folder = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (folder / "snapshots" / ("0" * 40) / filename).write_bytes(b"weights")
    return tmp_path / "hub"


def test_encoders_check_weights_lists_what_is_on_disk(tmp_path, monkeypatch):
    import huggingface_hub.constants

    hub = _hub_cache_with(tmp_path, "timm/vit_base_patch14_dinov2.lvd142m", "model.safetensors")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    out = CliRunner().invoke(cli, ["encoders", "check", "--weights", "dinov2-vit-b", "mae-vit-l", "mocov3-vit-b"])
    said = {name: line.startswith("on disk") for line in out.output.splitlines()
            for name in ("dinov2-vit-b", "mae-vit-l", "mocov3-vit-b") if f" {name} " in line}
    assert said == {"dinov2-vit-b": True, "mae-vit-l": False, "mocov3-vit-b": False}, out.output
    assert out.exit_code == 1 and "1 of 3 have their pretrained weights on disk" in out.output


@pytest.mark.parametrize("name", ["dinov2-vit-b", "webssl-vit-dino300m"])
def test_an_offline_hub_fails_at_once_without_building_or_looking_up(name, monkeypatch):
    import timm
    import transformers

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = []
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: calls.append("timm.create_model"))
    monkeypatch.setattr(transformers.Dinov2Model, "from_pretrained",
                        classmethod(lambda cls, *a, **k: calls.append("from_pretrained")))
    with pytest.raises(encoders.MissingWeightsError, match=name):
        encoders.get_encoder(name, weights="pretrained")
    assert calls == [], "built the model or asked the hub before failing"


def test_a_sweep_naming_masks_that_are_not_there_is_refused(tmp_path):
    """Issue 20 item 4 through the preflight: the masks a sweep names (scoring.masks) must be there, else every score
    job would write SRSS empty; `sweep check` refuses and names them."""
    from data_support import write_fake_imagenet

    src = write_fake_imagenet(tmp_path / "imagenet", per_class=(3, 1), masks=False)
    out = CliRunner().invoke(cli, ["sweep", "check", "smoke", *SMALL, "--set", f"dataset={src}",
                                   "--set", "train_base=tiny", "--set", "scoring.enabled=true",
                                   "--set", f"scoring.masks={tmp_path / 'nope'}"])
    assert out.exit_code == 1 and "scoring masks" in out.output and "nope" in out.output, out.output


def test_a_sweep_reading_cached_targets_that_were_never_written_is_refused(tmp_path):
    """Trainings with encoder.targets=cache read what `repa-study data encode` wrote; no sweep stage writes it, so a
    missing cache is found before submission (naming the command), not in every training after queueing."""
    out = CliRunner().invoke(cli, ["sweep", "check", "smoke", *SMALL, "--set", "cached_targets=[mae-vit-l]"])
    assert out.exit_code == 1 and "mae-vit-l has no target cache" in out.output and "data encode" in out.output, \
        out.output
    assert "dinov2-vit-b has no target cache" not in out.output  # the other encoder runs online
