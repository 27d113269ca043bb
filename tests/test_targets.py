import numpy as np
import pytest
import tf_admm
from tf_admm.keras_compat import keras
from tests.conftest import small_model
from tests.test_weights import _Subclassed


@pytest.mark.parametrize('target, keep', [
    (tf_admm.Sparsity(0.9), 0.1), (tf_admm.KeepRatio(0.25), 0.25),
    (tf_admm.CompressionRate(20), 0.05), (tf_admm.Sparsity(0.0), 1.0)])
def test_target_kinds_agree_on_keep_ratio(target, keep):
  assert target.keep_ratio == pytest.approx(keep)


@pytest.mark.parametrize('make, value', [
    (tf_admm.Sparsity, 1.0), (tf_admm.Sparsity, -0.1),
    (tf_admm.KeepRatio, 0.0), (tf_admm.KeepRatio, 1.5),
    (tf_admm.CompressionRate, 0.5), (tf_admm.CompressionRate, float('nan'))])
def test_out_of_range_targets_are_rejected(make, value):
  with pytest.raises(ValueError, match=make.__name__):
    make(value)


def test_per_layer_targets_by_name_and_type():
  model = small_model()  # conv kernel 36 weights, dense kernel 192
  counts = tf_admm.keep_counts(model, per_layer={
      keras.layers.Dense: tf_admm.CompressionRate(4),
      'conv': tf_admm.KeepRatio(0.5)})
  assert counts == {'conv/kernel': 18, 'dense/kernel': 48}
  # A name beats a type whatever the order.
  counts = tf_admm.keep_counts(model, per_layer={
      'dense': tf_admm.Sparsity(0.5), keras.layers.Dense: tf_admm.KeepRatio(
          0.25)})
  assert counts == {'dense/kernel': 96}


def numpy_lamp(kernel):
  """Reference LAMP scores, entry by entry: w^2 over the sum of the squares
  of the entries at least as large (ties broken by position)."""
  flat = kernel.ravel().astype(np.float64)
  order = sorted(range(flat.size), key=lambda i: (abs(flat[i]), i))
  scores = []
  for rank, i in enumerate(order):
    tail = sum(flat[j]**2 for j in order[rank:])
    scores.append(flat[i]**2 / tail)
  return sorted(scores, reverse=True)


def numpy_global_allocation(kernels, keep_ratio, min_keep_ratio,
                            score=lambda k: sorted(np.abs(k).ravel(),
                                                   reverse=True)):
  """Reference: reserve each layer's floor, then threshold the rest of the
  scores (magnitudes by default)."""
  sizes = [k.size for k in kernels]
  budget = int(round(sum(sizes) * keep_ratio))
  floors = [max(1, int(np.ceil(s * min_keep_ratio))) for s in sizes]
  pool = []
  for i, (k, f) in enumerate(zip(kernels, floors)):
    pool += [(m, i) for m in score(k)[f:]]
  pool.sort(key=lambda item: -item[0])
  counts = list(floors)
  for _, i in pool[:budget - sum(floors)]:
    counts[i] += 1
  return counts


@pytest.mark.parametrize('rate', [1, 2, 10, 40])
def test_global_target_is_one_threshold_with_floor(rate):
  model = small_model()
  dense = model.get_layer('dense')
  dense.kernel.assign(dense.kernel * 0.01)  # tiny dense
  kernels = [w.variable.numpy() for w in tf_admm.prunable_weights(model)]
  counts = tf_admm.keep_counts(model, tf_admm.CompressionRate(rate),
                               min_keep_ratio=0.02, allocation='magnitude')
  assert list(counts.values()) == numpy_global_allocation(
      kernels, 1 / rate, 0.02)
  assert counts['dense/kernel'] >= 4  # the floor saved the small-weight layer


@pytest.mark.parametrize('rate', [2, 10, 40])
def test_global_target_thresholds_lamp_scores_by_default(rate):
  model = small_model()
  dense = model.get_layer('dense')
  dense.kernel.assign(dense.kernel * 0.01)  # tiny dense
  kernels = [w.variable.numpy() for w in tf_admm.prunable_weights(model)]
  counts = tf_admm.keep_counts(model, tf_admm.CompressionRate(rate))
  assert list(counts.values()) == numpy_global_allocation(
      kernels, 1 / rate, 0.001, score=numpy_lamp)
  # Scaling a layer changes none of its scores, so none of the counts.
  dense.kernel.assign(dense.kernel * 1000)
  assert tf_admm.keep_counts(model, tf_admm.CompressionRate(rate)) == counts


def test_lamp_keeps_a_small_weighted_embedding_that_magnitudes_empty():
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.Input((10,), dtype='int32'),
      keras.layers.Embedding(
          200, 32, name='emb',
          embeddings_initializer=keras.initializers.RandomNormal(
              stddev=0.01)),
      keras.layers.Flatten(),
      keras.layers.Dense(16, name='fc')])
  with pytest.warns(UserWarning, match=r'under 1% of emb/embeddings'):
    by_magnitude = tf_admm.keep_counts(model, tf_admm.CompressionRate(10),
                                       allocation='magnitude')
  assert by_magnitude['emb/embeddings'] < 64
  by_lamp = tf_admm.keep_counts(model, tf_admm.CompressionRate(10))
  assert by_lamp['emb/embeddings'] >= 0.01 * 6400
  assert sum(by_lamp.values()) == sum(by_magnitude.values())


def test_unknown_allocation_is_refused():
  with pytest.raises(ValueError, match="allocation must be one of lamp"):
    tf_admm.keep_counts(small_model(), tf_admm.CompressionRate(2),
                        allocation='uniform')


def test_global_and_per_layer_together():
  model = small_model()
  counts = tf_admm.keep_counts(model, tf_admm.CompressionRate(2),
                               per_layer={'conv': tf_admm.KeepRatio(1.0)})
  assert counts == {'conv/kernel': 36, 'dense/kernel': 96}


def test_unknown_layer_name_lists_the_prunable_layers():
  with pytest.raises(ValueError, match=r"'convv'.*conv \(Conv2D\), dense"):
    tf_admm.keep_counts(small_model(), per_layer={
        'convv': tf_admm.Sparsity(0.5)})


def test_unmatched_type_is_rejected():
  with pytest.raises(ValueError, match='Conv3D'):
    tf_admm.keep_counts(small_model(), per_layer={
        keras.layers.Conv3D: tf_admm.Sparsity(0.5)})


def test_model_without_prunable_layers_is_rejected():
  model = keras.Sequential([keras.Input((4,)), keras.layers.Flatten()])
  with pytest.raises(ValueError, match='no prunable weight'):
    tf_admm.keep_counts(model, tf_admm.Sparsity(0.5))


def test_missing_target_and_bad_target_type_are_rejected():
  with pytest.raises(ValueError, match='Give a global'):
    tf_admm.keep_counts(small_model())
  with pytest.raises(ValueError, match='expected tf_admm.Sparsity'):
    tf_admm.keep_counts(small_model(), 0.9)


def test_floor_larger_than_budget_is_rejected():
  with pytest.raises(ValueError, match='min_keep_ratio'):
    tf_admm.keep_counts(small_model(), tf_admm.CompressionRate(50),
                        min_keep_ratio=0.5)


def test_unbuilt_model_is_rejected_with_advice():
  model = keras.Sequential([keras.layers.Dense(3, name='d')])
  with pytest.raises(ValueError, match='not built'):
    tf_admm.keep_counts(model, tf_admm.Sparsity(0.5))


def test_a_layer_target_applies_to_each_of_its_weights():
  inputs = keras.Input((6, 6, 2))
  hidden = keras.layers.SeparableConv2D(4, 3, name='sep')(inputs)
  outputs = keras.layers.Dense(3, name='dense')(keras.layers.Flatten()(hidden))
  model = keras.Model(inputs, outputs)  # depthwise 18, pointwise 8 entries
  resolved = tf_admm.targets.resolve(model, per_layer={
      'sep': tf_admm.KeepRatio(0.5)})
  assert resolved == {
      'sep/depthwise_kernel': (9, tf_admm.KeepRatio(0.5)),
      'sep/pointwise_kernel': (4, tf_admm.KeepRatio(0.5))}


@pytest.mark.parametrize('target', [None, tf_admm.CompressionRate(12.5),
                                    tf_admm.Sparsity(0.3),
                                    tf_admm.KeepRatio(0.01)])
def test_targets_serialize(target):
  config = tf_admm.targets.serialize(target)
  assert tf_admm.targets.deserialize(config) == target


def test_not_a_tf_keras_model_is_rejected():
  with pytest.raises(TypeError, match='tf_keras'):
    tf_admm.keep_counts(object(), tf_admm.Sparsity(0.5))


def test_subclassed_model_is_rejected():
  model = _Subclassed(name='sub')
  model(np.zeros((1, 4), np.float32))
  with pytest.raises(ValueError, match=(
      "Model 'sub' is a subclassed model; .* Rebuild it with the functional "
      'API.')):
    tf_admm.keep_counts(model, tf_admm.Sparsity(0.5))


@pytest.mark.parametrize('rate', [1.5, 4, 25, 200])
def test_rescale_keeps_the_shape_and_hits_the_rate(rate):
  sizes = {'conv1': 500, 'conv2': 25000, 'fc1': 400000, 'fc2': 5000}
  paper_167x = {'conv1': 0.2, 'conv2': 0.053, 'fc1': 0.002, 'fc2': 0.07}
  ratios = tf_admm.targets.rescale(paper_167x, sizes, rate)
  kept = sum(ratios[n] * sizes[n] for n in sizes)
  assert kept == pytest.approx(sum(sizes.values()) / rate, rel=1e-6)
  uncapped = [n for n in sizes if ratios[n] < 1]
  factors = {ratios[n] / paper_167x[n] for n in uncapped}
  assert max(factors) == pytest.approx(min(factors))
  assert all(r <= 1 for r in ratios.values())


def test_rescale_respects_caps_and_rejects_unreachable_rates():
  sizes = {'a': 100, 'b': 300, 'c': 600}
  ratios = tf_admm.targets.rescale({'a': 1.0, 'b': 0.5, 'c': 0.1}, sizes, 2,
                                   caps={'a': 1.0, 'b': 0.5, 'c': 0.5})
  assert sum(ratios[n] * sizes[n] for n in sizes) == pytest.approx(500)
  assert ratios['b'] == pytest.approx(0.5) and ratios['c'] <= 0.5
  with pytest.raises(ValueError, match='more weights than the constraints'):
    tf_admm.targets.rescale({'a': 1.0, 'b': 1.0, 'c': 1.0}, sizes, 1.5,
                            caps={'a': 0.5, 'b': 0.5, 'c': 0.5})


@pytest.mark.parametrize('target, value', [
    (tf_admm.KeepRatio, '0.1'), (tf_admm.Sparsity, float('nan')),
    (tf_admm.CompressionRate, float('inf')), (tf_admm.KeepRatio, True)])
def test_a_target_that_is_no_finite_number_is_refused_by_name(target, value):
  with pytest.raises(ValueError, match=f'{target.__name__} must be a finite '
                     f'number, got {value!r}'):
    target(value)
