"""The shared trainer: typed recipes (config), the loop, losses, data and the VHS degradation,
checkpoints and multi-process training. Entry points: :func:`vsr.train.loop.train` and the
``finetune``/``train`` commands in :mod:`vsr.train.cli`."""
