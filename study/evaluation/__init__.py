"""Generation quality: FID/sFID/IS/precision/recall under ADM's protocol (``evaluate``, ``fid``, ``prdc``,
``inception``), the small-data ``fd_synthetic`` extractor (``extractor``), the layout-sensitive ``fd_layout`` one
(``layout``), reference statistics (``reference``) and
the named FID protocols (``protocols``)."""
from study.evaluation.evaluate import evaluate_run, evaluate_samples, find_samples, iter_sample_images, sample_shards
from study.evaluation.extractor import (ExtractorConfig, FeatureExtractor, SmallCNN, SyntheticExtractor,
                                        extract_features, get_extractor, load_synthetic_extractor, metric_name,
                                        train_small_cnn)
from study.evaluation.fid import (AdmBatch, AdmNpzError, FeatureStats, StatisticsMismatchError, StreamingStats,
                                  compute_statistics, fd, frechet_distance, iter_npz_images, npz_image_count,
                                  read_adm_npz, write_adm_npz)
from study.evaluation.layout import LayoutCNN, LayoutConfig, LayoutExtractor, load_layout_extractor, train_layout_cnn
from study.evaluation.protocols import PROTOCOL_FIELDS, PROTOCOLS, protocol_name, protocol_settings, row_protocol
from study.evaluation.reference import PR_REFERENCE_SIZE, Reference, check_reference, load_reference

__all__ = ["evaluate_run", "evaluate_samples", "find_samples", "sample_shards", "iter_sample_images",
           "FeatureExtractor", "ExtractorConfig", "SmallCNN", "SyntheticExtractor", "train_small_cnn",
           "load_synthetic_extractor", "LayoutConfig", "LayoutCNN", "LayoutExtractor", "train_layout_cnn",
           "load_layout_extractor", "get_extractor", "extract_features", "metric_name",
           "StatisticsMismatchError", "AdmNpzError", "FeatureStats", "StreamingStats", "frechet_distance",
           "compute_statistics", "fd", "AdmBatch", "read_adm_npz", "write_adm_npz", "iter_npz_images",
           "npz_image_count", "PROTOCOLS", "PROTOCOL_FIELDS", "protocol_settings", "protocol_name", "row_protocol",
           "Reference", "load_reference", "check_reference", "PR_REFERENCE_SIZE"]
