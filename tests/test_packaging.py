"""One installable package: everything beneath `ragpacer`, nothing else at the top level."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

SOURCES = ("pipeline", "agents", "retrieval", "tests", "evals", "ragpacer")


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel and the build's output, built from a copy of the sources, so the build leaves
    nothing in the repository."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("ragpacer", "pipeline", "agents", "retrieval"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-v", "-w", str(out), str(src)],
                          check=True, capture_output=True, text=True)
    return next(out.glob("ragpacer-*.whl")), done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(build: tuple[Path, str]) -> Path:
    return build[0]


def test_every_folder_shipped_is_declared(build: tuple[Path, str]) -> None:
    """setuptools ships a folder it was not told about only with a warning that it will stop
    ("would be ignored"): the demo data and the engine scripts are declared packages."""
    assert "is absent from the `packages` configuration" not in build[1]


def test_the_wheel_installs_only_the_ragpacer_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"ragpacer"}
    for needed in ("ragpacer/__init__.py", "ragpacer/py.typed", "ragpacer/pipeline/sdk.py",
                   "ragpacer/pipeline/demo/knowledge_base.jsonl",
                   "ragpacer/pipeline/demo/intents.npz",
                   "ragpacer/pipeline/demo/intents.csv",
                   "ragpacer/pipeline/llm/engine_scripts/convert_gguf.py",
                   "ragpacer/retrieval/stores/edge.py", "ragpacer/agents/builtin/currency.py"):
        assert needed in names, needed
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ragpacer = ragpacer.pipeline.cli:app" in zipfile.ZipFile(wheel).read(entry).decode()


def all_imports() -> list[tuple[str, str]]:
    """(file, absolute module name) for every import statement anywhere in our sources."""
    out = []
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom)
                         and node.level == 0 else [])
                out += [(str(path.relative_to(ROOT)), n) for n in names]
    return out


def test_no_module_imports_the_folders_by_their_top_level_names() -> None:
    """Installed, `pipeline`, `agents` and `retrieval` do not exist: every import of ours
    goes through `ragpacer.`."""
    bad = [f"{f}: {n}" for f, n in all_imports()
           if n.split(".")[0] in ("pipeline", "agents", "retrieval")]
    assert not bad, bad


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts if parts[0] == "ragpacer" else ["ragpacer", *parts])


def import_graph() -> dict[str, set[str]]:
    """Our modules and the modules of ours each imports at module level (what runs at import
    time; imports inside functions and TYPE_CHECKING blocks do not)."""
    paths = {_module_name(p): p for folder in ("ragpacer", "pipeline", "agents", "retrieval")
             for p in (ROOT / folder).rglob("*.py") if "engine_scripts" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        deps: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                subs = {f"{node.module}.{a.name}" for a in node.names} & paths.keys()
                deps |= subs or {node.module}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in paths and d != name}
    return graph


def test_the_request_core_imports_nothing_else_of_ours() -> None:
    graph = import_graph()
    core = {m for m in graph if m.startswith("ragpacer.pipeline.core")}
    assert len(core) >= 10
    outside = {m: sorted(graph[m] - core) for m in core if graph[m] - core}
    assert not outside, outside


def test_the_request_core_has_no_type_ignore() -> None:
    """The core is type-checked strictly (`make typecheck`), with nothing waved through."""
    waved = [f"{p.name}:{i}" for p in (ROOT / "pipeline" / "core").glob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1) if "type: ignore" in line]
    assert not waved, waved


def test_there_is_no_import_cycle() -> None:
    graph = import_graph()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            raise AssertionError(" -> ".join((*path[path.index(module):], module)))
        if module not in done:
            for dep in sorted(graph[module]):
                visit(dep, (*path, module))
            done.add(module)

    for module in sorted(graph):
        visit(module, ())


def test_every_subpackage_is_in_the_wheel(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package in (("pipeline", "pipeline"), ("agents", "agents"),
                            ("retrieval", "retrieval")):
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.relative_to(ROOT / folder).as_posix()
            assert f"ragpacer/{package}/{rel}" in names, rel


def test_nothing_imports_a_private_module_of_another_package() -> None:
    """A private module (``pkg._impl``) can change in any release: only public interfaces."""
    private = [f"{f}: {n}" for f, n in all_imports()
               if not n.startswith(("ragpacer", "tests", "evals", "__future__"))
               and any(p.startswith("_") for p in n.split("."))]
    assert not private, private


def test_the_cli_reports_its_version() -> None:
    out = subprocess.run([sys.executable, "-m", "ragpacer.pipeline.cli", "--version"],
                         capture_output=True, text=True, check=True).stdout
    from ragpacer import __version__

    assert out.strip() == f"ragpacer {__version__}"
