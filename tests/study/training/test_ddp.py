"""2-process gloo data parallel reproduces one process on the same (doubled per rank) global batch."""
import pytest
import torch
import torch.multiprocessing as mp
from train_support import ddp_worker, free_port, log_rows, one_thread, params, smoke_config  # noqa: F401 (autouse fixture)

import study.training.loop as T
from study.run import build_codec, build_denoiser

OVERRIDES = ["steps=3", "ckpt_every=3", "batch_size=8", "method=irepa"]


def test_two_gloo_ranks_match_one_process(tmp_path):
    torch.set_num_threads(1)
    T.train(smoke_config(*OVERRIDES), tmp_path / "single")
    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path / "ddp"), OVERRIDES), nprocs=2, join=True)
    a, b = params(tmp_path / "single", 3), params(tmp_path / "ddp", 3)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    for ra, rb in zip(log_rows(tmp_path / "single"), log_rows(tmp_path / "ddp")):  # Adam hides gradient scale
        assert (rb["loss"], rb["loss_align"], rb["grad_norm"]) == \
            pytest.approx((ra["loss"], ra["loss_align"], ra["grad_norm"]), rel=1e-4)
    torch.manual_seed(0)  # train() seeds the initialisation with cfg.seed
    init = build_denoiser(smoke_config(*OVERRIDES), image_size=32, num_classes=4, codec=build_codec("identity"),
                            encoder_dims=[64])
    moved = sum(not torch.equal(v, a[f"model.{k}"]) for k, v in init.state_dict().items() if f"model.{k}" in a)
    assert moved > 0  # the comparison is between trained parameters, not two copies of the initialisation
