"""SDPAL and its backbone as Flax linen modules (NHWC)."""

from sdpal_jax.models.resnet import ResNet
from sdpal_jax.models.sdpal import DPAL, MOAP, MOPC, SDPAL, Decoder, build_model, init_model

__all__ = ["DPAL", "MOAP", "MOPC", "SDPAL", "Decoder", "ResNet", "build_model", "init_model"]
