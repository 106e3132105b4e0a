"""The layout's rules, read from the code itself (docs/method.md, "Code layout"): no import
circle, nothing imported from a private name of another module, run file names spelled only
in run/, typer only in cli, rich only in cli and ui, and the size limits that keep each room
readable."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import ROOT

PKG = ROOT / "finhrm_cli"
FILES = sorted(PKG.rglob("*.py"))
RUN_FILE_NAMES = ("model.safetensors", "config.json", "history.jsonl", "metrics.json", "state.safetensors",
                  "state.json", "train.lock", ".finhrm-run")


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in FILES}


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def imports(path: Path):
    """(imported module, names taken from it) for every import in ``path``, at any depth."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                yield (sub, []) if sub in MODULES else (base, [a.name])


def graph() -> dict[str, set[str]]:
    g = {m: set() for m in MODULES}
    for m, p in MODULES.items():
        for target, _ in imports(p):
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != m and target.startswith("finhrm_cli") and target != "finhrm_cli":
                g[m].add(target)
    return g


def test_the_import_graph_has_no_circle():
    g = graph()
    seen, on_path, cycles = set(), [], []

    def visit(m):
        if m in on_path:
            cycles.append(on_path[on_path.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        on_path.append(m)
        for n in sorted(g[m]):
            visit(n)
        on_path.pop()

    for m in sorted(g):
        visit(m)
    assert not cycles, cycles


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for m, p in MODULES.items():
        for target, names in imports(p):
            if target.startswith("finhrm_cli"):
                bad += [f"{m}: from {target} import {n}" for n in names if n.startswith("_") and not n.startswith("__")]
        # module._name on a finhrm module imported by name
        aliases = {}
        for node in ast.walk(tree(p)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("finhrm_cli"):
                for a in node.names:
                    if f"{node.module}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in MODULES and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree(p)):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{m}: {node.value.id}.{node.attr}")
    assert not bad, bad


def test_run_file_names_are_spelled_only_in_run():
    bad = []
    for m, p in MODULES.items():
        if m.startswith("finhrm_cli.run"):
            continue
        for node in ast.walk(tree(p)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in RUN_FILE_NAMES:
                bad.append(f"{m}:{node.lineno}: {node.value!r}")
    assert not bad, bad


@pytest.mark.parametrize("package, allowed", [("typer", ("finhrm_cli.cli",)),
                                              ("rich", ("finhrm_cli.cli", "finhrm_cli.ui"))])
def test_front_end_libraries_stay_in_the_front_end(package, allowed):
    bad = [m for m, p in MODULES.items() if not m.startswith(allowed)
           for target, _ in imports(p) if target == package or target.startswith(package + ".")]
    assert not bad, bad


def test_nothing_is_attached_to_a_model_at_run_time():
    bad = []
    for m, p in MODULES.items():
        for node in ast.walk(tree(p)):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_finhrm") and isinstance(node.ctx, ast.Store):
                bad.append(f"{m}:{node.lineno}")
    assert not bad, bad


def test_rooms_stay_readable():
    """No module over 500 lines, no function over 80, no class over 250."""
    bad = []
    for m, p in MODULES.items():
        lines = len(p.read_text(encoding="utf-8").splitlines())
        if lines > 500:
            bad.append(f"{m}: {lines} lines")
        for node in ast.walk(tree(p)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            size = node.end_lineno - node.lineno + 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > 80:
                bad.append(f"{m}.{node.name}: {size} lines")
            if isinstance(node, ast.ClassDef) and size > 250:
                bad.append(f"{m}.{node.name}: class of {size} lines")
    assert not bad, bad


def test_help_shows_the_defaults_the_code_uses():
    """One source for defaults and help: every option of a setting shows the dataclass's
    default, and no help text spells a default by hand."""
    import dataclasses

    import typer

    from finhrm_cli.cli import app
    from finhrm_cli.config import FeatureConfig, ModelConfig, TrainConfig, default_text

    settings = {}
    for cls in (FeatureConfig, ModelConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            settings.setdefault(f.name, f)
    settings["heads"] = settings["n_heads"]
    cmd = typer.main.get_command(app)
    checked = 0
    for name, command in cmd.commands.items():
        for p in command.params:
            text = p.help or ""
            if p.name in settings and getattr(p, "param_type_name", "") == "option":
                assert text.endswith(f"[default: {default_text(settings[p.name])}]"), (name, p.name, text)
                assert text.count("[default:") == 1, (name, p.name, text)
                checked += 1
            else:
                assert "[default:" not in text, (name, p.name, text)
    assert checked >= 25
