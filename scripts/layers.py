#!/usr/bin/env python3
"""Lists the `crate::` edges between a crate's modules; fails on an import cycle or an upward edge.

Usage: scripts/layers.py [--edges] [CRATE_DIR ...]   (default: every crate of the workspace)

A module is a file under src/ (`a/b.rs` and `a/b/mod.rs` are `a::b`). An edge A -> B is any
`crate::B...` path in A (a `use`, or a path in code), or `super::`/`self::` that resolves
to a sibling. `#[cfg(test)] mod tests { ... }` blocks and files under a `tests` module are
ignored: tests may look anywhere.

Two checks:
1. No cycle between files (edges to a module's own ancestors count: a child that imports its
   parent's `mod.rs` while the parent imports it is a loop).
2. Layers: a crate may list its top-level modules by layer in `LAYERS` below; an edge from a
   lower layer to a higher one fails. Modules in the same layer may import each other as long
   as no cycle forms.
"""
import os
import re
import sys

# Lowest first. Each top-level module of the crate must be in exactly one layer.
LAYERS = {
    "worker": [
        ["error", "logging", "metrics"],                    # leaf utilities
        ["cli"],                                            # raw flags (clap)
        ["config", "tls"],                                  # validated settings
        ["catalog", "message", "locations", "db", "aws", "s3"],  # domain + clients
        ["pipeline", "derive", "queue", "consumer", "doctor", "bench",  # stages, library
         "plot", "producer", "requeue"],
        ["cmd"],                                            # subcommands
    ],
}

PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")
USE_RE = re.compile(r"\buse\s+(crate|super|self)::([^;]*);", re.S)


def modules(src):
    mods = {}
    for root, _dirs, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel in (["lib"], ["main"]):
                rel = []
            if "bin" in rel[:1]:
                continue
            if "tests" in rel:
                continue
            mods[tuple(rel)] = os.path.join(root, f)
    return mods


def strip_tests(text):
    """Drops `#[cfg(test)] mod x { ... }` blocks and comments."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand_use(tree):
    """`a::{b, c::{d}}` -> ['a::b', 'a::c::d']."""
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, s):
        depth, start, parts = 0, 0, []
        for k, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(s[start:k])
                start = k + 1
        parts.append(s[start:])
        for p in parts:
            if not p:
                continue
            if "{" in p:
                head, rest = p.split("{", 1)
                walk(prefix + head, rest[:-1])
            else:
                out.append(prefix + p.split(" as ")[0])

    walk("", tree)
    return out


def resolve(mods, me, kind, path):
    """The module (a key of `mods`) that `kind::path` lands in, or None."""
    segs = [s for s in path.split("::") if s and s != "*"]
    if kind == "crate":
        base = []
    elif kind == "self":
        base = list(me)
    else:  # super
        base = list(me[:-1])
        while segs and segs[0] == "super":
            base = base[:-1]
            segs = segs[1:]
    full = base + segs
    # Longest prefix that is a module.
    for n in range(len(full), -1, -1):
        if tuple(full[:n]) in mods:
            return tuple(full[:n])
    return None


def edges(mods):
    out = {}
    for me, path in mods.items():
        text = strip_tests(open(path, encoding="utf-8").read())
        deps = set()
        for m in USE_RE.finditer(text):
            for p in expand_use(m.group(2)):
                deps.add(resolve(mods, me, m.group(1), p))
        for m in PATH_RE.finditer(text):
            if m.group(2) == "::{":
                continue
            deps.add(resolve(mods, me, m.group(1), m.group(2)))
        deps.discard(None)
        deps.discard(me)
        # A module naming its own descendants is its own business (mod.rs declaring children).
        deps = {d for d in deps if d[: len(me)] != me or me == ()}
        if me == ():
            deps = set()  # lib.rs declares and re-exports
        out[me] = deps
    return out


def name(m):
    return "::".join(m) or "lib"


def find_cycles(g):
    """Strongly connected components of size > 1 (Tarjan)."""
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(g):
        if v not in index:
            visit(v)
    return sccs


def check(crate_dir, show_edges):
    crate = os.path.basename(os.path.normpath(crate_dir))
    src = os.path.join(crate_dir, "src")
    mods = modules(src)
    g = edges(mods)
    problems = []
    if show_edges:
        for m in sorted(g):
            if g[m]:
                print(f"{crate}: {name(m)} -> {', '.join(sorted(name(d) for d in g[m]))}")
    for comp in find_cycles(g):
        problems.append(f"{crate}: import cycle: {' <-> '.join(name(m) for m in comp)}")
    layers = LAYERS.get(crate)
    if layers:
        rank = {}
        for i, layer in enumerate(layers):
            for m in layer:
                rank[m] = i
        tops = {m[0] for m in mods if m}
        for t in sorted(tops - rank.keys()):
            problems.append(f"{crate}: module `{t}` is in no layer: add it to LAYERS in {sys.argv[0]}")
        for a, ds in g.items():
            for b in ds:
                if a and b and a[0] != b[0] and a[0] in rank and b[0] in rank and rank[b[0]] > rank[a[0]]:
                    problems.append(
                        f"{crate}: upward import {name(a)} -> {name(b)} "
                        f"(layer {rank[a[0]]} `{a[0]}` may not import layer {rank[b[0]]} `{b[0]}`)"
                    )
    return problems


def main():
    args = sys.argv[1:]
    show = "--edges" in args
    dirs = [a for a in args if a != "--edges"]
    if not dirs:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        dirs = [os.path.join(root, d) for d in sorted(os.listdir(root))
                if os.path.isfile(os.path.join(root, d, "Cargo.toml")) and os.path.isdir(os.path.join(root, d, "src"))]
    problems = []
    for d in dirs:
        problems += check(d, show)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"layers: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"layers: {len(dirs)} crate(s), no cycle, no upward import")
    return 0


if __name__ == "__main__":
    sys.exit(main())
