"""Progressive ADMM pruning with a pool of candidate models, resumable.

Each stage pushes every pool member to the stage's compression rate by
masked ADMM along a gradual ramp (many small hard prunes, each aimed at by
the Z-step in advance; `tf_admm.schedules.PolynomialRamp`), then retrains it
with the mask fixed (through tfmot wrappers). Candidates are ranked on a
validation split.
While the pool holds fewer than `candidates` models the best child joins it;
after that the best child replaces the parent it came from. With one
candidate this is plain progressive pruning.
With `quantization` (per-layer `tf_admm.constraints.Quantize`), the best
final model (or the dense one, without stages) is then quantized with its
zeros fixed: rounds of ADMM toward the levels, each holding a share more of
the weights on them (`tf_admm.Rounds`), until all are held.
With a constraint that prunes whole channels (`tf_admm.KeepChannels`), the
best final model is instead cut down to a smaller dense model
(`tf_admm.surgery`) and fine-tuned; stage rates may then count MACs
(`Settings.rate_unit`).

Under a `tf.distribute` strategy every model is made and trained in its
scope; with several workers (MultiWorkerMirroredStrategy) only the chief
writes the run's files and the others wait for each write, then read the
same files (so the output folder must be one that every worker sees, as for
Keras's BackupAndRestore).

Everything finished is saved under the output folder, each piece written to
a temporary name and renamed, so a killed run loses at most the epoch in
progress (Keras's BackupAndRestore covers epochs inside a fit):
  run.json                       the settings, checked on resume
  dense/                         the pretrained model
  candidates/<name>/             one per stage child: weights, masks and
                                 metrics
  pool.json                      the pool after the last finished stage
  candidates/quantized/          the quantized model, when quantizing
  candidates/shrunk/             the model without its pruned channels
                                 (model.keras), when pruning channels
"""

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
import zlib
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tf_admm import attach
from tf_admm import callback as callback_lib
from tf_admm import constraints as constraints_lib
from tf_admm import datasets
from tf_admm import finite
from tf_admm import keras_compat
from tf_admm import macs
from tf_admm import masked_retraining
from tf_admm import schedules
from tf_admm import surgery
from tf_admm import targets
from tf_admm import weights as weights_lib


RATE_UNITS = ('weights', 'macs')


@dataclasses.dataclass(frozen=True)
class Settings:
  """Training settings of a progressive run (all epochs are per stage)."""
  stage_rates: Sequence[float]
  candidates: int = 1
  pretrain_epochs: int = 10
  admm_epochs: int = 4
  retrain_epochs: int = 4
  prune_every_steps: int = 50
  lookahead_steps: int = 200
  rho: float = 1e-2
  learning_rate: float = 1e-3
  batch_size: int = 128
  shift_pixels: int = 0  # > 0: train on randomly shifted images
  # Quantization (when the run has levels to train toward): the share of
  # the weights held on their levels after each round, and its length.
  hold_fraction: float = 0.3
  quantize_epochs_per_round: float = 1.0
  quantize_rho_growth: float = 1.0  # rho's factor at each Z/U update
  # Z/U updates per epoch, one every steps-per-epoch / N steps, rounded
  # (one falling on a round's end gives way to its hard projection): with
  # 1-epoch rounds, 1 leaves each round a fixed pull toward the levels;
  # more, with rho growing, bring the free weights close to them before
  # they are held.
  quantize_updates_per_epoch: int = 1
  # What a stage rate counts: 'weights' (prunable weights / nonzero ones)
  # or 'macs' (dense MACs / MACs of the model with pruned channels cut).
  rate_unit: str = 'weights'
  finetune_epochs: int = 0  # of the model cut down to its kept channels
  seed: int = 0

  def __post_init__(self):
    rates = list(self.stage_rates)
    if not all(1 < a < b for a, b in zip(rates, rates[1:] + [float('inf')])):
      raise ValueError(f'stage_rates must be increasing rates > 1, got '
                       f'{rates}.')
    for name, valid, rule in (
        ('hold_fraction', 0 < self.hold_fraction <= 1, 'in (0, 1]'),
        ('quantize_epochs_per_round', self.quantize_epochs_per_round > 0,
         '> 0'),
        ('quantize_rho_growth', self.quantize_rho_growth >= 1, '>= 1')):
      if not valid:
        raise ValueError(f'{name} must be {rule}, got {getattr(self, name)}.')
    for name in ('candidates', 'pretrain_epochs', 'admm_epochs',
                 'prune_every_steps', 'batch_size',
                 'quantize_updates_per_epoch'):
      if getattr(self, name) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}.')
    if self.rate_unit not in RATE_UNITS:
      raise ValueError(f'rate_unit must be one of {", ".join(RATE_UNITS)}, '
                       f'got {self.rate_unit!r}.')
    for name in ('retrain_epochs', 'lookahead_steps', 'shift_pixels',
                 'finetune_epochs'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}.')
    for name in ('rho', 'learning_rate'):
      if not getattr(self, name) > 0:
        raise ValueError(f'{name} must be > 0, got {getattr(self, name)}.')
    if not 0 <= self.seed < 2**32:  # what the random generators take
      raise ValueError(f'seed must be in [0, 2**32), got {self.seed}.')


@dataclasses.dataclass
class Data:
  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def geometric_rates(first: float, last: float, factor: float) -> list:
  """Rates from `first` to `last`, evenly spaced in log, steps near `factor`."""
  if not (1 < first <= last and factor > 1):
    raise ValueError(f'Need 1 < first <= last and factor > 1; got first='
                     f'{first}, last={last}, factor={factor}.')
  steps = max(0, round(np.log(last / first) / np.log(factor)))
  if steps == 0:
    return [float(last)]
  return [float(first * (last / first)**(i / steps)) for i in range(steps + 1)]


def quantization_rounds(settings: Settings) -> schedules.Rounds:
  """The schedule of the quantization stage."""
  return schedules.Rounds(
      settings.hold_fraction, settings.quantize_epochs_per_round,
      update_every_epochs=1 / settings.quantize_updates_per_epoch,
      rho_growth=settings.quantize_rho_growth)


def layer_sizes(model):
  """{layer name: entries in its prunable weights}: what per-layer targets
  and keep-ratio profiles apply to."""
  return weights_lib.sum_by_layer(model, lambda weight: weight.size)


def profile_allocation(profile: Mapping[str, float], rate: float):
  """An `allocate` for ProgressiveRun: `profile` scaled to `rate`."""

  def allocate(dense_model):
    return targets.rescale(profile, layer_sizes(dense_model), rate)

  return allocate


def macs_allocation(profile: Mapping[str, float], factor: float):
  """An `allocate` for ProgressiveRun pruning channels: `profile` (relative
  channel keep ratios) scaled to `factor` times fewer MACs."""

  def allocate(dense_model):
    return macs.keep_ratios_for_macs(dense_model, profile, factor)

  return allocate


def norm_allocation(layer_names: Sequence[str], factor: float):
  """An `allocate` for ProgressiveRun pruning channels: one threshold over
  the channels' relative norms (`tf_admm.macs.keep_ratios_by_norm`) at
  `factor` times fewer MACs."""

  def allocate(dense_model):
    return macs.keep_ratios_by_norm(dense_model, layer_names, factor)

  return allocate


def global_allocation(rate: float):
  """An `allocate` for ProgressiveRun: one magnitude threshold at `rate`."""

  def allocate(dense_model):
    counts = targets.keep_counts(dense_model, targets.CompressionRate(rate))
    kept = weights_lib.sum_by_layer(dense_model, lambda w: counts[w.path])
    sizes = layer_sizes(dense_model)
    return {name: count / sizes[name] for name, count in kept.items()}

  return allocate


def _same_architecture(model, reference) -> bool:
  return [tuple(w.shape) for w in model.weights] == [
      tuple(w.shape) for w in reference.weights]


def _write_json(path, payload):
  with open(path + '.tmp', 'w') as f:
    json.dump(payload, f, indent=2)
  os.replace(path + '.tmp', path)


def _barrier():
  tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                 tf.constant(1.0))


def _copy_folder(source, destination):
  shutil.rmtree(destination + '.tmp', ignore_errors=True)
  shutil.copytree(source, destination + '.tmp')
  os.replace(destination + '.tmp', destination)


def _read(path, read):
  """`read(path)`, a file this run wrote earlier; ValueError naming it if it
  cannot be read (truncated or damaged), before anything is overwritten."""
  try:
    return read(path)
  except Exception as error:  # json, h5py, zip and Keras raise many kinds
    raise ValueError(
        f'{path} cannot be read ({type(error).__name__}: '
        f'{(str(error).strip().splitlines() or [""])[0]}): it was damaged or '
        'cut short. Restore it from a copy, or delete it (and, inside dense/ '
        'or candidates/, its whole folder) to redo that part.') from error


def _as_written_now(serialized):
  """A constraint's config from run.json as this version writes it: fields
  added since then take their defaults (unreadable ones stay as found)."""
  try:
    constraint = constraints_lib.deserialize(serialized)
  except (TypeError, ValueError):
    return serialized
  return json.loads(json.dumps(constraints_lib.serialize(constraint)))


def _read_json(path):
  def read(path):
    with open(path) as f:
      return json.load(f)
  return _read(path, read)


def accuracy(model, x, y) -> float:
  logits = model.predict(x, batch_size=1000, verbose=0)
  return float(np.mean(np.argmax(logits, -1) == y))


def nonzero_counts(model) -> dict:
  """{prunable weight path: (size, nonzero entries)}."""
  return {w.path: (w.size, int(np.count_nonzero(w.variable.numpy())))
          for w in weights_lib.prunable_weights(model)}


def compression_rate(model) -> float:
  counts = nonzero_counts(model).values()
  return sum(t for t, _ in counts) / max(1, sum(n for _, n in counts))


class ProgressiveRun:
  """One progressive pruning run in `output_dir`, resumed if already begun.

  Args:
    build_model: returns a fresh, built, uncompiled model, of either Keras.
    data: train/validation/test arrays.
    allocate: given the pretrained dense model, {layer name: keep ratio} at
      the final rate: the shape of the per-layer targets, rescaled for each
      stage. Computed once and kept in allocation.json.
    settings: `Settings`.
    output_dir: where the run lives.
    description: extra facts stored in run.json and checked on resume.
    log: where per-stage lines go.
    pretrained_dir: the dense/ folder of another run of the same model to
      start from instead of pretraining (so several runs share one start).
    constraint: the kind of constraint every stage trains toward
      (`tf_admm.attach_admm`'s `constraint`), fitted to each stage's
      per-layer targets.
    quantization: {layer name: `tf_admm.constraints.Quantize`} for every
      layer with prunable weights, to quantize the final model; None: no
      quantization. Without stage rates, the dense model is quantized.
    strategy: the `tf.distribute.Strategy` to train under (default: the
      current one).
  """

  def __init__(self, build_model: Callable[[], object], data: Data,
               allocate: Callable[[object], Mapping[str, float]],
               settings: Settings,
               output_dir: str, description: Optional[dict] = None,
               log: Callable[[str], None] = print,
               pretrained_dir: Optional[str] = None,
               constraint: constraints_lib.Constraint = (
                   constraints_lib.KeepLargest()),
               quantization: Optional[Mapping[
                   str, constraints_lib.Constraint]] = None,
               strategy: Optional[tf.distribute.Strategy] = None):
    if not settings.stage_rates and not quantization:
      raise ValueError('A run needs stage rates, quantization, or both.')
    if constraint.has_levels:
      raise ValueError(f'{constraint!r} has levels: the stages prune, and '
                       'their masked retraining holds zeros only. Give '
                       'levels as quantization= ({layer: Quantize}).')
    if constraint.removes_channels and quantization:
      raise ValueError('Pruning channels and quantizing in one run is not '
                       'supported; quantize the small model in a run of its '
                       'own.')
    if settings.rate_unit == 'macs' and not constraint.removes_channels:
      raise ValueError('Stage rates count MACs only where whole channels '
                       'are pruned (rate_unit="macs" needs KeepChannels).')
    if constraint.removes_channels:  # before any training
      model = build_model()
      surgery.check_supported(model)
      attach.attach_admm(model, per_layer={
          name: targets.KeepRatio(1.0) for name in allocate(model)},
                         constraint=constraint)
    # The Keras of the run's models, whose optimizers, callbacks and loading
    # it uses.
    self.keras = keras_compat.keras_of(build_model())
    self.build_model = build_model
    self.data = data
    self.allocate = allocate
    self.final_keep_ratios = None  # known once the dense model is
    self.settings = settings
    self.output_dir = output_dir
    self.log = log
    self.pretrained_dir = pretrained_dir
    self.constraint = constraint
    self.quantization = dict(quantization or {})
    self.strategy = strategy or tf.distribute.get_strategy()
    self.description = dict(description or {},
                            settings=dataclasses.asdict(settings),
                            pretrained_dir=pretrained_dir,
                            constraint=constraints_lib.serialize(
                                constraint),
                            quantization={
                                name: constraints_lib.serialize(q)
                                for name, q in self.quantization.items()})
    self.description['settings']['stage_rates'] = list(settings.stage_rates)
    if self.keras is keras_compat.keras3:  # Keras 2 runs predate the key
      self.description['keras'] = 3

  # Files.

  def _path(self, *parts):
    return os.path.join(self.output_dir, *parts)

  def _folder(self, unit):
    """Folder of a finished unit: 'dense' or a candidate's name."""
    if unit == 'dense':
      return self._path('dense')
    return self._path('candidates', unit)

  def _finished(self, unit) -> bool:
    return os.path.exists(os.path.join(self._folder(unit), 'metrics.json'))

  def _metrics(self, unit):
    return _read_json(os.path.join(self._folder(unit), 'metrics.json'))

  @property
  def is_chief(self) -> bool:
    """Whether this worker writes the run's files (the only one does)."""
    return self.strategy.extended.should_checkpoint

  def _write(self, path: str, write: Callable[[str], None]) -> None:
    """`write(path)` on the chief, once every worker has read what it needed
    of the files as they were; returns on every worker once it is done, so
    all of them read the same files next.

    The other workers write to a scratch copy, deleted at once: saving a
    model under MultiWorkerMirroredStrategy reads its variables
    collectively, so every worker must.
    """
    self._wait_for_every_worker()
    if self.is_chief:
      write(path)
    else:
      with tempfile.TemporaryDirectory() as scratch:
        write(os.path.join(scratch, os.path.basename(path)))
    self._wait_for_every_worker()

  def _wait_for_every_worker(self):
    """Returns once every worker has called it: an all-reduce across them
    (one process has nothing to wait for)."""
    if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
      self.strategy.run(_barrier)

  def _claim_output_dir(self):
    """Creates or checks the run folder; refuses one holding another run."""
    self._write(self._path('candidates'),
                lambda path: os.makedirs(path, exist_ok=True))
    if self.is_chief and not os.access(self.output_dir, os.W_OK):
      raise ValueError(f'Cannot write to {self.output_dir!r}.')
    run_file = self._path('run.json')
    wanted = json.loads(json.dumps(self.description))
    if os.path.exists(run_file):
      found = _read_json(run_file)
      # A run begun before a setting existed ran with its default.
      defaults = {f.name: f.default for f in dataclasses.fields(Settings)
                  if f.default is not dataclasses.MISSING}
      if isinstance(found.get('settings'), dict):
        found['settings'] = dict(defaults, **found['settings'])
      if isinstance(found.get('quantization'), dict):
        found['quantization'] = {name: _as_written_now(config) for name, config
                                 in found['quantization'].items()}
      if 'constraint' in found:
        found['constraint'] = _as_written_now(found['constraint'])
      if found != wanted:
        differing = sorted(k for k in set(found) | set(wanted)
                           if found.get(k) != wanted.get(k))
        raise ValueError(
            f'{self.output_dir!r} holds a run with other settings (differing: '
            f'{", ".join(differing)}); choose another output folder, or rerun '
            'with the same flags to resume it.')
    else:
      self._write(run_file, lambda path: _write_json(path, wanted))

  def _save_unit(self, folder, model, metrics, masks=None):
    """Writes a finished unit of work atomically (temp folder, then rename).

    A model of another architecture than `build_model`'s is saved whole.
    """
    # Every worker builds the reference: making variables is collective.
    whole = not _same_architecture(model, self.build_model())
    self._write(folder, lambda path: self._write_unit(path, model, metrics,
                                                      masks, whole))

  def _write_unit(self, folder, model, metrics, masks, whole):
    temporary = folder + '.tmp'
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    if whole:
      model.save(os.path.join(temporary, 'model.keras'))
    else:
      model.save_weights(os.path.join(temporary, 'model.weights.h5'))
    if masks is not None:
      np.savez_compressed(os.path.join(temporary, 'masks.npz'), **masks)
    _write_json(os.path.join(temporary, 'metrics.json'), metrics)
    os.replace(temporary, folder)

  def _load_model(self, folder):
    whole = os.path.join(folder, 'model.keras')
    if os.path.exists(whole):
      return _read(whole, lambda path: self.keras.models.load_model(
          path, compile=False))
    model = self.build_model()
    _read(os.path.join(folder, 'model.weights.h5'), model.load_weights)
    return model

  def _load_unit(self, unit):
    """(model, masks) of a finished unit; no masks for the dense one."""
    folder = self._folder(unit)
    return (self._load_model(folder),
            None if unit == 'dense' else self._load_masks(folder))

  @staticmethod
  def _load_masks(folder):
    def read(path):
      with np.load(path) as masks:
        return {name: masks[name] for name in masks.files}
    return _read(os.path.join(folder, 'masks.npz'), read)

  # Training.

  def _fit(self, model, unit, epochs, callbacks=()):
    """model.fit on the training split, resumable per epoch."""
    self.keras.utils.set_random_seed(
        (self.settings.seed + zlib.crc32(unit.encode())) % 2**32)
    backup = self.keras.callbacks.BackupAndRestore(self._path('backup', unit))
    if self.settings.shift_pixels:
      inputs = dict(x=datasets.shifted_batches(
          self.data.x_train, self.data.y_train, self.settings.batch_size,
          self.settings.shift_pixels, self.settings.seed))
    else:
      inputs = dict(x=self.data.x_train, y=self.data.y_train,
                    batch_size=self.settings.batch_size)
    if not any(isinstance(c, callback_lib.AdmmCallback) for c in callbacks):
      callbacks = [*callbacks, finite.StopOnNonFinite()]  # ADMM's checks too
    model.fit(**inputs, epochs=epochs,
              verbose=1 if sys.stdout.isatty() else 2,  # bars, or a line
              callbacks=[backup, *callbacks])

  @property
  def _steps_per_epoch(self):
    return -(-len(self.data.x_train) // self.settings.batch_size)

  def _compile(self, model, decay_epochs=None):
    """Adam at the run's learning rate; cosine-decayed to 0 over
    `decay_epochs` when given (masked retraining settles that way)."""
    learning_rate = self.settings.learning_rate
    if decay_epochs:
      learning_rate = self.keras.optimizers.schedules.CosineDecay(
          learning_rate, decay_steps=decay_epochs * self._steps_per_epoch)
    model.compile(
        self.keras.optimizers.Adam(learning_rate),
        self.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=['accuracy'])
    return model

  def pretrain(self) -> dict:
    """Trains (or finds) the dense model; returns its metrics."""
    folder = self._path('dense')
    if (self.pretrained_dir and
        not os.path.exists(os.path.join(folder, 'metrics.json'))):
      if not os.path.exists(os.path.join(self.pretrained_dir,
                                         'metrics.json')):
        raise ValueError(f'{self.pretrained_dir!r} holds no finished '
                         'pretraining (metrics.json is missing).')
      self._write(folder,
                  lambda path: _copy_folder(self.pretrained_dir, path))
    if not os.path.exists(os.path.join(folder, 'metrics.json')):
      start = time.time()
      # The seed fixes the initial weights too, so that a seed reproduces
      # its run (not only its order of batches).
      self.keras.utils.set_random_seed(self.settings.seed)
      model = self._compile(self.build_model(),
                            decay_epochs=self.settings.pretrain_epochs)
      self._fit(model, 'dense', self.settings.pretrain_epochs)
      metrics = {'epochs': self.settings.pretrain_epochs,
                 'seconds': time.time() - start,
                 'val_accuracy': accuracy(model, self.data.x_val,
                                          self.data.y_val),
                 'test_accuracy': accuracy(model, self.data.x_test,
                                           self.data.y_test)}
      self._save_unit(folder, model, metrics)
      self.log(f'pretrained: test accuracy {metrics["test_accuracy"]:.4f}, '
               f'{metrics["seconds"]:.0f} s')
    return _read_json(os.path.join(folder, 'metrics.json'))

  def _stage_keep_ratios(self, rate):
    """The final per-layer ratios rescaled to `rate`, none above what the
    constraint lets its layer keep (half, for 2:4)."""
    model = self.build_model()
    if self.settings.rate_unit == 'macs':
      return macs.keep_ratios_for_macs(model, self.final_keep_ratios, rate)
    sizes = {name: size for name, size in layer_sizes(model).items()
             if name in self.final_keep_ratios}
    caps = dict.fromkeys(sizes, 1.0)
    for weight in weights_lib.prunable_weights(model):
      if weight.layer.name in caps:
        caps[weight.layer.name] = min(caps[weight.layer.name],
                                      self.constraint.max_keep_ratio(weight))
    return targets.rescale(self.final_keep_ratios, sizes, rate, caps)

  def _child(self, stage, rate, parent, index):
    """Pushes the unit `parent` to `rate`; returns the child's name."""
    name = f's{stage:02d}_c{index}'
    if self._finished(name):
      return name
    start = time.time()
    model, masks = self._load_unit(parent)
    ratios = self._stage_keep_ratios(rate)
    admm = self._compile(attach.attach_admm(
        model, per_layer={n: targets.KeepRatio(r) for n, r in ratios.items()},
        constraint=self.constraint, rho=self.settings.rho, masks=masks))
    ramp = schedules.PolynomialRamp(
        epochs=self.settings.admm_epochs,
        prune_every_steps=self.settings.prune_every_steps,
        lookahead_steps=self.settings.lookahead_steps)
    self._fit(admm, f'{name}_admm', self.settings.admm_epochs,
              [callback_lib.AdmmCallback(ramp)])
    constraints = {w.path: constraints_lib.serialize(r.constraint)
                   for w, r in attach.admm_weights(admm)}
    wrapped = self._compile(masked_retraining.to_pruning_wrappers(admm),
                            decay_epochs=self.settings.retrain_epochs)
    if self.constraint.removes_channels:
      surgery.silence_pruned_channels(wrapped)
    if self.settings.retrain_epochs:
      self._fit(wrapped, f'{name}_retrain', self.settings.retrain_epochs)
    pruned = masked_retraining.strip_pruning(wrapped)
    metrics = {
        'stage': stage, 'target_rate': rate, 'parent': parent,
        'rate': compression_rate(pruned),
        'val_accuracy': accuracy(pruned, self.data.x_val, self.data.y_val),
        'test_accuracy': accuracy(pruned, self.data.x_test, self.data.y_test),
        'epochs': self.settings.admm_epochs + self.settings.retrain_epochs,
        'seconds': time.time() - start,
        'constraints': constraints,
    }
    self._save_unit(self._folder(name), pruned, metrics,
                    masked_retraining.masks_of(wrapped))
    return name

  def _quantize(self, parent):
    """Quantizes the unit `parent` with its zeros fixed; returns the
    quantized unit's name."""
    name = 'quantized'
    if self._finished(name):
      return name
    start = time.time()
    model, masks = self._load_unit(parent)
    rounds = quantization_rounds(self.settings)
    # The rounds, then as long again with every weight held, for the rest.
    epochs = math.ceil((rounds.rounds + 1) *
                       self.settings.quantize_epochs_per_round)
    admm = self._compile(attach.attach_admm(
        model, constraint=self.quantization, rho=self.settings.rho,
        masks=masks), decay_epochs=epochs)
    self._fit(admm, name, epochs, [callback_lib.AdmmCallback(rounds)])
    pairs = attach.admm_weights(admm)
    held = all(np.array_equal(r.held.numpy() > 0, r.mask.numpy() > 0)
               for _, r in pairs)
    constraints = {w.path: constraints_lib.serialize(r.constraint)
                   for w, r in pairs}
    masks = {w.path: r.mask.numpy() > 0 for w, r in pairs}
    quantized = attach.remove_admm(admm)
    metrics = {
        'stage': len(self.settings.stage_rates), 'parent': parent,
        'rate': compression_rate(quantized),
        'val_accuracy': accuracy(quantized, self.data.x_val, self.data.y_val),
        'test_accuracy': accuracy(quantized, self.data.x_test,
                                  self.data.y_test),
        'epochs': epochs, 'seconds': time.time() - start,
        'constraints': constraints, 'all_held': held,
    }
    self._save_unit(self._folder(name), quantized, metrics, masks)
    self.log(f'quantized: {metrics["rate"]:.1f}x, val accuracy '
             f'{metrics["val_accuracy"]:.4f}, test accuracy '
             f'{metrics["test_accuracy"]:.4f}, every kept weight held on its '
             f'level: {"yes" if held else "NO"} ({metrics["seconds"]:.0f} s)')
    return name

  def _shrink(self, parent):
    """Cuts the pruned channels out of the unit `parent` and fine-tunes the
    smaller model; returns the unit's name."""
    name = 'shrunk'
    if self._finished(name):
      return name
    start = time.time()
    masked, _ = self._load_unit(parent)
    small, widths = surgery.remove_channels(masked)
    difference = surgery.checked_difference(masked, small,
                                            self.data.x_val[:500])
    cut_accuracy = accuracy(small, self.data.x_val, self.data.y_val)
    epochs = self.settings.finetune_epochs
    if epochs:
      self._fit(self._compile(small, decay_epochs=epochs), name, epochs)
    dense = self._load_model(self._folder('dense'))
    metrics = {
        'stage': len(self.settings.stage_rates), 'parent': parent,
        'channels': {layer: list(w) for layer, w in widths.items()},
        'macs': {'dense': macs.model_macs(dense)['total'],
                 'final': macs.model_macs(small)['total']},
        'params': {'dense': dense.count_params(),
                   'final': small.count_params()},
        'surgery_max_difference': difference,
        'cut_val_accuracy': cut_accuracy,
        'rate': compression_rate(small),
        'val_accuracy': accuracy(small, self.data.x_val, self.data.y_val),
        'test_accuracy': accuracy(small, self.data.x_test, self.data.y_test),
        'epochs': epochs, 'seconds': time.time() - start,
    }
    self._save_unit(self._folder(name), small, metrics, {
        w.path: w.variable.numpy() != 0
        for w in weights_lib.prunable_weights(small)})
    self.log(f'cut to {metrics["macs"]["dense"] / metrics["macs"]["final"]:.1f}'
             f'x fewer MACs (' + ', '.join(
                 f'{layer} {before}->{after}'
                 for layer, (before, after) in widths.items()) +
             f'), val accuracy {cut_accuracy:.4f} after the cut, '
             f'{metrics["val_accuracy"]:.4f} after {epochs} fine-tuning '
             f'epochs, test accuracy {metrics["test_accuracy"]:.4f} '
             f'({metrics["seconds"]:.0f} s)')
    return name

  def run(self) -> dict:
    """Runs (or resumes) every stage; returns the run's summary.

    Its models are made outside the strategy's scope: what the caller does
    with them on one worker must not wait for the others.
    """
    with self.strategy.scope():
      state, dense_metrics, after = self._run()
    return self._summary(state, dense_metrics, after)

  def _run(self):
    """(pool state, dense metrics, the unit made after the stages or None)."""
    self._claim_output_dir()
    dense_metrics = self.pretrain()
    allocation_file = self._path('allocation.json')
    if self.settings.stage_rates and not os.path.exists(allocation_file):
      ratios = self.allocate(self._load_model(self._folder('dense')))
      self._write(allocation_file, lambda path: _write_json(
          path, {n: float(r) for n, r in ratios.items()}))
    if self.settings.stage_rates:
      self.final_keep_ratios = _read_json(allocation_file)
    pool_file = self._path('pool.json')
    state = (_read_json(pool_file) if os.path.exists(pool_file)
             else {'stages_done': 0, 'pool': [], 'best': []})
    rates = list(self.settings.stage_rates)
    for stage in range(state['stages_done'], len(rates)):
      parents = state['pool'] or ['dense']
      children = [self._child(stage, rates[stage], parent, index)
                  for index, parent in enumerate(parents)]
      metrics = [self._metrics(c) for c in children]
      best = max(range(len(children)),
                 key=lambda i: (metrics[i]['val_accuracy'], -i))
      if len(state['pool']) < self.settings.candidates:
        state['pool'].append(children[best])
      else:
        state['pool'][best] = children[best]  # the child replaces its parent
      state['stages_done'] = stage + 1
      state['best'].append(children[best])
      self._write(pool_file, lambda path: _write_json(path, state))
      seconds = sum(m['seconds'] for m in metrics)
      self.log(f'stage {stage + 1}/{len(rates)}: target {rates[stage]:.1f}x, '
               f'reached {metrics[best]["rate"]:.1f}x, val accuracy '
               f'{metrics[best]["val_accuracy"]:.4f}, test accuracy '
               f'{metrics[best]["test_accuracy"]:.4f} ({len(children)} '
               f'candidate(s), {seconds:.0f} s)')
    after = None  # the unit made from the best final model, if any
    if self.quantization:
      after = self._quantize(state['best'][-1] if state['best'] else 'dense')
    elif self.constraint.removes_channels:
      after = self._shrink(state['best'][-1])
    return state, dense_metrics, after

  def _summary(self, state, dense_metrics, after=None):
    names = sorted(n for n in os.listdir(self._path('candidates'))
                   if not n.endswith('.tmp') and n != after)
    candidates = [dict(self._metrics(n), name=n) for n in names]
    final = after or state['best'][-1]
    trained = candidates + ([self._metrics(after)] if after else [])
    quantized = after if self.quantization else None
    shrunk = after if self.constraint.removes_channels else None
    return {
        'final_model': self._load_model(self._folder(final)),
        'final_masks': self._load_masks(self._folder(final)),
        'dense_model': self._load_model(self._folder('dense')),
        'dense_metrics': dense_metrics,
        'stages': [dict(self._metrics(n), name=n) for n in state['best']],
        'candidates': candidates,
        'quantized': (dict(self._metrics(quantized), name=quantized)
                      if quantized else None),
        'shrunk': (dict(self._metrics(shrunk), name=shrunk)
                   if shrunk else None),
        'epochs': dense_metrics['epochs'] + sum(c['epochs'] for c in trained),
        'train_seconds': dense_metrics['seconds'] + sum(
            c['seconds'] for c in trained),
    }
