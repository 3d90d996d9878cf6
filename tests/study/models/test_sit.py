"""study.models.sit: sizes, shapes, the aligned hidden tokens, adaLN-Zero initialisation."""
import pytest
import torch

from study.config import SIZES, parse_size
from study.models.sit import build_sit, sincos_pos_embed_2d


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
    assert model.grid == (16, 16) and model.depth == 2
    x = torch.randn(3, 3, 64, 64)
    t, y = torch.rand(3), torch.tensor([0, 4, 5])  # 5 = the null class
    v = model(x, t, y)
    assert v.shape == x.shape
    assert torch.count_nonzero(v) == 0  # adaLN-Zero: the output layer starts at zero
    v2, hidden = model.forward_intermediates(x, t, y, indices=[0, 1])
    assert torch.equal(v2, v) and [h.shape for h in hidden] == [(3, 256, 32)] * 2
    with pytest.raises(ValueError, match="expects inputs"):
        model(torch.randn(1, 3, 32, 32), torch.rand(1), torch.tensor([0]))


def test_intermediates_are_taken_after_the_chosen_blocks():
    torch.manual_seed(0)
    model = build_sit("tiny", input_size=16, in_channels=3, num_classes=3)
    for p in model.parameters():  # leave adaLN-Zero so blocks are not identities
        torch.nn.init.normal_(p, std=0.05)
    x, t, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([1, 2])
    captured = {}
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(lambda m, inp, out, i=i: captured.setdefault(i, out))
    v, hidden = model.forward_intermediates(x, t, y, indices=[2, -1])  # after block 3 and after the last block
    assert len(hidden) == 2 and torch.equal(hidden[0], captured[2]) and torch.equal(hidden[1], captured[3])
    captured.clear()
    _, last_two = model.forward_intermediates(x, t, y, indices=2)  # timm: an int n is the last n blocks
    assert torch.equal(last_two[0], captured[2]) and torch.equal(last_two[1], captured[3])
    assert torch.equal(v, model(x, t, y))
    for bad in ([4], [-5], 0, 5):
        with pytest.raises(ValueError, match="out of range|between 1"):
            model.forward_intermediates(x, t, y, indices=bad)


def test_alignment_depth_belongs_to_the_method_and_checkpoints_do_not_record_it():
    from study.config import load_train_config
    from study.data import get_codec
    from study.run import align_depth, build_denoiser

    cfg = load_train_config("smoke", ["model.size=tiny"])
    assert align_depth(cfg) == 2  # the size's default (REPA's)
    assert align_depth(load_train_config("smoke", ["model.size=tiny", "method.depth=4"])) == 4
    with pytest.raises(ValueError, match="method.depth 5"):
        align_depth(load_train_config("smoke", ["model.size=tiny", "method.depth=5"]))
    torch.manual_seed(0)
    shallow = build_denoiser(cfg, image_size=16, num_classes=3, codec=get_codec("identity"), encoder_dims=[8])
    deep = build_denoiser(load_train_config("smoke", ["model.size=tiny", "method.depth=4"]), image_size=16,
                          num_classes=3, codec=get_codec("identity"), encoder_dims=[8])
    assert shallow.state_dict().keys() == deep.state_dict().keys()  # the depth is no parameter of the model
    deep.load_state_dict(shallow.state_dict())
    for p in shallow.parameters():
        torch.nn.init.normal_(p, std=0.05)
    deep.load_state_dict(shallow.state_dict())
    x, t, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([0, 1])
    (v_a, (p_a,)), (v_b, (p_b,)) = shallow(x, t, y), deep(x, t, y)
    assert torch.equal(v_a, v_b) and not torch.allclose(p_a, p_b)  # same SiT, alignment read at another block
    _, hidden = shallow.sit.forward_intermediates(x, t, y, indices=[1])
    assert torch.equal(p_a, shallow.projectors[0](hidden[0], shallow.sit.grid))


def test_sincos_positions():
    pos = sincos_pos_embed_2d(16, 4, 6)
    assert pos.shape == (24, 16)
    assert len({tuple(r) for r in pos.round(6).tolist()}) == 24  # every position distinct
