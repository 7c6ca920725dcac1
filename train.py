"""Trains DepthNet: `python train.py --config configs/synth64.py --workdir runs/x [--config.field=value ...]`.

Restarting the same command in the same workdir resumes exactly where the last checkpoint left off.
`--config.eval_only=True` prints the eval metrics of the workdir's best (or `--config.eval_checkpoint=latest`)
checkpoint instead of training. The valid range of every config field is in configs/default.py.

Compiled programs are kept in JAX's persistent compilation cache (`--compilation_cache DIR`, default
~/.cache/depthnet-jax/jax-compilation-cache, see depthnet_jax/common/compile_cache.py), so a second run of the same
shapes skips XLA compilation; `--no_compilation_cache` turns it off.

A mistake (a config file that fails, a config field that does not exist, a value of the wrong type or out of
range, a dataset that is not built, a workdir that is a file or someone else's folder, ...) is one `error:` line and
exit code 1, found before anything is written; `--debug` (or DEPTHNET_DEBUG=1) also prints the traceback. The
--config file and its overrides are checked by depthnet_jax/train/config_args.py before ml_collections reads them,
the values' ranges by depthnet_jax/train/checks.py.
"""

import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from depthnet_jax.common import cli, compile_cache
from depthnet_jax.train import checks as train_checks  # light: JAX, Orbax, TensorFlow come after the checks
from depthnet_jax.train import config_args

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file, e.g. configs/synth64.py',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'directory of checkpoints, TensorBoard events and config.json')
_DEBUG = flags.DEFINE_bool('debug', False, 'print the traceback of an error too')
_COMPILATION_CACHE = flags.DEFINE_string('compilation_cache', '', compile_cache.FLAG_HELP)
_NO_COMPILATION_CACHE = flags.DEFINE_bool('no_compilation_cache', False, compile_cache.OFF_FLAG_HELP)
_REQUIRED = ('config', 'workdir')

_USAGE = 'python train.py --config configs/synth64.py --workdir runs/x [--config.field=value ...]'


def _parse(argv: list[str]) -> list[str]:
  """absl's parsing of `argv`, after config_args has checked --config and its overrides; raises cli.UserError."""
  usage = f'(usage: {_USAGE}; --helpshort lists the flags)'
  try:
    config_args.check_command_line(flags.FLAGS.read_flags_from_files(argv[1:], force_gnu=False))
    argv = flags.FLAGS(argv)
  except flags.UnrecognizedFlagError as e:
    hint = train_checks.did_you_mean(e.flagname, [f for f in flags.FLAGS if not f.startswith('config.')])
    raise cli.UserError(f'--{e.flagname}: no such flag{hint} {usage}') from e
  except flags.Error as e:   # absl's other refusals (e.g. a --flagfile that cannot be read): its words, one line
    raise cli.UserError(f'{cli.one_line(e)} {usage}') from e
  missing = [f'--{name}' for name in _REQUIRED if flags.FLAGS[name].value is None]
  if missing:
    raise cli.UserError(f'{" and ".join(missing)} {"is" if len(missing) == 1 else "are"} required: {_USAGE}')
  return argv


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every mistake in the flags as one `error:` line (exit 1) instead of a traceback."""
  try:
    return _parse(argv)
  except cli.UserError as e:
    debug = any(re.fullmatch(r'--?debug(=(true|1|True|yes))?', a) for a in argv[1:])
    cli.report(e, debug=cli.debug_enabled(debug))
  sys.exit(1)


def main(argv):
  def work():
    if len(argv) > 1:
      raise cli.UserError(f'unexpected arguments: {" ".join(argv[1:])} (usage: {_USAGE})')
    config, workdir = _CONFIG.value, _WORKDIR.value
    source = config_flags.get_config_filename(flags.FLAGS['config']).split(':', 1)[0]
    # The cheap checks first: a mistake is reported in about a second, before JAX starts.
    moved = train_checks.upgrade_config(config)
    if moved:
      print(f'note: {source} sets {", ".join(moved)} at the top level, as configs did before the model section; '
            'read as --config.model.<option>', file=sys.stderr, flush=True)
    train_checks.validate_config(config, source)
    train_checks.check_paths(config, workdir)
    compile_cache.check_flag(_COMPILATION_CACHE.value, _NO_COMPILATION_CACHE.value)
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO; -v 0 shows them
    compile_cache.enable(_COMPILATION_CACHE.value, disabled=_NO_COMPILATION_CACHE.value)  # before any compile
    from depthnet_jax.data import input_pipeline
    from depthnet_jax.train import trainer as train_lib
    try:
      train_lib.train_and_evaluate(config, workdir, config_source=source)
    except (input_pipeline.DatasetNotBuiltError, train_lib.NonFiniteLossError) as e:
      raise cli.UserError(cli.one_line(e)) from e

  sys.exit(cli.run(work, debug=_DEBUG.value))


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
