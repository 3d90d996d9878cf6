"""``python -m jobs.cli`` (e.g. under torchrun) is the ``repa-study`` command."""
from jobs.cli.root import main

main()
