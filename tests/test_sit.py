"""study.models.sit: sizes, shapes, the aligned hidden tokens, adaLN-Zero initialisation."""
import pytest
import torch

from study.models.sit import SIZES, build_sit, parse_size, sincos_pos_embed_2d


@pytest.mark.parametrize("name,millions", [("SiT-S/2", 33.0), ("SiT-B/2", 130.5), ("SiT-L/2", 458.0),
                                           ("SiT-XL/2", 675.1)])
def test_paper_sizes_parameter_counts(name, millions):
    # DiT/SiT report 33M, 130M, 458M, 675M for latent 32x32x4, 1000 classes (built on the meta device: no memory)
    with torch.device("meta"):
        model = build_sit(name, input_size=32, in_channels=4, num_classes=1000)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - millions) / millions < 0.01, n
    assert model.grid == (16, 16)


def test_parse_size_and_depth_defaults():
    assert parse_size("SiT-XL/2") == (SIZES["XL"], 2)
    assert parse_size("tiny") == (SIZES["tiny"], None)
    assert SIZES["B"].align_depth == 4 and SIZES["L"].align_depth == 8 and SIZES["XL"].align_depth == 8
    with pytest.raises(ValueError, match="unknown SiT size"):
        parse_size("SiT-XXL/2")
    with pytest.raises(ValueError, match="says patch 2"):
        build_sit("SiT-S/2", input_size=32, in_channels=4, num_classes=10, patch_size=4)


def test_forward_shapes_hidden_tokens_and_zero_init():
    torch.manual_seed(0)
    model = build_sit("smoke", input_size=64, in_channels=3, num_classes=5, patch_size=4)
    assert model.grid == (16, 16) and model.align_depth == 1
    x = torch.randn(3, 3, 64, 64)
    v, h = model(x, torch.rand(3), torch.tensor([0, 4, 5]))  # 5 = the null class
    assert v.shape == x.shape and h.shape == (3, 256, 32)
    assert torch.count_nonzero(v) == 0  # adaLN-Zero: the output layer starts at zero
    with pytest.raises(ValueError, match="expects inputs"):
        model(torch.randn(1, 3, 32, 32), torch.rand(1), torch.tensor([0]))


def test_hidden_tokens_are_taken_after_block_k():
    torch.manual_seed(0)
    model = build_sit("tiny", input_size=16, in_channels=3, num_classes=3, align_depth=3)
    for p in model.parameters():  # leave adaLN-Zero so blocks are not identities
        torch.nn.init.normal_(p, std=0.05)
    x, t, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([1, 2])
    captured = []
    model.blocks[2].register_forward_hook(lambda m, i, o: captured.append(o))
    _, h = model(x, t, y)
    assert torch.equal(h, captured[0])
    with pytest.raises(ValueError, match="align_depth"):
        build_sit("smoke", input_size=16, in_channels=3, num_classes=3, align_depth=3)


def test_sincos_positions():
    pos = sincos_pos_embed_2d(16, 4, 6)
    assert pos.shape == (24, 16)
    assert len({tuple(r) for r in pos.round(6).tolist()}) == 24  # every position distinct
