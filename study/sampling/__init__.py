"""Sampling a trained run: the integrators, per-sample seeds, ADM-style npz shards and preview sheets."""
from study.sampling.sample import sample_images, sample_latents, sample_run, sample_seed, save_image_sheet

__all__ = ["sample_images", "sample_latents", "sample_run", "save_image_sheet", "sample_seed"]
