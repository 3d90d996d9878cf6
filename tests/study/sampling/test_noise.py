"""study.sampling.noise: per-sample seeded normal noise, drawn for a whole batch at once on the device; and the bf16
sampling protocol, which never reuses (or is reused as) TF32 samples."""
import math

import numpy as np
import torch
from train_support import one_thread, smoke_config  # noqa: F401 (autouse fixture)

from study.config import SamplerSettings
from study.evaluation import protocol_name, row_protocol
from study.sampling import SeededNoise, sample_seed, seeded_normal


def test_noise_is_standard_normal_and_a_function_of_seed_call_and_element():
    seeds = [sample_seed(0, i) for i in range(64)]
    z = seeded_normal(seeds, 0, (4, 32, 32))
    assert z.shape == (64, 4, 32, 32) and z.dtype == torch.float32
    flat = z.flatten().double()
    assert abs(float(flat.mean())) < 0.01 and abs(float(flat.std()) - 1) < 0.01
    # the empirical CDF against the normal one (Kolmogorov-Smirnov distance; 262144 draws: about 0.003 expected)
    x = np.sort(flat.numpy())
    cdf = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    assert np.abs(cdf - np.arange(1, len(x) + 1) / len(x)).max() < 0.006
    # neighbouring elements, samples and calls are uncorrelated
    assert abs(float(torch.corrcoef(torch.stack([z[:, 0].flatten(), z[:, 1].flatten()]))[0, 1])) < 0.02
    assert abs(float(torch.corrcoef(torch.stack([z[0].flatten(), z[1].flatten()]))[0, 1])) < 0.05
    assert abs(float(torch.corrcoef(torch.stack([z.flatten(), seeded_normal(seeds, 1, (4, 32, 32)).flatten()]))
                     [0, 1])) < 0.01
    # a sample's noise does not depend on the batch it is drawn in
    assert torch.equal(seeded_normal(seeds[5:9], 0, (4, 32, 32)), z[5:9])
    assert torch.equal(seeded_normal([seeds[7], seeds[3]], 0, (4, 32, 32)), z[[7, 3]])


def test_the_sampler_noise_draws_the_next_call_each_time():
    noise = SeededNoise([1, 2, 3], (2, 4, 4), torch.device("cpu"))
    a, b = noise(), noise()
    assert torch.equal(a, seeded_normal([1, 2, 3], 0, (2, 4, 4))) and torch.equal(b, seeded_normal([1, 2, 3], 1,
                                                                                                    (2, 4, 4)))
    assert noise.calls == 2 and not torch.equal(a, b)


def test_bf16_sampling_is_its_own_protocol(tmp_path):
    tf32, bf16 = SamplerSettings(), SamplerSettings(precision="bf16")
    assert "precision" not in tf32.manifest() and "sampler_precision" not in tf32.row()  # unchanged for TF32
    assert bf16.manifest()["precision"] == "bf16" and bf16.dir_name(5).endswith("-bf16")
    base = {"extractor": "inception", "n_samples": 50_000, "mode": "sde", "num_steps": 250, "cfg_scale": 1.0}
    assert protocol_name(base) == "adm-50k-sde250"
    assert protocol_name({**base, "precision": "bf16"}) == "adm-50k-sde250-bf16"
    assert protocol_name({**base, "num_steps": 50, "precision": "bf16"}) == "inception-50000-sde50-bf16"
    row = {"extractor": "inception", "n_samples": 50_000, **bf16.row()}
    assert row_protocol(row) == "adm-50k-sde250-bf16"
    assert row_protocol({**row, "sampler_precision": float("nan")}) == "adm-50k-sde250"  # rows written before

    import study.training.loop as T
    from study.evaluation import find_samples
    from study.sampling import sample_run

    run = tmp_path / "run"
    T.train(smoke_config("steps=2", "ckpt_every=2"), run)
    ode = SamplerSettings(mode="ode", num_steps=2)
    sample_run(run, 2, 4, ode.model_copy(update={"precision": "bf16"}), batch_size=4)
    assert find_samples(run, 2, 4, ode.manifest()) is None  # TF32 evaluations never reuse bf16 samples
    assert find_samples(run, 2, 4, ode.model_copy(update={"precision": "bf16"}).manifest()) is not None
