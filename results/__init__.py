"""The results store (parquet tables written atomically, one file per job) and provenance; imports nothing of ours."""
from results.store import (SCHEMA_VERSION, TABLE_KEYS, TABLES, CorruptResultError, ResultStore, StoreError,
                           default_root)

#: The ``encoder`` column of runs that align to no encoder (a ``vanilla`` method, trained once per model and seed).
NO_ENCODER = "none"

__all__ = ["ResultStore", "CorruptResultError", "StoreError", "TABLES", "TABLE_KEYS", "SCHEMA_VERSION",
           "default_root", "NO_ENCODER"]
