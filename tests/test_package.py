"""The package's shape: no import cycles among its modules."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ('tf_admm', 'tflite_export')


def _module_imports() -> dict:
  """{module: modules of the packages it imports at module level}."""
  graph = {}
  for package in PACKAGES:
    for path in (ROOT / package).rglob('*.py'):
      name = '.'.join(path.relative_to(ROOT).with_suffix('').parts
                      ).removesuffix('.__init__')
      found = set()
      for node in ast.parse(path.read_text()).body:  # module level only
        if isinstance(node, ast.Import):
          found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
          found.add(node.module)
          found |= {f'{node.module}.{alias.name}' for alias in node.names}
      graph[name] = found
  return {name: {m for m in imports if m in graph and m != name}
          for name, imports in graph.items()}


def _cycle(graph):
  """One import cycle as a list of modules, or None."""
  state = {}

  def visit(module, path):
    state[module] = 'open'
    for other in sorted(graph[module]):
      if state.get(other) == 'open':
        return path[path.index(other):] + [other]
      if other not in state:
        found = visit(other, path + [other])
        if found:
          return found
    state[module] = 'done'
    return None

  for module in sorted(graph):
    if module not in state:
      found = visit(module, [module])
      if found:
        return found
  return None


def test_no_module_imports_itself_through_others():
  graph = _module_imports()
  # Package __init__ files import their modules for the public names.
  packages = {m for m in graph
              if (ROOT / m.replace('.', '/') / '__init__.py').exists()}
  graph = {m: {i for i in imports if i not in packages}
           for m, imports in graph.items() if m not in packages}
  assert _cycle(graph) is None


def test_the_cycle_finder_finds_cycles():
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert _cycle({'a': {'b'}, 'b': set()}) is None


def test_no_module_is_over_400_lines():
  """A module the next engineer can read in one pass."""
  long = {str(path.relative_to(ROOT)): len(path.read_text().splitlines())
          for folder in (*PACKAGES, 'examples')
          for path in (ROOT / folder).rglob('*.py')}
  assert {path: n for path, n in long.items() if n > 400} == {}
