"""Footage in, depth out (behind infer.py): the `Predictor` (`predictor`), frames and the run (`footage`), the
flight's motion (`motion`), the output folder (`outputs`). Imports `common`, `model` and `checkpoints`."""
