"""The recipe of the model packaged with the library (``sdpal-predict`` with no ``--checkpoint``).

The quickstart network (ResNet-18 at half width, 64-channel correlation map,
128x128 inputs) trained longer on ``synthetic_forgery/mixed_large``: the
same generator as the quickstart's ``mixed_small`` with 16000 distinct
training images instead of 2400, so that each image is seen about once
rather than eight times in the same 2400 steps. Only generated data made from photos
that ship inside installed packages: nothing in it carries research-only
terms. The weights, the exact command and what they score travel with the
package (``sdpal_jax/default_model/provenance.json``); ``docs/results/``
holds the ablations that chose this recipe.

``best/`` keeps the step with the best generated-validation pixel F1, which
is what is packaged.
"""

from sdpal_jax.configs import quickstart
from sdpal_jax.configs.common import parse_variants


def get_config(arg=None):
  parse_variants(arg, ())
  c = quickstart.get_config()
  c.data.dataset = "synthetic_forgery/mixed_large"
  c.num_train_steps = 2400
  c.eval_every_steps = 400
  c.checkpoint_every_steps = 400
  c.keep_checkpoints = 6  # every evaluated step stays
  return c
