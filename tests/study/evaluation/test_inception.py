"""The Inception path offline: weights resolution and its errors, ADM feature layout, parity with torch-fidelity.

Real weights cannot be downloaded here, so a random-init, BatchNorm-calibrated state dict of the same class stands
in (numbers computed with it mean nothing; only shapes, layout and plumbing are checked).
"""
import numpy as np
import pytest
import torch

pytest.importorskip("torch_fidelity")

from study.evaluation import compute_statistics, extract_features, frechet_distance
from study.evaluation import inception as inc  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(inc.random_inception_state_dict(seed=0, calibration_images=4, size=32), path)
    return path


@pytest.fixture(scope="module")
def extractor(weights):
    return inc.InceptionExtractor(weights, device="cpu")


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8)


@pytest.fixture(scope="module")
def forward(extractor, images):
    """One forward pass (Inception costs ~0.1 s/image on a free CPU core): outputs + the raw mixed_6/conv map."""
    grabbed = []
    handle = extractor.model.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: grabbed.append(o))
    try:
        out = extractor(images)
    finally:
        handle.remove()
    return out, grabbed[0]


# ------------------------------------------------------------------ weights
def test_missing_weights_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(inc.ENV_WEIGHTS, raising=False)
    monkeypatch.setenv("REPA_STUDY_OFFLINE", "1")
    with pytest.raises(inc.InceptionWeightsMissing) as err:
        inc.InceptionExtractor()
    msg = str(err.value)
    assert inc.WEIGHTS_FILE in msg and inc.WEIGHTS_URL in msg
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / inc.WEIGHTS_FILE) in msg
    assert inc.ENV_WEIGHTS in msg


def test_wrong_explicit_path_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv(inc.ENV_WEIGHTS, str(tmp_path / "nope.pth"))
    with pytest.raises(inc.InceptionWeightsMissing, match="nope.pth does not exist"):
        inc.resolve_weights()


def test_weights_found_in_env_and_in_hub_cache(tmp_path, monkeypatch, weights):
    monkeypatch.setenv(inc.ENV_WEIGHTS, str(weights))
    assert inc.resolve_weights() == weights
    monkeypatch.delenv(inc.ENV_WEIGHTS)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / inc.WEIGHTS_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert inc.resolve_weights(download=False) == cached


# ------------------------------------------------------------------ features
def test_feature_shapes_and_adm_layout(extractor, forward):
    out, fmap = forward
    assert out["pool"].shape == (4, 2048)
    assert out["spatial"].shape == (4, 7 * 17 * 17)
    assert out["logits"].shape == (4, 1008)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())
    assert out["pool"].std() > 0 and out["spatial"].std() > 0  # calibrated BN: not degenerate
    # spatial: mixed_6/conv (Mixed_6d.branch1x1 after ReLU), first 7 channels, channels last, flattened HWC
    assert fmap.shape == (4, 192, 17, 17) and (fmap >= 0).all()
    expected = fmap.permute(0, 2, 3, 1)[:, :, :, :7].reshape(4, -1)
    torch.testing.assert_close(out["spatial"], expected)
    assert out["spatial"][0, 7] == fmap[0, 0, 0, 1]  # HWC order: the 8th value is channel 0 at (0, 1)
    # IS logits: pool @ W without the bias (ADM's softmax graph)
    torch.testing.assert_close(out["logits"], out["pool"] @ extractor.model.fc.weight.T, rtol=1e-4, atol=1e-3)


def test_features_are_batch_independent_and_accept_nhwc(extractor, images, forward):
    split = extract_features(extractor, [images[:1].permute(0, 2, 3, 1).numpy(), images[1:]])
    for key, value in forward[0].items():
        np.testing.assert_allclose(split[key], value.numpy(), rtol=1e-4, atol=1e-4)


def test_identical_sets_give_zero_fid(forward):
    stats = compute_statistics(forward[0]["pool"].numpy()[:, :64])  # 64 dims: a 2048-d eigh is seconds of CPU
    value = frechet_distance(stats.mu, stats.sigma, stats.mu, stats.sigma)
    assert 0 <= value <= 1e-6 * np.trace(stats.sigma)


def test_extractor_id_names_the_weights(extractor, weights):
    assert extractor.id.startswith("inception-v3-compat-")
    assert extractor.id == inc.InceptionExtractor(weights, device="cpu").id


# ------------------------------------------------------------------ parity with torch-fidelity
def test_fid_from_statistics_matches_torch_fidelity():
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    rng = np.random.default_rng(0)
    a = compute_statistics(rng.standard_normal((600, 24)))
    b = compute_statistics(rng.standard_normal((500, 24)) @ rng.standard_normal((24, 24)) * 0.5 + 0.2)
    theirs = fid_statistics_to_metric({"mu": a.mu, "sigma": a.sigma}, {"mu": b.mu, "sigma": b.sigma},
                                      verbose=False)["frechet_inception_distance"]
    assert frechet_distance(a.mu, a.sigma, b.mu, b.sigma) == pytest.approx(theirs, rel=1e-8)


class _ToyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 3, stride=2)

    def forward(self, x):
        return torch.relu(self.conv(x.float() / 255)).mean(dim=(2, 3))


def test_fid_pipeline_matches_torch_fidelity_calculate_metrics(tmp_path):
    import torch_fidelity
    from torch_fidelity import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    net = _ToyNet()

    class ToyExtractor(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            self.net = net

        def forward(self, x):
            return (self.net(x),)

        @staticmethod
        def get_provided_features_list():
            return ("16",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "16"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

    if "repa-study-toy" not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor("repa-study-toy", ToyExtractor)

    class Images(torch.utils.data.Dataset):
        def __init__(self, seed, shift):
            g = torch.Generator().manual_seed(seed)
            self.x = (torch.randint(0, 200, (300, 3, 16, 16), generator=g) + shift).to(torch.uint8)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    a, b = Images(0, 0), Images(1, 30)
    theirs = torch_fidelity.calculate_metrics(input1=a, input2=b, fid=True, feature_extractor="repa-study-toy",
                                              cuda=False, cache=False, verbose=False, save_cpu_ram=True,
                                              batch_size=64, cache_root=str(tmp_path))["frechet_inception_distance"]

    class Ours:
        name, id, outputs, stats_prefix = "toy", "toy", ("pool",), "toy"

        def __call__(self, x):
            with torch.no_grad():
                return {"pool": net(x)}

    sa = compute_statistics(extract_features(Ours(), [a.x[:100], a.x[100:]])["pool"])
    sb = compute_statistics(extract_features(Ours(), [b.x])["pool"])
    ours = frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    assert ours > 0.01
    assert ours == pytest.approx(theirs, rel=1e-5)


# ------------------------------------------------------------------ cluster only: the real-weights regression
def test_adm_regression_with_real_weights():
    """ADM-G+U ImageNet-256 sample batch vs VIRTUAL_imagenet256_labeled.npz (ADM README numbers).

    Runs only where the files exist: REPA_STUDY_ADM_SAMPLES (admnet_guided_upsampled_imagenet256.npz),
    REPA_STUDY_ADM_REF (VIRTUAL_imagenet256_labeled.npz) and the real Inception weights (GPU advised: 60K images).
    """
    import os

    samples, ref = os.environ.get("REPA_STUDY_ADM_SAMPLES"), os.environ.get("REPA_STUDY_ADM_REF")
    if not (samples and ref and os.path.isfile(samples) and os.path.isfile(ref)):
        pytest.skip("set REPA_STUDY_ADM_SAMPLES and REPA_STUDY_ADM_REF to ADM's npz files to run")
    try:
        ex = inc.InceptionExtractor(download=False)
    except inc.InceptionWeightsMissing as exc:
        pytest.skip(str(exc))
    from study.evaluation import evaluate_samples, load_reference

    out = evaluate_samples(samples, ex, load_reference(ref, ex, batch_size=200), n=50_000, batch_size=200)
    assert out["fid"] == pytest.approx(3.9426, abs=0.005)
    assert out["sfid"] == pytest.approx(6.140, abs=0.01)
    assert out["inception_score"] == pytest.approx(215.84, rel=0.002)
    assert out["precision"] == pytest.approx(0.8265, abs=0.003)
    assert out["recall"] == pytest.approx(0.5309, abs=0.005)
