"""study.sampling.sample: deterministic per seed, independent of batch size and world size, balanced labels, manifest."""
import json

import numpy as np
import pytest
import torch.multiprocessing as mp
from train_support import free_port, load_samples, one_thread, sample_worker, smoke_config  # noqa: F401 (autouse fixture)

import study.training.loop as T
from study.config import SamplerSettings
from study.sampling import sample_run


def test_sampler_determinism_batch_and_world_size_independence(tmp_path):
    run = tmp_path / "run"
    # EMA = model and a large lr so that three steps give a model whose samples depend on its weights
    T.train(smoke_config("steps=3", "ckpt_every=3", "ema_decay=0", "optim.lr=0.01"), run)
    sde = SamplerSettings(mode="sde", num_steps=4, seed=0)
    kw = dict(n=6, sampler=sde)
    a_dir = sample_run(run, 3, batch_size=4, **kw)
    a, la = load_samples(a_dir)
    assert a.shape == (6, 32, 32, 3) and a.dtype == np.uint8
    assert la.tolist() == [0, 1, 2, 3, 0, 1]  # balanced: i % num_classes
    manifest = json.loads((a_dir / "manifest.json").read_text())
    assert (manifest["mode"], manifest["num_steps"], manifest["n"], manifest["seed"], manifest["weights"]) == \
        ("sde", 4, 6, 0, "ema")
    assert manifest["shards"] == ["samples_0000000_0000004.npz", "samples_0000004_0000006.npz"]

    b, lb = load_samples(sample_run(run, 3, batch_size=6, out_dir=tmp_path / "b", **kw))
    np.testing.assert_array_equal(a, b)  # batch size does not matter
    more, _ = load_samples(sample_run(run, 3, batch_size=4, out_dir=tmp_path / "b", **{**kw, "n": 8}))
    assert more.shape[0] == 8 and sorted(p.name for p in (tmp_path / "b").glob("*.npz")) == \
        ["samples_0000000_0000004.npz", "samples_0000004_0000008.npz"]  # the batch-6 shard was replaced
    np.testing.assert_array_equal(more[:6], a)
    c, _ = load_samples(sample_run(run, 3, 6, sde.model_copy(update={"seed": 1}), batch_size=4,
                                   out_dir=tmp_path / "c"))
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1  # another seed, other samples

    mp.spawn(sample_worker, args=(2, free_port(), str(run), 3, {**kw, "batch_size": 2,
                                                                  "out_dir": str(tmp_path / "ddp")}),
             nprocs=2, join=True)
    d, ld = load_samples(tmp_path / "ddp")
    np.testing.assert_array_equal(a, d)  # two ranks, same samples
    assert json.loads((tmp_path / "ddp" / "manifest.json").read_text())["world_size"] == 2

    plain = SamplerSettings(mode="ode", num_steps=3)
    ode, _ = load_samples(sample_run(run, 3, 4, plain, batch_size=4, out_dir=tmp_path / "o"))
    guided, _ = load_samples(sample_run(run, 3, 4, plain.model_copy(update={"cfg_scale": 4.0}), batch_size=4,
                                        out_dir=tmp_path / "g"))
    assert not np.array_equal(ode, guided)
    late = SamplerSettings(mode="ode", num_steps=3, cfg_scale=4.0, guidance_interval=(0.0, 0.01))
    outside, _ = load_samples(sample_run(run, 3, 4, late, batch_size=4, out_dir=tmp_path / "gi"))
    np.testing.assert_array_equal(ode, outside)  # guidance outside its interval is no guidance
    rounded, _ = load_samples(sample_run(run, 3, 4, plain.model_copy(update={"rounding": "round"}), batch_size=4,
                                         out_dir=tmp_path / "r"))
    up = rounded.astype(int) - ode.astype(int)  # floor (the authors' default) vs round to nearest
    assert up.min() >= 0 and up.max() <= 1 and 0.3 < up.mean() < 0.7

    with pytest.raises(FileNotFoundError, match="no checkpoint for step 2"):
        sample_run(run, 2, n=2)
