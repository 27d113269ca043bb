"""The main job's flags for how quantization trains and ships: scales per
channel, the rounds of holding weights on their levels, fixed-point biases
(`--helpfull` lists them under this module; --levels and --bits, which
turn quantization on, are the main flags)."""

from absl import flags

PER_CHANNEL = flags.DEFINE_bool(
    'per_channel', True, 'One level scale per output channel (what TFLite '
    'stores); --noper_channel: one per layer, as in the papers.')
HOLD_FRACTION = flags.DEFINE_float(
    'hold_fraction', 0.3, 'Quantization: share of the kept weights fixed on '
    'their levels after each round (those nearest them first).')
QUANTIZE_EPOCHS_PER_ROUND = flags.DEFINE_float(
    'quantize_epochs_per_round', 1.0, 'Quantization: epochs of each round.')
TRAIN_SCALES = flags.DEFINE_bool(
    'train_scales', False, 'Quantization: once every weight of a channel '
    '(of a layer, with --noper_channel) is held on its level, its codes '
    'stay fixed and it keeps training as one multiple of them (its scale).')
BIAS_BITS = flags.DEFINE_integer(
    'bias_bits', 0, 'Ship biases as fixed-point values of this many bits '
    '(one power-of-two step per layer, stored in float32; tf_admm.biases) '
    'with Dense units ordered by bias, for smaller files under gzip; the '
    'Keras accuracy is measured after. 0: float32 biases as trained.')
QUANTIZE_RHO_GROWTH = flags.DEFINE_float(
    'quantize_rho_growth', 1.0, 'Quantization: rho\'s factor at each Z/U '
    'update (each round\'s hard projection restarts rho).')
QUANTIZE_UPDATES_PER_EPOCH = flags.DEFINE_integer(
    'quantize_updates_per_epoch', 1, 'Quantization: Z/U updates per epoch '
    '(one every steps-per-epoch / N steps, rounded); with '
    '--quantize_rho_growth > 1, several per round bring the free weights '
    'close to their levels before they are held.')
