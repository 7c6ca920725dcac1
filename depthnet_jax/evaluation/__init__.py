"""Judging a checkpoint: the one evaluation path (training's, eval_only's, `python -m depthnet_jax.evaluate`'s),
its reports, charts, and a run's logged scalars (`run_log`). Imports `common`, `model`, `data`, `checkpoints`."""
