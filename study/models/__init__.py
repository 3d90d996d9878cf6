"""The denoising networks: SiT (``sit``), MeanFlow's SiT with a second time input (``meanflow_sit``) and the
pixel-space JiT (``jit``); each one readable file. ``build_network`` (``registry``) builds the one a ``model.size``
names."""
from study.models.jit import JiT, build_jit
from study.models.meanflow_sit import MeanFlowSiT, build_meanflow_sit
from study.models.registry import BUILDERS, MEANFLOW_BUILDERS, build_network
from study.models.sit import SiT, block_indices, build_sit, unpatchify

__all__ = ["SiT", "build_sit", "block_indices", "unpatchify", "MeanFlowSiT", "build_meanflow_sit", "JiT",
           "build_jit", "BUILDERS", "MEANFLOW_BUILDERS",
           "build_network"]
