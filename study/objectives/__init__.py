"""What a network is trained to predict and how it is integrated back: flow matching (``flow``), MeanFlow
(``meanflow``), x-prediction (``xpred``), REPA/iREPA's alignment (``align``) and the loss of one micro-batch
(``step``)."""
from study.objectives.align import Projector, alignment_loss, build_projector, spatial_normalize
from study.objectives.flow import interpolate, path_coefficients, sample_time, score_from_velocity, velocity_to_eps_x0
from study.objectives.meanflow import (MeanFlowSettings, meanflow_loss, meanflow_sample, meanflow_settings,
                                       meanflow_step, sample_time_pair)
from study.objectives.step import TrainingStep
from study.objectives.xpred import xpred_inputs, xpred_loss, xpred_sample, xpred_velocity

__all__ = ["spatial_normalize", "build_projector", "alignment_loss", "Projector", "path_coefficients", "interpolate", "velocity_to_eps_x0", "score_from_velocity",
           "sample_time", "MeanFlowSettings", "meanflow_settings", "sample_time_pair", "meanflow_loss",
           "meanflow_sample", "meanflow_step", "xpred_inputs", "xpred_velocity", "xpred_loss", "xpred_sample",
           "TrainingStep"]
