"""The import graph of finhrm_cli, in figures: modules, import edges, circles, layers (the
longest import chain), imports inside a circle (they run against any layering), private names
imported across modules, the largest module.  Reads the code (AST, function-level imports
included); runs nothing of it.

    python benchmarks/import_graph.py [TREE]      # TREE: a checkout (default: this one)
"""
import ast, sys
from pathlib import Path
root = (Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]) / "finhrm_cli"
files = sorted(root.rglob("*.py"))
def modname(p):
    parts = p.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
mods = {modname(p): p for p in files}
edges = set(); private = 0; lazy = 0
for m, p in mods.items():
    pkg = m if p.name == "__init__.py" else m.rpartition(".")[0]
    t = ast.parse(p.read_text())
    for node in ast.walk(t):
        targets = []
        if isinstance(node, ast.Import):
            targets = [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            for a in node.names:
                sub = f"{base}.{a.name}"
                targets.append((sub, None) if sub in mods else (base, a.name))
                if a.name.startswith("_") and not a.name.startswith("__") and base.startswith("finhrm_cli"):
                    private += 1
        for tgt, _ in targets:
            while tgt and tgt not in mods: tgt = tgt.rpartition(".")[0]
            if tgt and tgt != m and tgt != "finhrm_cli" and tgt.startswith("finhrm_cli"):
                edges.add((m, tgt))
g = {m: set() for m in mods}
for a, b in edges: g[a].add(b)
# SCCs (Tarjan)
index = {}; low = {}; st = []; on = set(); sccs = []; i = [0]
sys.setrecursionlimit(10000)
def sc(v):
    index[v] = low[v] = i[0]; i[0] += 1; st.append(v); on.add(v)
    for w in g[v]:
        if w not in index: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
for v in g:
    if v not in index: sc(v)
cyc = [c for c in sccs if len(c) > 1]
comp_of = {v: k for k, c in enumerate(sccs) for v in c}
# layers: longest path in condensation
from functools import lru_cache
cg = {k: set() for k in range(len(sccs))}
for a, b in edges:
    if comp_of[a] != comp_of[b]: cg[comp_of[a]].add(comp_of[b])
@lru_cache(None)
def depth(k): return 1 + max((depth(j) for j in cg[k]), default=0)
layers = max(depth(k) for k in cg)
# upward imports: edges inside a cycle (they run against any layering)
up = [(a, b) for a, b in edges if comp_of[a] == comp_of[b]]
sizes = [len(p.read_text().splitlines()) for p in files]
print(f"modules {len(mods)}, import edges {len(edges)}, circles {len(cyc)} {cyc}, layers {layers}, "
      f"imports that run upward (inside a circle) {len(up)}, private names imported across modules {private}, "
      f"largest module {max(sizes)} lines, modules over 500 lines {sum(s > 500 for s in sizes)}")
