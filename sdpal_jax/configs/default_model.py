"""The recipe of the model packaged with the library (``sdpal-predict`` with no ``--checkpoint``).

The quickstart network (ResNet-18 at half width, 64-channel correlation map)
with the three fixed SRM noise residuals of each colour channel beside the
RGB input (``model.noise_residual="srm"``), trained for 8000 steps on
``synthetic_forgery/mixed_large_unwarped`` (16000 generated 128 px
forgeries, each seen about 4 times; half the pasted regions are only moved,
never resampled, as most of CASIA v1.0's are). As ``quickstart:native`` it keeps every photo at its
own size (``preprocess.image_size`` None): noise traces do not survive
resizing, so predictions run at full resolution. Only generated data made
from photos that ship inside installed packages: nothing in it carries
research-only terms. The weights, the exact command and what they score
travel with the package (``sdpal_jax/default_model/provenance.json``);
``docs/results/real_data`` holds the ablations that chose this recipe.

``best/`` keeps the step with the best generated-validation pixel F1, which
is what is packaged (``provenance.json`` names the step).
"""

from sdpal_jax.configs import quickstart
from sdpal_jax.configs.common import parse_variants


def get_config(arg=None):
  parse_variants(arg, ())
  c = quickstart.get_config("native")
  c.model.noise_residual = "srm"
  c.data.dataset = "synthetic_forgery/mixed_large_unwarped"
  c.num_train_steps = 8000
  c.eval_every_steps = 800
  c.checkpoint_every_steps = 800
  c.keep_checkpoints = 10  # every evaluated step stays
  # Prediction only (training never reads it): photos above 512 px a side go through in
  # 512 px tiles. The differential attention's cost grows with the square of a tile's
  # pixels, and the network never saw more than 128 px at once (docs/results/real_data).
  c.preprocess.tile_size = 512
  return c
