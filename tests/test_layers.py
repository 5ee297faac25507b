"""The import graph of harness/: no cycles, and every import points down the layer order of docs/architecture.md.

Imports under ``if TYPE_CHECKING:`` are annotations only and are not edges. Imports inside functions are edges (a lazy
import is still a dependency).
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from typing import Dict, List, Set

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "harness")

# Bottom to top. A module may import modules of its own layer entry (its own package) and of lower layers only;
# the entries of one layer (e.g. services and probe) do not import each other.
LAYERS: List[List[str]] = [
    ["harness.hooks"],                                                    # the hook kernel
    ["harness.paths", "harness.yamlfile", "harness.verdicts", "harness.transcript"],   # leaf utilities, vocabulary
    ["harness.org", "harness.pki", "harness.conduct"],                    # the org model, certificates, conduct
    ["harness.protocols"],                                                # sans-IO cores
    ["harness.rpc"],                                                      # NSPI, RFR, EMSMDB over the DCE/RPC core
    ["harness.faults"],                                                   # fault families answering hooks
    ["harness.scenario"],
    ["harness.catalog_docs"],
    ["harness.services", "harness.probe", "harness.sandbox"],             # Twisted edges | client side | namespaces
    ["harness.testing", "harness.catalog_cli", "harness.export", "harness.control",
     "harness.runner"],                                                   # tools, readers, control, `mockex run`
    ["harness.pytest_plugin", "harness.cli"],
    ["harness.__main__"],
]


def module_name(path: str) -> str:
    relative = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
    return relative[:-len(".__init__")] if relative.endswith(".__init__") else relative


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: str) -> Set[str]:
    """harness modules imported by the file at ``path`` (``from harness.x import y`` counts harness.x, and
    harness.x.y when that is a module)."""
    found: Set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names if alias.name.startswith("harness"))
            elif isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("harness"):
                found.add(child.module)
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    with open(path, encoding="utf-8") as handle:
        visit(ast.parse(handle.read()))
    return found


def import_graph() -> Dict[str, Set[str]]:
    files = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                files[module_name(path)] = path
    # harness/__init__.py holds only the version: not a layer, not an edge
    return {module: {m for m in imports_of(path) if m in files and m not in (module, "harness")}
            for module, path in files.items() if module != "harness"}


def layer_of(module: str) -> int:
    best, rank = "", -1
    for index, layer in enumerate(LAYERS):
        for entry in layer:
            if (module == entry or module.startswith(entry + ".")) and len(entry) > len(best):
                best, rank = entry, index
    if rank < 0:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and docs/architecture.md")
    return rank


def entry_of(module: str) -> str:
    return max((e for layer in LAYERS for e in layer if module == e or module.startswith(e + ".")), key=len)


def test_every_import_points_down_the_layers() -> None:
    wrong = []
    for module, imported in sorted(import_graph().items()):
        for target in sorted(imported):
            if entry_of(module) == entry_of(target):
                continue
            if layer_of(target) >= layer_of(module):
                wrong.append(f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycle() -> None:
    graph = import_graph()
    state: Dict[str, int] = {}
    stack: List[str] = []
    cycles: List[str] = []

    def walk(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                walk(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_an_upward_import(tmp_path) -> None:
    """The graph walker must notice a real import and a lazy one, and skip TYPE_CHECKING-only ones."""
    source = tmp_path / "sample.py"
    source.write_text("from typing import TYPE_CHECKING\nimport harness.org\n"
                      "if TYPE_CHECKING:\n    from harness.services import server\n"
                      "def f():\n    from harness.faults.base import Fault\n")
    assert imports_of(str(source)) == {"harness.org", "harness.faults.base", "harness.faults.base.Fault"}
    assert layer_of("harness.services.web") > layer_of("harness.faults.tls") > layer_of("harness.protocols.http")


HIDE_OPENSSL = """
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name == "OpenSSL" or name.startswith("OpenSSL."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
import harness.faults
from harness.faults.base import catalog
print(len(catalog()))
assert "OpenSSL" not in sys.modules
"""


def test_the_fault_catalogue_imports_without_pyopenssl() -> None:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", HIDE_OPENSSL], capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 50


@pytest.mark.parametrize("module", ["harness.hooks"])
def test_the_kernel_imports_nothing_of_harness(module: str) -> None:
    graph = import_graph()
    assert graph[module] == set()
