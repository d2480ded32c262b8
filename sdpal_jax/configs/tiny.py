"""A seconds-long run for tests: ResNet-18, 32-channel graph, 64x64 synthetic images."""

import ml_collections

from sdpal_jax import model_config
from sdpal_jax.configs.common import base_config, parse_variants


def tiny_model() -> ml_collections.ConfigDict:
  """ResNet-18, 32-channel correlation map: the whole network compiles in seconds."""
  c = model_config.default_model_config()
  c.backbone_depth = 18
  c.feature_channels = 32
  c.attention_heads = 4
  c.decoder_channels = (8, 8, 8, 8)
  return c


def get_config(arg=None):
  parse_variants(arg, ())
  c = base_config()
  c.model = tiny_model()
  c.preprocess.image_size = (64, 64)
  c.preprocess.normalization = "imagenet"
  c.data.dataset = "synthetic_forgery/mixed_tiny"
  c.optimizer.learning_rate = 1e-3
  c.global_batch_size = 8
  c.num_train_steps = 4
  c.log_every_steps = 2
  c.eval_every_steps = 2
  c.checkpoint_every_steps = 2
  return c
