"""What a network is trained to predict and how it is integrated back, one object per objective (``objective``:
flow matching, MeanFlow, x-prediction, built on ``flow``, ``meanflow`` and ``xpred``), REPA/iREPA's alignment
(``align``) and the loss of one micro-batch (``step``)."""
from study.objectives.align import Projector, alignment_loss, build_projector, pool_tokens, spatial_normalize
from study.objectives.flow import (cfg_velocity, flow_sample, interpolate, path_coefficients, sample_time,
                                   score_from_velocity, velocity_to_eps_x0)
from study.objectives.meanflow import meanflow_loss, meanflow_sample, meanflow_step, sample_time_pair
from study.objectives.objective import FlowMatching, MeanFlow, Noise, Objective, XPrediction, objective_for
from study.objectives.step import TrainingStep
from study.objectives.xpred import xpred_inputs, xpred_loss, xpred_sample, xpred_velocity

__all__ = ["Objective", "FlowMatching", "MeanFlow", "XPrediction", "objective_for", "Noise", "TrainingStep",
           "spatial_normalize", "build_projector", "alignment_loss", "Projector", "pool_tokens", "path_coefficients",
           "interpolate", "velocity_to_eps_x0", "score_from_velocity", "sample_time", "cfg_velocity", "flow_sample",
           "sample_time_pair", "meanflow_loss", "meanflow_sample", "meanflow_step", "xpred_inputs", "xpred_velocity",
           "xpred_loss", "xpred_sample"]
