"""Every config field, each with its default, what it does and its valid range (train.py checks them all at
start-up, before any work: depthnet_jax/train/checks.py). The other configs import this and override. Fields that
size memory are bounded by the work or by the machine's memory, checked before any work: the bound is stated here.

    python train.py --config configs/default.py --workdir runs/x --config.batch_size=64
"""

import ml_collections

from depthnet_jax.model.spec import ModelSpec


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Data.
  c.dataset = 'tfds_stillbox/synth64'   # 'tfds_stillbox/<config>' of a built dataset (tfds build ...).
  c.data_dir = ''                       # a TFDS data_dir; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets.
  c.train_split = 'train'               # split trained on (a split of the dataset).
  c.eval_split = 'validation'           # split evaluated on (a split of the dataset).
  c.shift = 3                           # S, the nominal frame shift of a pair (the original's 3); 1 to frames - 1.
  c.worker_count = 0                    # grain worker processes, 0 to 4 per core (0: threads in the training process).
  # Model: DepthNet's options (depthnet_jax/model_spec.py, the one definition), e.g. --config.model.batch_norm=False.
  # model.batch_norm       True/False: BatchNorm after each conv (the published weights use it). Default True.
  # model.depth_activation 'elu' (depth = elu(x) + 1) or 'none' (identity). Default 'elu'.
  # model.clamp            True/False: clamp the depth to [10, 60] m. Default False.
  # model.with_confidence  True/False: a second output channel (confidence); trained on depth only. Default False.
  c.model = ml_collections.ConfigDict(ModelSpec().to_dict())
  # How the model computes (not what: same parameters, checkpoints and results to rounding).
  c.conv_impl = 'auto'                  # 'auto' (patches + matmul on CPU, XLA's conv on GPU/TPU), 'xla', 'patches'.
  c.compute_dtype = 'float32'           # 'float32' or 'bfloat16' (convs and activations; params, BN stats, loss f32).
  # Loss.
  c.loss = 'L1'                         # 'L1' (the paper's), 'SmoothL1' or 'MSE'.
  c.multiscale_weights = (0.32, 0.08, 0.02, 0.01, 0.005)  # 5 weights >= 0, one per scale, finest first.
  # Optimisation.
  c.solver = 'sgd'                      # 'sgd' (torch SGD with dampening, the paper's) or 'adam'.
  c.learning_rate = 0.01                # base learning rate, >= 0.
  c.momentum = 0.9                      # SGD momentum, in [0, 1].
  c.dampening = 0.9                     # SGD dampening, in [0, 1] (torch semantics; the paper's 0.9).
  c.weight_decay = 4e-4                 # L2 weight decay added to the gradient, >= 0.
  c.beta1 = 0.9                         # Adam beta1, in [0, 1).
  c.beta2 = 0.999                       # Adam beta2, in [0, 1).
  c.lr_schedule = 'torch'               # 'torch' (MultiStepLR x0.3, as torch>=1.1 runs it), '2017', 'constant'.
  c.milestones = (19, 30, 44, 53)       # epochs of the 'torch' schedule's drops: increasing integers >= 0.
  c.gamma = 0.3                         # drop factor of the 'torch' schedule, in (0, 1].
  # Global batch over all devices and processes: >= 1, a multiple of the devices, at most the pairs of an epoch
  # (train scenes x frames) and what the memory holds (a process's share x ~1 kB per pixel of a pair, in training).
  c.batch_size = 256
  c.num_epochs = 55                     # epochs, >= 1 (x steps per epoch <= 2**31 - 1); each scene once per frame.
  c.num_train_steps = -1                # -1: train num_epochs; >= 1 (at most 2**31 - 1): stop after this many steps.
  c.seed = 0                            # seeds the initialisation and the data order; 0 to 2**32 - 1.
  # Evaluation, logging, checkpoints.
  # Global eval batch, >= 1, a multiple of the devices (tail padded, masked), at most what the memory holds (a
  # process's share x 320 bytes per pixel of a pair).
  c.eval_batch_size = 64
  c.eval_every_epochs = 1.0             # evaluate every this many epochs (and at the end), > 0.
  c.num_eval_images = 4                 # example pictures at each eval, >= 0; at most the first eval batch's pairs.
  c.log_every_steps = 50                # train scalars and the progress line every this many steps, >= 1.
  c.checkpoint_every_steps = 1000       # checkpoint every this many steps, besides every epoch; >= 1.
  c.keep_checkpoints = 3                # latest checkpoints kept, >= 1 (the best is kept apart).
  c.async_checkpointing = True          # True/False: write checkpoints in the background.
  c.init_from = ''                      # '' or a warm start: a workdir, checkpoint dir or .pth.tar (params, BN stats).
  c.eval_only = False                   # True: evaluate a checkpoint of --workdir and print the metrics.
  c.eval_checkpoint = 'best'            # with eval_only: 'best' or 'latest'.
  # Multi-host.
  c.distributed = False                 # True: call jax.distributed.initialize (also if JAX_COORDINATOR_ADDRESS).
  c.coordinator_address = ''            # 'host:port' of process 0 (needs distributed); '' = auto-detect the cluster.
  c.num_processes = 1                   # with coordinator_address: the number of processes, >= 1 (else 1).
  c.process_id = 0                      # with coordinator_address: this process's index, 0 to num_processes - 1.
  return c
