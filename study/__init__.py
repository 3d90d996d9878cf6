"""The study: train, sample and score. One sub-package per stage, each with its API in ``__init__``'s ``__all__``.

Imports point down this list (``tests/test_architecture.py``):

- ``common``: atomic writes, logging, cache paths, the process group;
- ``config``: the typed configs, presets, sampler settings and size tables (no torch);
- ``data``: datasets and codecs; ``models``: SiT, MeanFlow SiT, JiT;
- ``objectives``: flow matching, MeanFlow, x-prediction, the alignment and the loss of one micro-batch;
- ``repae``: REPA-E's end-to-end VAE tuning; ``run``: what a run builds and its directory (checkpoints);
- ``pretrain``: the locally trained encoders; ``sampling``; ``training`` (the loop);
- ``evaluation``: FID and its protocols; ``scoring``: spatial metrics, the feature cache, the linear probe.
"""
