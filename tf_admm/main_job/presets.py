"""The main job's presets: settings known to reach their results, each a
set of the main job's flag values (flags given explicitly override
them). Their results are in benchmarks/."""

# The papers' quantization of LeNet-5: conv 3-bit, fc 2-bit, output 3-bit
# levels, one scale per layer as in the papers, shipped as packed INT4
# weights (fc1's {±q, ±2q} does not fit INT2's {-1, 0, 1}) with 8-bit
# fixed-point biases.
_LENET5_PAPER_LEVELS = dict(levels='uniform',
                            bits=['conv1:3', 'conv2:3', 'fc1:2', 'fc2:3'],
                            per_channel=False, bias_bits=8)

PRESETS = {
    # The README's quick run: >= 40x at >= 99.0%, then quantized with the
    # papers' levels (one 2.5-epoch round of ADMM, ten Z/U updates an epoch,
    # rho x1.2 at each, then every weight held) and shipped packed; 21
    # epochs (4 minutes on 2 cores at ~10 s an epoch, 11 on a slow day of
    # 23-29 s epochs).
    'demo': dict(model='lenet5', target_rate=50.0, first_rate=10.0,
                 stage_factor=5.0, candidates=1, pretrain_epochs=6,
                 admm_epochs=3, retrain_epochs=2, hold_fraction=1.0,
                 quantize_epochs_per_round=2.5, quantize_updates_per_epoch=10,
                 quantize_rho_growth=1.2, micro=True,
                 **_LENET5_PAPER_LEVELS),
    # The seed paper's headline (167x) and beyond, within 45 minutes here.
    # Each stage's ramp is itself many small partial prunings: one 28-epoch
    # stage to 167x did as well as four 12-epoch stages (98.95% against
    # 98.90%, both without the shifts).
    'paper': dict(model='lenet5', target_rate=250.0,
                  stage_rates=['167', '250'], candidates=1,
                  pretrain_epochs=10, admm_epochs=16, retrain_epochs=12,
                  shift_pixels=2),
    # The papers' pruning + quantization of LeNet-5: pruned to 167x, then
    # their levels (the 8-bit biases took the first seed's file from 6,808
    # to 5,866 gzip bytes), trained in one 8-epoch round of ADMM with
    # ten Z/U updates an epoch, rho x1.06 at each (0.01 -> 1.0), then 8
    # epochs with every weight held: 99.00-99.19% over six draws, twice
    # exactly at the floor. Rounds holding 30% each with one update a round
    # (the Z/U step giving way to the hard projection) cost up to 0.2
    # points more (benchmarks/NOTES.md).
    'paper_quantized': dict(model='lenet5', target_rate=167.0,
                            stage_rates=['167'], candidates=1,
                            pretrain_epochs=10, admm_epochs=16,
                            retrain_epochs=12, shift_pixels=2,
                            hold_fraction=1.0, quantize_epochs_per_round=8.0,
                            quantize_updates_per_epoch=10,
                            quantize_rho_growth=1.06, micro=True,
                            **_LENET5_PAPER_LEVELS),
    # Every layer binarized ({-q, +q} per output channel), nothing pruned:
    # one 15-epoch round of ADMM with rho growing each epoch, then every
    # weight held on its sign while the scales q and the biases train for
    # 15 more (a 10-epoch round gave 98.98% on one seed; holding 30% a round
    # lost 0.3 points; benchmarks/NOTES.md).
    'binary': dict(model='lenet5', target_rate=1.0, pretrain_epochs=10,
                   shift_pixels=2, levels='binary', hold_fraction=1.0,
                   quantize_epochs_per_round=15.0, quantize_rho_growth=1.5,
                   train_scales=True, micro=True),
    # Whole filters and units pruned for speed: 5x fewer MACs, cut down to a
    # smaller dense LeNet-5 and fine-tuned.
    'fast': dict(model='lenet5', structure='channels', target_macs=5.0,
                 stage_rates=['5'], candidates=1, pretrain_epochs=10,
                 admm_epochs=8, retrain_epochs=6, finetune_epochs=4,
                 shift_pixels=2),
    # For microcontrollers: whole channels pruned to 6x fewer MACs with fc1
    # cut hardest (its kernel is most of the flash, and TFLM decodes it into
    # the arena), then every weight on 4-bit uniform levels, shipped as a
    # full-int8 TFLite Micro file with LUT-compressed kernels.
    'micro': dict(model='lenet5', structure='channels', target_macs=6.0,
                  stage_rates=['6'], profile=['conv1:1', 'conv2:1',
                                              'fc1:0.15'],
                  candidates=1, pretrain_epochs=10, admm_epochs=8,
                  retrain_epochs=6, finetune_epochs=4, shift_pixels=2,
                  levels='uniform', bits=['4'], hold_fraction=1.0,
                  quantize_epochs_per_round=4.0,
                  quantize_updates_per_epoch=10, quantize_rho_growth=1.12,
                  micro=True),
}
