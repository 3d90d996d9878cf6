"""What every stage shares: atomic file writes, logging and progress bars, cache paths, the process group."""
from study.common.distributed import DistInfo, all_reduce_mean, barrier, cpu_threads, init_distributed, resolve_device
from study.common.io import (DiskFullError, append_jsonl, atomic_path, atomic_savez, atomic_torch_save,
                             atomic_write_json, atomic_write_text, disk_full_error, file_digest, file_mode, read_jsonl,
                             remove_stale_temporaries, temporary_name)
from study.common.log import get_logger, progress, setup_logging
from study.common.paths import cache_dir

__all__ = ["DistInfo", "init_distributed", "all_reduce_mean", "barrier", "resolve_device", "cpu_threads",
           "atomic_path", "atomic_write_text", "atomic_write_json", "atomic_savez", "atomic_torch_save",
           "DiskFullError", "disk_full_error", "file_mode", "temporary_name", "remove_stale_temporaries",
           "append_jsonl", "read_jsonl", "file_digest", "get_logger", "progress", "setup_logging", "cache_dir"]
