"""Analysis of the study's results: correlations, the paper's published data, reports and FID prediction.

Imports only ``results`` (and third-party packages), never ``study``, ``encoders`` or ``jobs``.
"""
from analysis.correlate import correlate

__all__ = ["correlate"]
