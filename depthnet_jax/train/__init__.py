"""Training behind train.py: the config's checks (`checks`, and `config_args` for the command line's --config and
its overrides), torch's optimizers as optax (`optim`), the trainer and its loop (`trainer`). Imports every layer
below it (`common`, `model`, `data`, `checkpoints`, `evaluation`)."""
