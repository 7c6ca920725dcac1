"""Footage in, depth out (behind infer.py): the `Predictor` (`predictor`); infer.py's flags checked (`options`);
the frames and the input opened (`frames`); the flight's motion (`motion`); the pairs and their batches (`pairs`);
the checkpoint given (`checkpoint_input`); the outputs planned (`output_plan`) and written (`results`) into the
output folder (`outputs`); the run through those stages (`footage`). Imports `common`, `model` and `checkpoints`."""
