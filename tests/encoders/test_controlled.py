"""Controlled encoders (catalog ``controlled:``): the composing rule, weight sharing and CLS mixing (their entry checks
and malformed entries: tests/study/pretrain/test_pretrain.py, beside the other local entries')."""
import torch

import encoders
from encoders import get_encoder
from encoders.controlled import ControlledNet, compose_vectors
from encoders.spec import Controlled

CTL = ["ctl-lay-c10", "ctl-lay-c5", "ctl-lay-c2", "ctl-lay-c0", "ctl-glob-c10", "ctl-glob-c2"]


class _Student(torch.nn.Module):
    """Stands in for the ViT: 1 CLS + 4 patch tokens of width 16, so the heads below read what the test sets."""
    num_features, num_prefix_tokens = 16, 1

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.tokens = None

    def forward_features(self, x):
        return self.tokens


def _net(rule: Controlled, classes, mask_logits) -> ControlledNet:
    """A ControlledNet whose class head predicts ``classes`` and whose mask head gives ``mask_logits`` [B, 4]."""
    net = ControlledNet(_Student(), rule)
    b = len(classes)
    tokens = torch.zeros(b, 5, 16)
    tokens[:, 0, :rule.classes] = torch.nn.functional.one_hot(torch.tensor(classes), rule.classes).float()
    tokens[:, 1:, 15] = torch.as_tensor(mask_logits, dtype=torch.float32)
    net.vit.tokens = tokens
    with torch.no_grad():
        net.class_head.weight.copy_(torch.eye(rule.classes, 16))
        net.class_head.bias.zero_()
        net.mask_head.weight.copy_(torch.eye(16)[15:])
        net.mask_head.bias.zero_()
    return net


def test_layout_tokens_mix_object_and_background_by_the_predicted_mask():
    rule = Controlled(student="s", groups=10)
    obj, bg, groups, group_of = compose_vectors(rule, 16)
    assert torch.allclose(torch.cat([obj[None], bg[None], groups]).norm(dim=1), torch.ones(12))
    patch, cls = _net(rule, [3], [[30.0, -30.0, 0.0, 30.0]])(torch.zeros(1))
    want_obj = obj + groups[group_of[3]]
    assert torch.allclose(cls[0], want_obj)
    assert torch.allclose(patch[0, 0], want_obj, atol=1e-6) and torch.allclose(patch[0, 1], bg, atol=1e-6)
    assert torch.allclose(patch[0, 2], 0.5 * want_obj + 0.5 * bg, atol=1e-6)  # half covered


def test_groups_merge_classes_and_global_tokens_carry_no_layout():
    classes = list(range(10))
    masks = torch.randn(10, 4) * 3
    for groups in (5, 2, 1):
        rule = Controlled(student="s", groups=groups)
        _, cls = _net(rule, classes, masks)(torch.zeros(1))
        distinct = torch.unique(cls.round(decimals=5), dim=0)
        assert len(distinct) == groups
    rule = Controlled(student="s", kind="global", groups=10)
    patch, cls = _net(rule, classes, masks)(torch.zeros(1))
    assert torch.equal(patch, cls[:, None].expand_as(patch))  # the same token everywhere, whatever the mask says


def test_controlled_entries_share_one_student_file_and_differ_in_their_fingerprint():
    specs = [encoders.get_spec(n) for n in CTL]
    assert len({encoders.local_weights_path(s) for s in specs}) == 1
    assert len({s.fingerprint() for s in specs}) == len(CTL)  # feature caches and score ids stay apart
    assert encoders.local_weights_path(specs[0]).name.startswith("ctl-student-")
    # the random init is the student's, whichever entry builds it
    a, b = (encoders.build_model(s, "random").state_dict() for s in specs[:2])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_clsmix_adds_the_object_descriptor_to_every_token():
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    plain = get_encoder("ctl-lay-c10", weights="random").encode(x)
    mixed = get_encoder("ctl-lay-c10@clsmix=0.5", weights="random").encode(x)
    assert plain["patch"].shape == (3, 256, 64) and plain["cls"].shape == (3, 64)
    assert torch.allclose(mixed["patch"], plain["patch"] + 0.5 * plain["cls"][:, None], atol=1e-6)
