"""The catalog's ``source: local`` encoders (the miniature's): trained here by their entry's recipe, cached, and
loaded by every stage through :func:`load_encoder` (which trains a missing one first)."""
from study.pretrain.local import ensure_pretrained, load_encoder, needs_pretraining, pretrain_encoder, pretrain_missing

__all__ = ["pretrain_encoder", "pretrain_missing", "ensure_pretrained", "load_encoder", "needs_pretraining"]
