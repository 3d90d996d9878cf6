"""The results store (parquet tables written atomically, one file per job), the column names every layer shares
(``results.schema``) and provenance; imports nothing of ours."""
from results.schema import (ENCODER_METRICS, FD_METRIC, FD_PREFIX, FID, JOB_HASH, LP_TOP1, NO_ENCODER, RUN_HASH,
                            SPATIAL_METRICS, TABLE_KEYS, TABLES)
from results.store import SCHEMA_VERSION, CorruptResultError, ResultStore, StoreError, default_root

__all__ = ["ResultStore", "CorruptResultError", "StoreError", "TABLES", "TABLE_KEYS", "SCHEMA_VERSION",
           "default_root", "NO_ENCODER", "JOB_HASH", "RUN_HASH", "FID", "FD_PREFIX", "FD_METRIC", "LP_TOP1",
           "SPATIAL_METRICS", "ENCODER_METRICS"]
