"""The main job's flags for its stages and training: the schedule of rates,
the candidate pool, epochs, the ADMM penalty, the optimizer and the data
splits (`--helpfull` lists them under this module)."""

from absl import flags

FIRST_RATE = flags.DEFINE_float('first_rate', 4.0, 'Rate of the first stage.')
STAGE_FACTOR = flags.DEFINE_float('stage_factor', 2.0, 'Approximate factor '
                                  'between consecutive stage rates.')
STAGE_RATES = flags.DEFINE_list(
    'stage_rates', None, 'Explicit stage rates, ending at --target_rate '
    '(instead of --first_rate and --stage_factor).')
CANDIDATES = flags.DEFINE_integer('candidates', 3, 'Pool size: partial models '
                                  'pushed to each next stage (1: plain '
                                  'progressive).')
PRETRAIN_EPOCHS = flags.DEFINE_integer('pretrain_epochs', 6, 'Dense epochs.')
ADMM_EPOCHS = flags.DEFINE_integer('admm_epochs', 2, 'ADMM epochs per stage '
                                   'and candidate.')
RETRAIN_EPOCHS = flags.DEFINE_integer('retrain_epochs', 3, 'Masked retraining '
                                      'epochs per stage and candidate.')
PRUNE_EVERY_STEPS = flags.DEFINE_integer('prune_every_steps', 50, 'Steps '
                                         'between the small hard prunes of '
                                         'each stage\'s ramp.')
LOOKAHEAD_STEPS = flags.DEFINE_integer('lookahead_steps', 200, 'How many steps '
                                       'ahead along the ramp the Z-step aims.')
RHO = flags.DEFINE_float('rho', 1e-2, 'ADMM penalty factor.')
LEARNING_RATE = flags.DEFINE_float('learning_rate', 1e-3, 'Adam learning '
                                   'rate.')
BATCH_SIZE = flags.DEFINE_integer('batch_size', 128, 'Batch size.')
SHIFT_PIXELS = flags.DEFINE_integer(
    'shift_pixels', 0, 'Augment training: shift each image by up to this many '
    'pixels, at random (0: off).')
ALLOCATION = flags.DEFINE_enum(
    'allocation', 'profile', ['profile', 'global'],
    'Per-layer targets: "profile" scales the model\'s per-layer keep-ratio '
    'profile (tf_admm.models.KEEP_RATIO_PROFILES, or CHANNEL_PROFILES with '
    '--structure=channels) to the rate; "global" allocates by one threshold '
    'over the pretrained weights\' LAMP scores (with --structure=channels: '
    'over the channels\' norms relative to their layer\'s, toward '
    '--target_macs).')
PROFILE = flags.DEFINE_list(
    'profile', None, 'With --allocation=profile: the per-layer relative keep '
    'ratios to scale, as layer:ratio for each pruned layer (conv1:1,conv2:1,'
    'fc1:0.15), instead of the model\'s.')
FINETUNE_EPOCHS = flags.DEFINE_integer(
    'finetune_epochs', 2, 'With --structure=channels: epochs of training '
    'after the pruned channels are cut out.')
VALIDATION_EXAMPLES = flags.DEFINE_integer(
    'validation_examples', 5000, 'Training examples held out to rank '
    'candidates (the test split is never used for choices).')
TRAIN_EXAMPLES = flags.DEFINE_integer(
    'train_examples', None, 'Use only this many training examples (tests).')
TEST_EXAMPLES = flags.DEFINE_integer(
    'test_examples', None, 'Score on the first N test examples only (tests).')
