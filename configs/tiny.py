"""A seconds-long run for tests: ResNet-18, 32-channel graph, 64x64 synthetic images."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import base_config  # noqa: E402


def get_config(arg=None):
  del arg
  c = base_config()
  c.model.backbone_depth = 18
  c.model.feature_channels = 32
  c.model.attention_heads = 4
  c.model.decoder_channels = (8, 8, 8, 8)
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
