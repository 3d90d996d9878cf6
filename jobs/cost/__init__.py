"""What a sweep costs in GPU-hours: the estimate (``estimate``) of the work of its jobs (``work``), FLOPs counted on
the meta device (``flops``; REPA-E's extra work: ``repae``), over a throughput (``throughput``): the GPU's datasheet
peak (``gpus``) x an MFU, the default or one measured by benchmarks/gpu_check.py (``calibration``, shipped as package
data in ``jobs/cost/calibration/``); rendered as text with the submit budget check (``text``)."""
from jobs.cost.calibration import CALIBRATION_DIR, CALIBRATION_SCHEMA, Calibration, load_calibration
from jobs.cost.estimate import EstimateSettings, estimate_jobs, estimate_spec, parse_precision
from jobs.cost.flops import (FLOPS_FILE, SD_VAE_CONFIG, FlopTable, count_flops, encoder_flops, encoder_key, flop_table,
                             inception_flops, projector_flops, sd_vae_decode_flops, sd_vae_encode_flops, sit_flops,
                             sit_key, small_cnn_flops)
from jobs.cost.gpus import GPUS
from jobs.cost.repae import discriminator_flops, repae_train_flops, vae_flops, vgg16_flops
from jobs.cost.text import check_budget, estimate_text, summary_text
from jobs.cost.throughput import DEFAULT_MFU
from jobs.cost.work import IMAGENET_SPLITS, KINDS, codec_geometry, meanflow_forwards, sample_work, train_work

__all__ = ["GPUS", "DEFAULT_MFU", "KINDS", "EstimateSettings", "Calibration", "load_calibration", "train_work",
           "sample_work", "meanflow_forwards", "codec_geometry", "estimate_jobs", "estimate_spec", "estimate_text",
           "summary_text", "CALIBRATION_DIR", "CALIBRATION_SCHEMA", "parse_precision", "check_budget",
           "IMAGENET_SPLITS", "FLOPS_FILE", "SD_VAE_CONFIG", "count_flops", "sit_key", "sit_flops",
           "projector_flops", "encoder_key", "encoder_flops", "sd_vae_encode_flops", "sd_vae_decode_flops",
           "inception_flops", "small_cnn_flops", "FlopTable", "flop_table", "vae_flops", "vgg16_flops",
           "discriminator_flops", "repae_train_flops"]
