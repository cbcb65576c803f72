"""The layout holds: no import cycles among project modules, library dependencies that point down,
and a library free of Dagster."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("grasp_pipeline", "assets")


def project_modules() -> dict[str, Path]:
    """module name -> file, for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name the module imports (at any depth, inside functions too), made absolute."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (a package importing its own submodules is not an edge)."""
    modules = project_modules()
    graph = {}
    for module, path in modules.items():
        deps = set()
        for name in imported_names(module, path):
            while name and name not in modules:
                name = name.rsplit(".", 1)[0] if "." in name else ""
            if name and name != module and not name.startswith(module + "."):
                deps.add(name)
        graph[module] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_import_walker_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_project_modules():
    graph = import_graph()
    assert len(graph) > 50  # the walk sees the project
    assert cycles(graph) == []


def test_the_library_does_not_import_dagster():
    offenders = sorted(module for module, path in project_modules().items() if module.startswith("grasp_pipeline")
                       and any(n.split(".")[0] == "dagster" for n in imported_names(module, path)))
    assert offenders == []


def test_importing_every_library_module_loads_no_dagster():
    library = sorted(m for m in project_modules() if m.startswith("grasp_pipeline"))
    code = ("import importlib, sys\n"
            f"for name in {library!r}:\n    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_nothing_outside_the_cli_imports_it():
    importers = sorted(module for module, deps in import_graph().items() if not within(module, "assets.cli")
                       and any(within(dep, "assets.cli") for dep in deps))
    assert importers == []


def test_only_the_deployment_variants_import_each_other():
    importers = sorted(module for module, deps in import_graph().items() if not within(module, "assets.deploy")
                       and any(within(dep, "assets.deploy") for dep in deps))
    assert importers == []


# The library's layers, bottom first: infrastructure and shared statistics, the engines (config,
# corpus, workloads, sketching, selection, surrogates, mixture, evaluation), the training engines,
# the stages, the operations on stored tables. A module imports its own layer and those below.
LAYERS = (("grasp_pipeline.infra", "grasp_pipeline.stats"), (), ("grasp_pipeline.training",),
          ("grasp_pipeline.stages",), ("grasp_pipeline.ops",))
ENGINES = 1


def layer_of(module: str) -> int | None:
    """The layer of a library module (None outside the library, or for the package itself)."""
    if not within(module, "grasp_pipeline") or module == "grasp_pipeline":
        return None
    return next((i for i, packages in enumerate(LAYERS) if any(within(module, p) for p in packages)), ENGINES)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'importer -> imported' for every library import of a module in a higher layer."""
    return sorted(f"{module} -> {dep}" for module, deps in graph.items() for dep in deps
                  if layer_of(module) is not None and layer_of(dep) is not None and layer_of(dep) > layer_of(module))


def test_the_layer_check_finds_a_planted_upward_import():
    planted = {"grasp_pipeline.infra.lineage": {"grasp_pipeline.stages", "grasp_pipeline.infra.storage"},
               "grasp_pipeline.surrogates.lcb": {"grasp_pipeline.stats", "grasp_pipeline.training.retrain"},
               "grasp_pipeline.ops.export": {"grasp_pipeline.stages.base"}}
    assert upward_imports(planted) == ["grasp_pipeline.infra.lineage -> grasp_pipeline.stages",
                                       "grasp_pipeline.surrogates.lcb -> grasp_pipeline.training.retrain"]


def test_library_dependencies_point_down():
    assert upward_imports(import_graph()) == []
