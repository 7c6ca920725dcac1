"""Trains DepthNet: `python train.py --config configs/synth64.py --workdir runs/x [--config.field=value ...]`.

Restarting the same command in the same workdir resumes exactly where the last checkpoint left off.
`--config.eval_only=True` prints the eval metrics of the workdir's best (or `--config.eval_checkpoint=latest`)
checkpoint instead of training. The valid range of every config field is in configs/default.py.

Compiled programs are kept in JAX's persistent compilation cache (`--compilation_cache DIR`, default
~/.cache/depthnet-jax/jax-compilation-cache, see depthnet_jax/compile_cache.py), so a second run of the same shapes
skips XLA compilation; `--no_compilation_cache` turns it off.

A mistake (a config field that does not exist, a value out of range, a dataset that is not built, a workdir that
is a file or someone else's folder, ...) is one `error:` line and exit code 1, found before anything is written;
`--debug` (or DEPTHNET_DEBUG=1) also prints the traceback.
"""

import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags
from ml_collections.config_flags import config_flags as config_flags_lib

from depthnet_jax.common import cli, compile_cache
from depthnet_jax.train import checks as train_checks  # light: JAX, Orbax, TensorFlow come after the checks

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file, e.g. configs/synth64.py',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'directory of checkpoints, TensorBoard events and config.json')
_DEBUG = flags.DEFINE_bool('debug', False, 'print the traceback of an error too')
_COMPILATION_CACHE = flags.DEFINE_string('compilation_cache', '', compile_cache.FLAG_HELP)
_NO_COMPILATION_CACHE = flags.DEFINE_bool('no_compilation_cache', False, compile_cache.OFF_FLAG_HELP)
flags.mark_flags_as_required(['config', 'workdir'])

_USAGE = 'python train.py --config configs/synth64.py --workdir runs/x [--config.field=value ...]'
_TYPE_NAMES = {bool: 'True or False', int: 'an integer', float: 'a number', str: 'a string',
               tuple: "a tuple such as '(1, 2)'", list: "a list such as '[1, 2]'"}


def _config_arg(argv: list[str]) -> str | None:
  """The value of --config on the command line (as ml_collections reads it), or None."""
  for i, arg in enumerate(argv):
    match = re.fullmatch(r'--?config(=(.*))?', arg)
    if match:
      return match.group(2) if match.group(1) else (argv[i + 1] if i + 1 < len(argv) else None)
  return None


def _load_config(path: str):
  """The config a --config file gives, loaded the way the flag loads it; its failures are the user's."""
  file = path.split(':', 1)[0]
  if not os.path.isfile(file):
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')
    known = sorted(f'configs/{f}' for f in os.listdir(here) if f.endswith('.py') and not f.startswith('_')) \
        if os.path.isdir(here) else []
    what = 'is a directory' if os.path.isdir(file) else 'no such file' if file else 'is empty'
    raise cli.UserError(f'--config {file}: {what}; expected a config file such as {", ".join(known)}'
                        .replace('--config : ', '--config: '))
  parser = config_flags_lib.ConfigFileFlagParser('config')
  try:
    config = parser.parse(path)
  except Exception as e:  # noqa: BLE001 - anything a config file raises is a mistake in that file
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    # ml_collections puts the traceback into the message of a TypeError/ValueError: its last line is the error.
    reason = lines[-1] if 'Traceback (most recent call last):' in lines else f'{type(e).__name__}: {cli.one_line(e)}'
    raise cli.UserError(f'--config {file}: the config file fails: {reason}') from e
  if not hasattr(config, 'keys'):  # ml_collections defers a load error to the first access
    raise cli.UserError(f'--config {file}: get_config() returned {type(config).__name__}, expected a ConfigDict')
  return config


def _check_overrides(argv: list[str], config, source: str) -> None:
  """Every --config.a.b=... names a field of the config: a typo is named, with the closest fields."""
  for arg in argv:
    match = re.match(r'--?(?:no)?config\.([^=]+)', arg)
    if not match:
      continue
    node, walked = config, []
    for part in match.group(1).split('.'):
      keys = list(node.keys()) if hasattr(node, 'keys') else []
      if part not in keys:
        field = '.'.join(walked + [part])
        hint = train_checks.did_you_mean(part, keys)
        if not walked and part in train_checks.MODEL_FIELDS and 'model' in keys:
          hint = f' (the model options are under model: --config.model.{part})'
        raise cli.UserError(f'--config.{field}: no such config field in {source}{hint}; the fields are those of '
                            'configs/default.py')
      node, walked = node[part], walked + [part]


def _flag_error(error: Exception, config) -> cli.UserError:
  """absl's message for a flag it refused, as one line naming the flag, the value and what was expected."""
  message = cli.one_line(error)
  match = re.match(r'flag --config\.([\w.]+)=(.*?): (.*)$', message)
  if match and config is not None:
    field, value, reason = match.groups()
    try:
      current = config
      for part in field.split('.'):
        current = current[part]
      expected = _TYPE_NAMES.get(type(current), f'a {type(current).__name__}')
    except (KeyError, TypeError):
      expected = 'a value of the field\'s type'
    if expected == _TYPE_NAMES[bool] or reason.startswith('('):  # absl's boolean message is a tuple's repr
      return cli.UserError(f'--config.{field}={value}: expected {expected}')
    return cli.UserError(f'--config.{field}={value}: expected {expected} ({reason})')
  match = re.match(r'flag --(\w+)=None: Flag --\w+ must have a value other than None', message)
  if match:
    return cli.UserError(f'--{match.group(1)} is required: {_USAGE}')
  return cli.UserError(f'{re.sub(r"^flag ", "", message)} (usage: {_USAGE}; --helpshort lists the flags)')


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every mistake in the flags as one `error:` line (exit 1) instead of a traceback."""
  debug = cli.debug_enabled(any(re.fullmatch(r'--?debug(=(true|1|True|yes))?', a) for a in argv[1:]))
  config = None
  try:
    path = _config_arg(argv[1:])
    if path is not None:
      config = _load_config(path)
      _check_overrides(argv[1:], config, path.split(':', 1)[0])
    return flags.FLAGS(argv)
  except flags.Error as e:
    cli.report(_flag_error(e, config), debug=debug)
  except cli.UserError as e:
    cli.report(e, debug=debug)
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
