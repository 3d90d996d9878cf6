"""Where a sweep's jobs run: on this machine (``local``: background processes with dependencies, or ``debug``: in
this process) or on SLURM through submitit."""
from jobs.executors.local import claim_driver, drive, driver_pid, run_debug, spawn_driver, sweep_dir

__all__ = ["drive", "run_debug", "spawn_driver", "driver_pid", "claim_driver", "sweep_dir"]
