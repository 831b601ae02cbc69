"""The layering rules of docs/architecture.md, checked on the source."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from rankflow.paths import REPO_ROOT

HEAVY = ("torch", "feast", "pyarrow", "mlflow", "prefect", "numpy", "pandas", "dbt")


def _imported_modules(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_loading_the_config_imports_no_heavy_library() -> None:
    loaded = _imported_modules("import rankflow.config, rankflow.settings, rankflow.cli")
    heavy = sorted(n for n in loaded if n.split(".")[0] in HEAVY)
    assert heavy == []


def test_the_metrics_module_and_the_simulator_import_no_torch() -> None:
    """The simulator's oracle figures come from models.metrics (one metrics module), so that
    module stays light: torch only reaches it with a model, sklearn on the first AUC."""
    loaded = _imported_modules("import models.metrics, rankflow.sim.simulate")
    heavy = sorted(n for n in loaded if n.split(".")[0] in ("torch", "sklearn", "scipy"))
    assert heavy == []


def _python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in (REPO_ROOT / folder).rglob("*.py")]


def _imports(file: Path) -> set[str]:
    tree = ast.parse(file.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_library_never_imports_the_orchestration_layer() -> None:
    offenders = {
        str(f.relative_to(REPO_ROOT)): sorted(m for m in _imports(f) if m.split(".")[0] == "flows")
        for f in _python_files("rankflow", "models")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_models_knows_nothing_above_it() -> None:
    above = ("rankflow", "flows", "feast", "mlflow", "prefect", "feature_repo")
    offenders = {
        str(f.relative_to(REPO_ROOT)): sorted(m for m in _imports(f) if m.split(".")[0] in above)
        for f in _python_files("models")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_settings_module_touches_the_process_environment() -> None:
    """The benchmarks too: they hand explicit Settings to the stages and child processes.
    (feature_repo/ reads RANKFLOW_HOME for the bare Feast CLI only; see data_sources.py.)"""
    readers = sorted(
        str(f.relative_to(REPO_ROOT))
        for f in _python_files("rankflow", "models", "flows", "bench")
        if "os.environ" in f.read_text() or "getenv(" in f.read_text()
    )
    assert readers == ["rankflow/settings.py"]


def test_no_library_module_is_over_500_lines() -> None:
    long = {
        str(f.relative_to(REPO_ROOT)): n
        for f in _python_files("rankflow")
        if (n := len(f.read_text().splitlines())) > 500
    }
    assert long == {}


def test_no_function_outside_tests_and_bench_is_over_80_lines() -> None:
    long = {}
    for file in _python_files("rankflow", "models", "flows", "feature_repo"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > 80:
                    long[f"{file.relative_to(REPO_ROOT)}:{node.name}"] = lines
    assert long == {}


def _rankflow_import_graph() -> dict[str, set[str]]:
    """Module -> the rankflow modules it imports anywhere (top level, inside functions, or for
    type checking only): each of those is a dependency a reader has to follow."""
    modules = {
        ".".join(f.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__"): f
        for f in _python_files("rankflow")
    }
    graph: dict[str, set[str]] = {}
    for name, file in modules.items():
        found = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        # A package's __init__ runs before its modules: importing one's own parent is no circle.
        graph[name] = {m for m in found & set(modules) if m != name and not name.startswith(m)}
    return graph


def test_no_two_rankflow_modules_import_each_other_even_indirectly() -> None:
    """No circle of imports, however hidden (in a function, under TYPE_CHECKING): a circle
    means neither module can be read, tested or moved without the other."""
    graph = _rankflow_import_graph()
    circles = []
    for start in sorted(graph):
        seen, stack = set(), [(start, [start])]
        while stack:
            name, path = stack.pop()
            for nxt in sorted(graph[name]):
                if nxt == start:
                    circles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert circles == []


def test_state_folders_are_named_by_state_paths_not_joined_by_hand() -> None:
    """Every folder under the state dir is a StatePaths property: no library or flow module
    joins a name onto the state root (``paths.root / "logs"``) itself."""
    joined = re.compile(r"(\.root|\.home)\)?\s*/")
    offenders = [
        f"{file.relative_to(REPO_ROOT)}:{number}"
        for file in _python_files("rankflow", "flows")
        if file.name != "paths.py"
        for number, line in enumerate(file.read_text().splitlines(), 1)
        if joined.search(line)
    ]
    assert offenders == []


# The layers of docs/architecture.md, bottom to top. A module imports only its own layer and
# the layers below it. The foundation holds the top-level modules and the config sections a
# stage declares beside itself (serving/config.py, ...), which rankflow/config.py composes.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(names.split())
    for names in (
        "errors settings paths config locks times jsonable preflight temp_server built_with "
        "feast_typeguard console "
        "serving.config monitoring.config sim.config",
        "data",
        "warehouse",
        "features",
        "tracking registry",
        "training",
        "serving",
        "monitoring",
        "canary",
        "sim",
        "cli cli_inputs __main__",
    )
)
PRODUCTION = ("canary", "serving", "training", "monitoring", "registry", "tracking")
PRODUCTION += ("features", "warehouse", "data")


def _layer_of(unit: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if unit in names)


def _unit(module: str) -> str:
    """``rankflow.serving.config`` -> ``serving.config`` (a section), ``rankflow.serving.x`` ->
    ``serving``, ``rankflow.cli`` -> ``cli``."""
    parts = module.split(".")[1:]
    if len(parts) >= 2 and ".".join(parts[:2]) in LAYERS[0]:
        return ".".join(parts[:2])
    return parts[0] if parts else ""


def _rankflow_imports(file: Path) -> set[str]:
    """The rankflow modules ``file`` imports, anywhere in it (functions and TYPE_CHECKING
    blocks too: they are real coupling); ``from rankflow.sim import config`` is
    ``rankflow.sim.config``."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                path = REPO_ROOT / Path(*name.split("."))
                is_module = path.with_suffix(".py").is_file() or path.is_dir()
                found.add(name if is_module else node.module)
    return {m for m in found if m.split(".")[0] == "rankflow" and m != "rankflow"}


def _module_name(file: Path) -> str:
    parts = file.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_production_imports_nothing_from_the_simulation() -> None:
    """The simulator, its oracle, the scenario and the measurements are demo code: production
    gets a simulated part only when the composition root hands it in. rankflow/config.py may
    compose the simulator's config section (a pure pydantic model) and nothing else of it."""
    files = _python_files(*(f"rankflow/{package}" for package in PRODUCTION))
    files += [f for f in (REPO_ROOT / "rankflow").glob("*.py") if f.stem not in ("cli", "__main__")]
    offenders = {}
    for file in files:
        sim = {m for m in _rankflow_imports(file) if m.startswith("rankflow.sim")}
        if file == REPO_ROOT / "rankflow" / "config.py":
            sim -= {"rankflow.sim.config"}
        if sim:
            offenders[str(file.relative_to(REPO_ROOT))] = sorted(sim)
    assert offenders == {}


def test_every_module_imports_only_its_own_or_lower_layers() -> None:
    known = set().union(*LAYERS)
    upward, unplaced = {}, set()
    for file in _python_files("rankflow"):
        if file == REPO_ROOT / "rankflow" / "__init__.py":
            continue  # the package's docstring and version
        unit = _unit(_module_name(file))
        if unit not in known:
            unplaced.add(unit)
            continue
        above = sorted(
            m
            for m in _rankflow_imports(file)
            if _unit(m) in known and _layer_of(_unit(m)) > _layer_of(unit)
        )
        if above:
            upward[str(file.relative_to(REPO_ROOT))] = above
    assert unplaced == set(), "place these in LAYERS and in docs/architecture.md"
    assert upward == {}


def test_the_architecture_page_states_the_layers_the_code_holds() -> None:
    """docs/architecture.md draws the layers top to bottom; every subpackage is on it, in the
    order of LAYERS (the test above holds the code to that order)."""
    text = (REPO_ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Layers", 1)[1].split("```", 2)[1]
    drawn = [
        line.split()[0].removeprefix("rankflow/").removesuffix("/").removesuffix(".py")
        for line in block.splitlines()
        if line.startswith("rankflow/")
    ]
    layers = [_layer_of(unit) for unit in drawn]
    assert layers == sorted(layers, reverse=True), drawn
    packages = {p.parent.name for p in (REPO_ROOT / "rankflow").glob("*/__init__.py")}
    assert packages <= set(drawn)
