"""Sampling a trained run: the integrators, per-sample seeded noise on the device, ADM-style npz shards and preview
sheets."""
from study.sampling.noise import NOISE_VERSION, SeededNoise, seeded_normal
from study.sampling.sample import sample_images, sample_latents, sample_run, sample_seed, save_image_sheet

__all__ = ["sample_images", "sample_latents", "sample_run", "save_image_sheet", "sample_seed", "seeded_normal",
           "SeededNoise", "NOISE_VERSION"]
