"""train.py's `--config FILE` and `--config.<field>=<value>` overrides, checked before ml_collections reads them.

ml_collections' config flag loads the file and parses each override itself, and reports a mistake as a traceback
or in its own (and absl's) wording, which changes between their versions. So train.py first checks the same
command line with the standard library and absl's public parsers: the file exists and loads, it defines
`get_config()` and that returns a ConfigDict (`FILE:ARG` passes 'ARG' to it, as ml_collections does), every
override names a field of that config, and its value parses as the field's type (absl's parsers for True/False,
integers and numbers, the ones ml_collections uses; a Python literal for a tuple or a section). A mistake is a
`cli.UserError` naming the flag, the value and what was expected. What passes here, ml_collections reads the same
way; the ranges of the values are checked afterwards, by `checks.validate_config`.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import os
import re
import sys
from typing import Any

from absl import flags

from depthnet_jax.common import cli
from depthnet_jax.train import checks

_CONFIG = re.compile(r'--?config(?:=(.*))?', re.S)                  # --config FILE, --config=FILE
_OVERRIDE = re.compile(r'--?(no)?config\.([^=]*)(?:=(.*))?', re.S)   # --config.a.b=V, --config.a.b V, --noconfig.a
_PARSERS = {bool: flags.BooleanParser(), int: flags.IntegerParser(), float: flags.FloatParser()}
_EXPECTED = {bool: 'True or False', int: 'an integer', float: 'a number'}
_MODULE = 'depthnet_jax_train_config'   # the name the config file is loaded under (ml_collections uses its own)
_NOT_A_LITERAL = object()


def check_command_line(args: list[str]) -> None:
  """Checks the --config file and every --config.* override of `args` (the command line without the program).

  Raises:
    cli.UserError: the first mistake, naming the flag, the value and what was expected.
  """
  if '--' in args:
    args = args[:args.index('--')]   # absl reads no flag after '--'
  given = [(i, _config_value(args, i, match)) for i, match in enumerate(map(_CONFIG.fullmatch, args)) if match]
  if len(given) > 1:
    raise cli.UserError(f'--config is given {len(given)} times ({", ".join(v for _, v in given)}): expected one '
                        'config file')
  if not given:
    override = next((a for a in args if _OVERRIDE.fullmatch(a)), None)
    if override is not None:
      raise cli.UserError(f'{override}: there is no --config to override; expected --config FILE before it')
    return   # --config is required: train.py says so once absl has parsed the other flags (or shown --help)
  index, path = given[0]
  config = load_config(path)
  _check_overrides(args, index, config, path.split(':', 1)[0])


def _config_value(args: list[str], index: int, match: re.Match) -> str:
  if match.group(1) is not None:
    return match.group(1)
  return args[index + 1] if index + 1 < len(args) else ''


def load_config(path: str):
  """The config of `--config path` (a Python file; `file:arg` calls get_config('arg')); its failures are the
  user's, named with the file."""
  file, *arg = path.split(':', 1)
  if not os.path.isfile(file):
    known = f'expected a config file such as {", ".join(_known_configs()) or "configs/default.py"}'
    if not file:
      raise cli.UserError(f'--config={path!r}: {known}')
    raise cli.UserError(f'--config {file}: {"is a directory" if os.path.isdir(file) else "no such file"}; {known}')
  try:
    spec = importlib.util.spec_from_loader(_MODULE, importlib.machinery.SourceFileLoader(_MODULE, file))
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE] = module   # as an import does: a dataclass in the file looks its module up there
    spec.loader.exec_module(module)
    get_config = getattr(module, 'get_config', None)
    config = get_config(*arg) if callable(get_config) else None
  except Exception as e:  # noqa: BLE001 - anything a config file raises is a mistake in that file
    raise cli.UserError(f'--config {file}: the config file fails: {type(e).__name__}: {cli.one_line(e)}') from e
  if not callable(get_config):
    raise cli.UserError(f'--config {file}: defines no get_config(); expected a function get_config() that returns '
                        'a ConfigDict, as configs/default.py does')
  if not hasattr(config, 'keys'):
    raise cli.UserError(f'--config {file}: get_config() returned {type(config).__name__}, expected a ConfigDict')
  return config


def _known_configs() -> list[str]:
  """The repository's config files, for messages (none where the package is installed without them)."""
  here = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'configs')
  return sorted(f'configs/{f}' for f in os.listdir(here) if f.endswith('.py') and not f.startswith('_')) \
      if os.path.isdir(here) else []


def _check_overrides(args: list[str], config_index: int, config, source: str) -> None:
  """Every override names a field of `config` and has a value of its type, read the way absl reads flags."""
  i = 0
  while i < len(args):
    match = _OVERRIDE.fullmatch(args[i])
    if not match:
      i += 1
      continue
    negated, field, value = match.group(1) is not None, match.group(2), match.group(3)
    if i < config_index:
      raise cli.UserError(f'{args[i]}: comes before --config; expected --config FILE first, then its overrides')
    current = _field(config, field, source)
    name = f'--config.{field}'
    if negated and (not isinstance(current, bool) or value is not None):
      raise cli.UserError(f'{args[i]}: --no only turns a True/False field off; expected {name}=<value>')
    if value is None and not isinstance(current, bool):   # `--config.a.b VALUE`: the value is the next argument
      if i + 1 == len(args):
        raise cli.UserError(f'{name}: no value; expected {name}=<{_expected(name, current)}>')
      i, value = i + 1, args[i + 1]
    if value is not None:
      _check_value(name, value, current)
    i += 1


def _field(config, field: str, source: str) -> Any:
  """The current value of the field `a.b` of `config`: a typo is named, with the closest fields."""
  node, walked = config, []
  for part in field.split('.'):
    keys = list(node.keys()) if hasattr(node, 'keys') else []
    if part not in keys:
      hint = checks.did_you_mean(part, keys)
      if not walked and part in checks.MODEL_FIELDS and 'model' in keys:
        hint = f' (the model options are under model: --config.model.{part})'
      raise cli.UserError(f'--config.{".".join(walked + [part])}: no such config field in {source}{hint}; the fields '
                          'are those of configs/default.py')
    node, walked = node[part], walked + [part]
  return node


def _expected(name: str, current: Any) -> str:
  if type(current) in _EXPECTED:
    return _EXPECTED[type(current)]
  if isinstance(current, tuple):
    return f"a tuple such as '{current or (1, 2)}' (quoted), or the flag once per element"
  if hasattr(current, 'keys'):
    example = {k: current[k] for k in list(current.keys())[:1]}
    return f'a dict such as "{example}", or one field at a time ({name}.<field>=<value>)'
  return 'a string' if isinstance(current, str) else f'a {type(current).__name__}'


def _check_value(name: str, value: str, current: Any) -> None:
  """`value` parses as the type of the field's `current` value (other types are left to ml_collections)."""
  if type(current) in _PARSERS:
    try:
      _PARSERS[type(current)].parse(value)
    except ValueError:
      raise cli.UserError(f'{name}={value}: expected {_expected(name, current)}') from None
    return
  try:
    literal = ast.literal_eval(value)
  except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
    literal = _NOT_A_LITERAL
  # A tuple field takes a literal, or a bare word as a tuple of one string (which validate_config then names).
  if isinstance(current, tuple) and literal is _NOT_A_LITERAL and (',' in value or ' ' in value):
    raise cli.UserError(f'{name}={value}: expected {_expected(name, current)}')
  if hasattr(current, 'keys') and not isinstance(literal, dict):
    raise cli.UserError(f'{name}={value}: expected {_expected(name, current)}')
