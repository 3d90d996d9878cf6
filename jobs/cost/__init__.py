"""What a sweep costs in GPU-hours (``estimate``), from FLOPs counted on the meta device (``flops``, REPA-E's extra
work: ``repae``) over a stated or calibrated throughput."""
from jobs.cost.estimate import (CALIBRATION_DIR, DEFAULT_MFU, GPUS, IMAGENET_SPLITS, KINDS, Calibration,
                                EstimateSettings, check_budget, estimate_jobs, estimate_spec, estimate_text,
                                load_calibration, parse_precision, sample_work, summary_text, train_work)
from jobs.cost.flops import (CODEC_GEOMETRY, FLOPS_FILE, FlopTable, count_flops, encoder_flops, encoder_key,
                             flop_table, inception_flops, projector_flops, sd_vae_decode_flops, sit_flops, sit_key,
                             small_cnn_flops)
from jobs.cost.repae import discriminator_flops, repae_train_flops, vae_flops, vgg16_flops

__all__ = ["GPUS", "DEFAULT_MFU", "KINDS", "EstimateSettings", "Calibration", "load_calibration", "train_work",
           "sample_work", "estimate_jobs", "estimate_spec", "estimate_text", "summary_text", "CALIBRATION_DIR",
           "parse_precision", "check_budget", "IMAGENET_SPLITS", "FLOPS_FILE", "CODEC_GEOMETRY", "count_flops",
           "sit_key", "sit_flops", "projector_flops", "encoder_key", "encoder_flops", "sd_vae_decode_flops",
           "inception_flops", "small_cnn_flops", "FlopTable", "flop_table", "vae_flops", "vgg16_flops",
           "discriminator_flops", "repae_train_flops"]
