"""Column names that more than one layer spells: what ``study`` writes, ``jobs`` adds and ``analysis`` reads.

One definition each, imported through ``results`` (``from results import RUN_HASH``). A name that one package
alone uses stays in that package. Renamed columns are mapped on read (``results.store.UPGRADES``), so tables
written by earlier versions still load under these names.
"""
from __future__ import annotations

__all__ = ["TABLE_KEYS", "TABLES", "JOB_HASH", "RUN_HASH", "NO_ENCODER", "FID", "FD_PREFIX", "FD_METRIC",
           "LP_TOP1", "SPATIAL_METRICS", "ENCODER_METRICS"]

#: Known tables and the columns that identify a row (latest write wins per key on read).
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    # an FID-10K and an FID-50K (or Inception and synthetic scores, other references or samplers) of one
    # job and step are different results, not re-runs of one another
    "generation": ("job_id", "step", "n_samples", "extractor", "reference", "sampler_mode", "sampler_steps",
                   "cfg_scale", "guidance_interval", "sample_seed"),
    "encoders": ("job_id", "encoder", "dataset"),
    "runs": ("job_id",),
}
TABLES = tuple(TABLE_KEYS)

# ---------------------------------------------------------------------------------------------- hashes
#: The hash part of a job id (``STAGE-HASH``: the hash of what determines the job's result, ``jobs.plan``); on
#: every row a job writes.
JOB_HASH = "job_hash"
#: A training run's identity (``study.run.run_hash``: its config without the length fields, as in its checkpoints
#: and sample manifests); on ``generation`` rows (the evaluated run) and on the ``runs`` rows of trainings.
RUN_HASH = "run_hash"

# ---------------------------------------------------------------------------------------------- values
#: The ``encoder`` column of runs that align to no encoder (a ``vanilla`` method, trained once per model and seed).
NO_ENCODER = "none"

# ---------------------------------------------------------------------------------------------- quality
#: Generation quality: ``fid`` (Inception, the ADM protocol), else ``fd_<extractor>`` (e.g. ``fd_synthetic``).
FID = "fid"
FD_PREFIX = "fd_"
#: The ``generation`` column that names the row's quality column (it starts with ``fd_`` but holds no distance).
FD_METRIC = "fd_metric"

# ---------------------------------------------------------------------------------------------- encoder scores
#: Linear-probe top-1 accuracy on mean-pooled patch tokens, a fraction in [0, 1] in every table.
LP_TOP1 = "lp_top1"
SPATIAL_METRICS = ("lds", "cds", "srss", "rmsc")
#: The encoder properties the study correlates generation quality with.
ENCODER_METRICS = (LP_TOP1, *SPATIAL_METRICS)
