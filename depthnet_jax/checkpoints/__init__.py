"""What is saved and read back: Orbax checkpoints of models and runs (`checkpointing`, the only users of Orbax
with `integrity`), the state a run saves (`train_state`), checkpoint resolution (`loading`), and the original's
PyTorch files read without torch (`torch_pickle`, `torch_import`, its command line `import_command`). Imports
`common` and `model`."""
