"""The denoising networks: SiT (``sit``), its MeanFlow variant with a second time input (``meanflow_sit``) and the
pixel-space JiT (``jit``); each one readable file."""
from study.models.jit import JiT, build_jit
from study.models.meanflow_sit import MeanFlowSiT, build_meanflow_sit
from study.models.sit import SiT, block_indices, build_sit, unpatchify

__all__ = ["SiT", "build_sit", "block_indices", "unpatchify", "MeanFlowSiT", "build_meanflow_sit", "JiT",
           "build_jit"]
