"""The project's own import graph: no circle, and no import that runs back up a floor.

Read with `ast` (nothing is imported): every import of a project module in app.py,
converters/, worker/, ui/ and bench/, at module top and inside functions, relative and
absolute. `from package import name` is an arrow to the submodule `name` when there is one,
else to the package. docs/architecture.md ("Floors") says what each floor is for.

    python -m pytest -q tests/test_import_graph.py
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("app.py", "converters", "worker", "ui", "bench")

# The floors, ground first. A module stands on the floor of the longest entry that names it
# (itself or a package above it); it may import modules on its own floor or below, never
# above. Every project module must stand somewhere: a new top-level module gets a line here.
FLOORS: list[tuple[str, ...]] = [
    # the ground: nothing of the project below it
    ("converters", "converters.errors", "converters.memory", "converters.formats"),
    # the small shared modules: the option and task tables, input checks, the typed report and its words
    ("converters.options", "converters.tasks", "converters.configs.attributes", "converters.integrity",
     "converters.diagnose", "converters.metadata", "converters.package_info", "converters.source",
     "converters.source_tokenizer", "converters.report", "converters.chunks", "converters.float16_safe",
     "converters.tolerances", "converters.wording", "converters.device_fit", "converters.image_size_rules"),
    # the families: one config class per architecture family, and the registry
    ("converters.configs",),
    # compression, format-neutral: the schemes and GPTQ (each format compresses in its backend)
    ("converters.transforms",),
    # validation: inputs, comparisons, runners; it imports no backend (the one that runs a package is handed to it)
    ("converters.validation",),
    # the output formats, each a package with its compressor and its runners
    ("converters.backends",),
    # loading what a conversion starts from; the size estimate the form shows
    ("converters.loading", "converters.size_estimate"),
    # stage 1: every refusal of a request
    ("converters.plan",),
    # the checks before a job (the form's and the worker's), and the capture stage
    ("converters.preflight", "converters.capture"),
    # the pipeline, Try it, the README's table
    ("converters.export", "converters.try_it", "converters.try_image", "converters.try_audio", "converters.supported"),
    # the command lines
    ("converters.__main__",),
    ("converters.validate_package",),
    # the job service
    ("worker",),
    # the web UI's helpers
    ("ui",),
    # what stands on everything: the web app, the benchmarks
    ("app", "bench"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files() -> list[Path]:
    files = []
    for source in SOURCES:
        path = ROOT / source
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported project module: the line of its first import}."""
    files = {module_name(path): path for path in project_files()}

    def known(name: str | None) -> str | None:  # the module itself, or the nearest package above it
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        arrows = graph.setdefault(module, {})
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [known(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module
                targets = [known(f"{base}.{alias.name}") for alias in node.names]
            else:
                continue
            for target in targets:
                if target and target != module:
                    arrows.setdefault(target, node.lineno)
    return graph


def floor_of(module: str) -> int | None:
    best, floor = -1, None
    for number, entries in enumerate(FLOORS, start=1):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and len(entry) > best:
                best, floor = len(entry), number
    return floor


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each in order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph.get(module, {}):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def _where(module: str) -> str:
    path = ROOT.joinpath(*module.split("."))
    return str((path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).relative_to(ROOT))


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    found = circles(graph)
    described = []
    for component in found:
        members = set(component)
        arrows = [f"{_where(a)}:{graph[a][b]} -> {_where(b)}" for a in component for b in graph[a] if b in members]
        described.append(f"{', '.join(map(_where, component))}\n    " + "\n    ".join(arrows))
    assert not found, "modules that import each other in a circle:\n  " + "\n  ".join(described)


def test_every_module_stands_on_a_floor():
    homeless = [_where(module) for module in import_graph() if floor_of(module) is None]
    assert not homeless, f"no floor in tests/test_import_graph.py FLOORS for: {', '.join(homeless)}"


def test_no_import_runs_back_up_a_floor():
    upward = []
    for module, arrows in import_graph().items():
        for target, line in arrows.items():
            low, high = floor_of(module), floor_of(target)
            if low is not None and high is not None and high > low:
                upward.append(f"{_where(module)}:{line} (floor {low}) imports {target} (floor {high})")
    assert not upward, "imports that run back up a floor:\n  " + "\n  ".join(upward)


def test_the_web_process_reads_the_report_and_its_words_without_torch():
    """The web process imports the typed report and its words: neither loads torch."""
    code = ("import sys, converters.report, converters.wording; "
            "heavy = [m for m in ('torch', 'transformers', 'coremltools') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_the_app_is_layout_and_wiring_and_the_readme_is_for_a_new_user():
    """app.py lays the page out and wires it (its handlers are ui/'s), under 400 lines; the README
    says what it is, the two commands, the form and the limits, under 250 (the rest is docs/)."""
    app, readme = ((ROOT / name).read_text(encoding="utf-8").count("\n") for name in ("app.py", "README.md"))
    assert app < 400, f"app.py has {app} lines: move handlers or helpers into ui/"
    assert readme < 250, f"README.md has {readme} lines: move what operators or contributors read into docs/"
