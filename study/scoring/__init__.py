"""Scoring an encoder: the spatial-structure metrics of its patch tokens (``spatial``: LDS, CDS, SRSS, RMSC), the
on-disk feature cache that computes them in one pass (``feature_cache``), the linear probe (``probe``), the
``encoders`` results row (``score``) and the masks SRSS needs (``masks``: the minimum mask fraction, and the check
a sweep runs before submitting its score jobs)."""
from study.scoring.feature_cache import FeatureSet, extract_encoder_features, feature_cache_dir
from study.scoring.masks import AUTHORS_MIN_FRACTION, MaskCheck, check_masks, srss_kept
from study.scoring.probe import DEFAULT_L2, ProbeResult, linear_probe
from study.scoring.score import score_encoder, spatial_summary, write_rows
from study.scoring.spatial import (DEFAULT_DMAX, DEFAULT_FAR, DEFAULT_NEAR, cds, lds, masks_to_grid, resolve_grid, rmsc,
                                   spatial_metrics, srss)

__all__ = ["FeatureSet", "extract_encoder_features", "feature_cache_dir", "ProbeResult", "linear_probe",
           "DEFAULT_L2", "score_encoder", "spatial_summary", "write_rows", "lds", "cds", "srss", "rmsc",
           "spatial_metrics", "masks_to_grid", "resolve_grid", "DEFAULT_FAR", "DEFAULT_DMAX",
           "DEFAULT_NEAR", "MaskCheck", "check_masks", "srss_kept", "AUTHORS_MIN_FRACTION"]
