"""The package's import graph: its layers, no cycle, counting the imports inside functions too (none may dodge
one); the size of its modules and functions."""

import ast
import os
import re

import depthnet_jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(depthnet_jax.__file__)))
PACKAGES = ('depthnet_jax', 'tfds_stillbox')


def _modules() -> dict[str, str]:
  found = {}
  for package in PACKAGES:
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
      for name in files:
        if name.endswith('.py'):
          path = os.path.join(folder, name)
          module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
          found[module.removesuffix('.__init__')] = path
  return found


def _imports(path: str, modules) -> set[str]:
  """Project modules that `path` imports, at module level or inside functions."""
  targets = set()
  for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
    else:
      continue
    targets |= {n for n in names if n in modules}
  return targets


def test_the_import_graph_has_no_cycle():
  modules = _modules()
  graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}
  state: dict[str, int] = {}
  path: list[str] = []

  def visit(m):
    state[m] = 1
    path.append(m)
    for n in sorted(graph[m]):
      if state.get(n) == 1:
        raise AssertionError('import cycle: ' + ' -> '.join(path[path.index(n):] + [n]))
      if n not in state:
        visit(n)
    path.pop()
    state[m] = 2

  for m in sorted(graph):
    if m not in state:
      visit(m)
  assert 'depthnet_jax.checkpoints.checkpointing' in graph['depthnet_jax.checkpoints.loading']   # the real graph


# The layers, lowest first (docs/architecture.md draws the same): each may import only the layers before it.
# `testing` (for tests, benchmarks and scripts) may import anything; nothing of the product imports it.
LAYERS = (
    ('depthnet_jax.common',),
    ('tfds_stillbox',),
    ('depthnet_jax.model',),
    ('depthnet_jax.data',),
    ('depthnet_jax.checkpoints',),
    ('depthnet_jax.evaluation', 'depthnet_jax.infer'),   # side by side: neither imports the other
    ('depthnet_jax.train',),
    ('depthnet_jax.evaluate', 'depthnet_jax.torch_import', 'depthnet_jax.export'),   # the `python -m` entry points
)


def _layer(module: str) -> int | None:
  for level, prefixes in enumerate(LAYERS):
    if any(module == p or module.startswith(p + '.') for p in prefixes):
      return level
  return None


def _group(module: str) -> str:
  return next(p for prefixes in LAYERS for p in prefixes if module == p or module.startswith(p + '.'))


def test_each_layer_imports_only_the_layers_below_it():
  modules = _modules()
  product = {m for m in modules if not m.startswith('depthnet_jax.testing') and m != 'depthnet_jax'}
  unplaced = sorted(m for m in product if _layer(m) is None)
  assert unplaced == [], f'modules in no layer: {unplaced}'
  wrong = []
  for m in sorted(product):
    for n in sorted(_imports(modules[m], modules) - {m}):
      if n == 'depthnet_jax':
        continue
      if n.startswith('depthnet_jax.testing'):
        wrong.append(f'{m} -> {n} (the product never imports testing)')
      elif _group(n) != _group(m) and _layer(n) >= _layer(m):
        wrong.append(f'{m} -> {n}')
  assert wrong == [], 'imports against the layer order:\n' + '\n'.join(wrong)


def test_at_most_ten_modules_at_the_top_level():
  top = [m for m in _modules() if m.count('.') == 1 and os.path.isfile(os.path.join(ROOT, *m.split('.')) + '.py')]
  assert len(top) <= 10, top


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 450, 80


def test_no_module_or_function_too_long():
  long = []
  for module, path in _modules().items():
    text = open(path, encoding='utf-8').read()
    if text.count('\n') > MAX_MODULE_LINES:
      long.append(f'{module}: {text.count(chr(10))} lines')
    for node in ast.walk(ast.parse(text)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
          node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
        long.append(f'{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines')
  assert long == [], f'over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a function: {long}'


def test_orbax_is_used_only_by_the_checkpoint_modules():
  users = sorted(m for m, p in _modules().items() if 'orbax' in open(p, encoding='utf-8').read()
                 and 'import orbax' in open(p, encoding='utf-8').read())
  assert users == ['depthnet_jax.checkpoints.checkpointing', 'depthnet_jax.checkpoints.integrity']


def test_no_sys_path_edits_and_no_reference_outside_the_repository():
  offenders = []
  for folder in ('depthnet_jax', 'tfds_stillbox', 'scripts', 'benchmarks', 'tests', 'configs'):
    for base, _, files in os.walk(os.path.join(ROOT, folder)):
      for name in files:
        if name.endswith('.py') and name != 'test_structure.py':
          text = open(os.path.join(base, name), encoding='utf-8').read()
          if re.search(r'sys\.path\s*(\.(insert|append)|\[|\+?=)', text) or 'DESIGN.md' in text or '../shared' in text:
            offenders.append(os.path.relpath(os.path.join(base, name), ROOT))
  for name in ('train.py', 'infer.py'):
    text = open(os.path.join(ROOT, name), encoding='utf-8').read()
    if re.search(r'sys\.path\s*(\.(insert|append)|\[|\+?=)', text) or 'DESIGN.md' in text:
      offenders.append(name)
  assert offenders == []
