"""Every shipped config loads, validates and builds its network; the quickstart, tiny and a paper
config (the release's ResNet-101 network, shared by all paper configs) take real steps."""

import functools
import glob
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdpal_jax import configs, train, train_state
from sdpal_jax.datasets.sources import dataset_spec
from sdpal_jax.errors import ConfigError
from sdpal_jax.models import build_model, init_model

CONFIG_DIR = os.path.dirname(configs.__file__)
CLONE_CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")
HELPERS = {"__init__.py", "common.py", "paper_common.py"}
# (file, argument) pairs a user can name as configs/FILE.py:ARG.
VARIANTS = {
  "quickstart": [None, "tpu", "bf16", "native"],
  "default_model": [None],
  "tiny": [None],
  "casia_v2": [None, "gpu", "tpu", "bf16"],
  "fantastic_reality": [None, "gpu", "tpu"],
  "imd2020": [None, "gpu", "tpu"],
  "tampcoco": [None, "sp", "cm", "bcm", "bcmc", "sp,tpu", "bcmc,gpu"],
}
PAPER = ("casia_v2", "fantastic_reality", "imd2020", "tampcoco")
RELEASE_PARAMETERS = 78.3e6 - 263_681  # the release's count minus its unused mscc.decoder


def load_config(name: str, arg=None):
  return configs.load(name if arg is None else f"{name}:{arg}")


def test_every_config_file_is_covered_here():
  names = {os.path.basename(p) for p in glob.glob(os.path.join(CONFIG_DIR, "*.py"))}
  assert names - HELPERS == {f"{n}.py" for n in VARIANTS}
  assert set(configs.PACKAGED) == set(VARIANTS)


def test_clone_config_paths_load_the_packaged_configs():
  for name in VARIANTS:
    by_path = configs.load(os.path.join(CLONE_CONFIG_DIR, f"{name}.py"))
    assert by_path.to_dict() == configs.load(name).to_dict()


def test_a_config_file_anywhere_loads_by_path_with_its_argument(tmp_path):
  mine = tmp_path / "mine.py"
  mine.write_text(
    "from sdpal_jax.configs.common import base_config\n"
    "def get_config(arg=None):\n"
    "  c = base_config()\n"
    "  c.seed = int(arg or 0)\n"
    "  return c\n"
  )
  assert configs.load(f"{mine}:7").seed == 7
  with pytest.raises(ConfigError, match="not a packaged config"):
    configs.load("no_such_config")
  with pytest.raises(ConfigError, match="no such file"):
    configs.load(str(tmp_path / "missing.py"))


def test_reading_any_config_imports_no_tensorflow():
  # A fresh interpreter: this test process has long imported TensorFlow.
  script = textwrap.dedent(
    f"""
    import importlib, os, sys
    from sdpal_jax import configs
    for name in configs.PACKAGED:
      importlib.import_module("sdpal_jax.configs." + name)
      clone = os.path.join({CLONE_CONFIG_DIR!r}, name + ".py")
      for arg in {VARIANTS!r}.get(name, [None]):
        configs.load(name if arg is None else name + ":" + arg)
        if os.path.exists(clone):
          configs.load(clone if arg is None else clone + ":" + arg)
        assert "tensorflow" not in sys.modules, f"reading config {{name}}:{{arg}} imported tensorflow"
    print("no tensorflow")
    """
  )
  done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == "no tensorflow"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_unknown_variants_are_refused_by_every_config(name):
  with pytest.raises(ConfigError, match="unknown config variant 'nope'"):
    load_config(name, "nope")


def test_quickstart_bf16_variant_computes_in_bfloat16():
  assert load_config("quickstart", "bf16").model.dtype == "bfloat16"
  assert load_config("quickstart").model.dtype == "float32"


@pytest.mark.parametrize("name,arg", [(n, a) for n, args in VARIANTS.items() for a in args])
def test_config_loads_and_validates(name, arg):
  config = load_config(name, arg)
  config.init_from = ""  # a converted backbone is checked on disk (tests/test_pretrained.py)
  train.validate_config(config)
  assert config.num_train_steps > 0


def _none_fields_without_a_type(config, prefix=""):
  """Dotted names of fields whose value is a bare None (the command line cannot set those)."""
  import ml_collections  # noqa: PLC0415

  found = []
  for key, field in config._fields.items():  # noqa: SLF001 (the typed fields, not their values)
    value = config[key]
    if isinstance(value, ml_collections.ConfigDict):
      found += _none_fields_without_a_type(value, f"{prefix}{key}.")
    elif value is None and not (
      isinstance(field, ml_collections.FieldReference) and field.get_type() is not type(None)
    ):
      found.append(prefix + key)
  return found


@pytest.mark.parametrize("name,arg", [(n, a) for n, args in VARIANTS.items() for a in args])
def test_every_unset_field_can_be_set_from_the_command_line(name, arg):
  """A bare None field cannot take --config.x=... (ml_collections refuses its type)."""
  assert _none_fields_without_a_type(load_config(name, arg)) == []


@pytest.mark.slow
def test_data_dir_and_output_size_overrides_pass_the_command_line(tmp_path):
  """Both were bare None: `--config.data.data_dir=...` stopped with a type error."""
  import subprocess  # noqa: PLC0415
  import sys  # noqa: PLC0415

  run = subprocess.run(
    [sys.executable, "-m", "sdpal_jax.train", "--config", "casia_v2", "--workdir",
     str(tmp_path / "w"), f"--config.data.data_dir={tmp_path}", "--config.model.output_size=(64, 64)",
     "--config.num_train_steps=0"],
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  # Parsing passed: the first complaint is validation's, about the step count.
  assert run.returncode == 2
  assert "num_train_steps=0 must be a positive integer" in run.stderr, run.stderr[-2000:]


@pytest.mark.parametrize("name", PAPER)
def test_paper_configs_follow_the_release_setup(name):
  c = load_config(name)
  assert (c.model.backbone_depth, c.model.deep_stem, c.model.output_stride) == (101, True, 8)
  assert tuple(c.preprocess.image_size) == (256, 256)
  assert c.preprocess.normalization == "raw"
  assert c.global_batch_size == 16
  assert (c.optimizer.learning_rate, c.optimizer.schedule) == (1e-4, "constant")
  assert c.loss.dice_weight == 0.0
  assert c.init_from  # an ImageNet backbone is expected
  assert load_config(name, "tpu").model.dtype == "bfloat16"


def test_tampcoco_subsets_pick_their_builder_config():
  assert load_config("tampcoco", "cm").data.dataset == "tampcoco/cm"
  assert load_config("tampcoco", "bcmc,tpu").data.dataset == "tampcoco/bcmc"
  with pytest.raises(ConfigError, match="unknown config variant 'xyz'"):
    load_config("tampcoco", "xyz")


def test_imd2020_trains_and_validates_on_the_tampered_photos_only_as_the_release():
  c = load_config("imd2020")
  assert c.data.dataset == "imd2020/tampered"
  assert c.evals[0].dataset == ""  # validation: data.dataset's eval split, tampered only too
  assert dataset_spec(c.data.dataset, c.data.eval_split) == "imd2020/tampered:validation"


@pytest.mark.parametrize("name", PAPER)
def test_paper_model_has_the_release_parameter_count(name):
  c = load_config(name)
  model = build_model(c.model)
  shapes = jax.eval_shape(
    functools.partial(init_model, model, jax.random.key(0), (1, *c.preprocess.image_size, 3))
  )
  count = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes["params"]))
  assert abs(count - RELEASE_PARAMETERS) < 0.1e6


@pytest.mark.slow
@pytest.mark.parametrize("name,arg", [("quickstart", None), ("tiny", None), ("casia_v2", None)])
def test_configs_take_real_training_steps_on_fake_data(name, arg):
  c = load_config(name, arg)
  size = (64, 64)  # the smallest input at output stride 8; the network is unchanged
  c.preprocess.image_size = size
  state = train_state.create_train_state(c, build_model(c.model), jax.random.key(0))
  loss_fn = train_state.make_loss(c.loss)
  step = jax.jit(functools.partial(train_state.train_step, loss_fn=loss_fn))
  rng = np.random.default_rng(0)
  batch = {
    "image": jnp.asarray(rng.normal(size=(2, *size, 3)), jnp.float32),
    "mask": jnp.asarray(rng.random((2, *size)) > 0.8, jnp.float32),
  }
  for _ in range(2):
    state, metrics = step(state, batch, jax.random.key(1))
  assert int(state.step) == 2
  assert np.isfinite(float(metrics["loss"]))


@pytest.mark.parametrize(
  "field,value,message",
  [
    ("optimizer.learning_rate", -1.0, r"optimizer.learning_rate=-1.0 must be a number > 0"),
    ("optimizer.learning_rate", 0.0, r"optimizer.learning_rate=0.0 must be a number > 0"),
    ("optimizer.learning_rate", float("nan"), r"optimizer.learning_rate=nan must be a finite"),
    ("optimizer.learning_rate", float("inf"), r"optimizer.learning_rate=inf must be a finite"),
    ("optimizer.weight_decay", -0.1, r"optimizer.weight_decay=-0.1 must be a number >= 0"),
    ("optimizer.grad_clip", -1.0, r"optimizer.grad_clip=-1.0"),
    ("optimizer.warmup_steps", -5, r"optimizer.warmup_steps=-5 must be an integer >= 0"),
    ("loss.positive_weight", float("nan"), r"loss.positive_weight=nan"),
    ("loss.dice_weight", -1.0, r"loss.dice_weight=-1.0"),
    ("model.walk.threshold", float("inf"), r"model.walk.threshold=inf"),
    ("model.bn_epsilon", 0.0, r"model.bn_epsilon=0.0"),
    ("data.augment.noise_std", float("nan"), r"data.augment.noise_std=nan"),
    ("global_batch_size", 0, r"global_batch_size=0 must be a positive integer"),
    ("num_train_steps", -3, r"num_train_steps=-3 must be a positive integer"),
    ("keep_checkpoints", 0, r"keep_checkpoints=0 must be a positive integer"),
    ("data.shuffle_buffer", 0, r"data.shuffle_buffer=0"),
    ("num_eval_images", -1, r"num_eval_images=-1 must be an integer >= 0"),
  ],
)
def test_nonsense_values_are_config_errors_naming_field_and_value(field, value, message):
  config = load_config("tiny")
  *parents, leaf = field.split(".")
  node = config
  for key in parents:
    node = node[key]
  with config.unlocked():
    node[leaf] = value
  with pytest.raises(ConfigError, match=message):
    train.validate_config(config)


def test_warmup_longer_than_the_run_and_eval_thresholds_outside_0_1_are_refused():
  config = load_config("quickstart")
  config.optimizer.schedule = "warmup_cosine"
  config.optimizer.warmup_steps = config.num_train_steps + 1
  with pytest.raises(ConfigError, match=r"optimizer.warmup_steps=\d+ is longer than num_train"):
    train.validate_config(config)
  config = load_config("tiny")
  with config.unlocked():
    config.evals[0].threshold = 1.5
  with pytest.raises(ConfigError, match=r"evals\[0\].threshold=1.5 must be a probability"):
    train.validate_config(config)


@pytest.mark.slow
def test_a_nan_learning_rate_on_the_command_line_is_one_error_line():
  completed = subprocess.run(
    [sys.executable, "-m", "sdpal_jax.train", "--config=tiny", "--workdir=/nonexistent/never",
     "--config.optimizer.learning_rate=nan"],
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert completed.returncode == 2, completed.stderr[-3000:]
  assert "error: optimizer.learning_rate=nan must be a finite number." in completed.stderr
  assert "Traceback" not in completed.stderr
