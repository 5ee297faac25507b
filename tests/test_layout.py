"""The test suite's own shape: helpers live in tests/support, fixtures in conftest.py, and no module under tests/
imports a test module or conftest (which would drag that module's tests, fixtures and import-time work along, and tie
two modules' refactorings together). Read from the source with ast, so a violation fails before anything runs."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Tuple

TESTS = Path(__file__).resolve().parent


def imported_names(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, dotted module name) for everything ``path`` imports; ``from a import b`` yields both a and a.b, since
    b may be a module; relative imports are resolved against the file's package."""
    package = path.relative_to(TESTS.parent).parent.parts
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if module:
                yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}" if module else alias.name


def is_test_module_or_conftest(name: str) -> bool:
    """``tests.test_x``, ``tests.conftest``, or the bare ``test_x`` / ``conftest`` of rootdir-style imports."""
    parts = name.split(".")
    if parts[0] == "tests":
        parts = parts[1:]
    return bool(parts) and (parts[0] == "conftest" or parts[0].startswith("test_"))


def test_no_module_under_tests_imports_a_test_module_or_conftest() -> None:
    found = [f"{path.relative_to(TESTS.parent)}:{line}: imports {name}"
             for path in sorted(TESTS.rglob("*.py"))
             for line, name in imported_names(path) if is_test_module_or_conftest(name)]
    assert not found, "import shared helpers from tests.support instead:\n" + "\n".join(found)


def is_fixture(function: ast.FunctionDef) -> bool:
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if ast.unparse(target) in ("pytest.fixture", "fixture"):
            return True
    return False


def test_conftest_defines_only_fixtures_and_hooks() -> None:
    module = ast.parse((TESTS / "conftest.py").read_text(encoding="utf-8"))
    others: List[str] = []
    for node in module.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (isinstance(node, ast.Expr)
                                                              and isinstance(node.value, ast.Constant)):
            continue        # imports and the docstring
        if isinstance(node, ast.FunctionDef) and (is_fixture(node) or node.name.startswith("pytest_")):
            continue
        others.append(f"conftest.py:{node.lineno}: {ast.unparse(node).splitlines()[0]}")
    assert not others, "conftest.py holds fixtures and pytest hooks; helpers go to tests/support:\n" + "\n".join(others)


def quick_start_commands() -> List[str]:
    """The commands of the README's Quick start, block by block (the install-and-serve one, then the test one)."""
    readme = (TESTS.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.split("\n", 1)[1].split("```", 1)[0].strip() for block in section.split("```sh")[1:]][:2]


def test_ci_runs_exactly_the_readme_test_command():
    serve, test = quick_start_commands()
    steps = [line.strip() for line in (TESTS.parent / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert serve.endswith("mockex serve") and steps == [test]


def test_every_corpus_directory_is_replayed_and_every_entry_is_well_formed() -> None:
    """tests/corpus/<target>/ holds inputs a fuzz target once failed on: a directory no test module replays (with
    ``corpus.entries("<target>")``) would keep them without ever running them."""
    from tests.support import corpus

    sources = "\n".join(path.read_text(encoding="utf-8") for path in TESTS.glob("test_*.py"))
    targets = sorted(path.name for path in corpus.CORPUS.iterdir() if path.is_dir())
    assert targets, "no corpus"
    unreplayed = [target for target in targets if f'corpus.entries("{target}")' not in sources]
    assert not unreplayed, f"corpus directories no test replays: {unreplayed}"
    for target in targets:
        corpus.entries(target)       # each file: JSON with why and input (and perhaps xfail), no other key
    strays = [path.name for path in corpus.CORPUS.iterdir() if path.is_file() and path.name != "README.md"]
    assert not strays, f"files outside a target's directory: {strays}"
