"""The package's import graph: no cycle, counting the imports inside functions too (none may dodge one)."""

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
  assert 'depthnet_jax.checkpointing' in graph['depthnet_jax.loading']   # the graph is the real one


def test_orbax_is_used_only_by_the_checkpoint_modules():
  users = sorted(m for m, p in _modules().items() if 'orbax' in open(p, encoding='utf-8').read()
                 and 'import orbax' in open(p, encoding='utf-8').read())
  assert users == ['depthnet_jax.checkpoint_integrity', 'depthnet_jax.checkpointing']


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
