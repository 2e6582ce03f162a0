#!/usr/bin/env python3
"""Find files of the workspace's library code that import each other in a circle.

Usage: scripts/check-import-cycles.py [CRATE_DIR ...]   (default: every crate with src/lib.rs)

A file depends on another when it names a path into it: a `use` (nested
braces included) or a qualified path in code (`crate::a::b`, `super::x`,
`self::y`, or a module name in scope). A path is followed through modules and
through imports inside the crate to the file that defines the item: reading
`crate::Thing` that `lib.rs` re-exports from `thing.rs` depends on
`thing.rs`, not on `lib.rs`. A name that a file imports from another crate
and others read through it (`pub use other_crate::X`) depends on that file.
Declaring a child (`mod x;`) is not a dependency; a parent that uses its
child's items and a child that uses its parent's is a circle. Comments, strings and `#[cfg(test)]` modules are ignored, as are
binaries (`main.rs`, `src/bin`), examples, benches and tests.

Prints every strongly connected group of two or more files with the edges
inside it, and exits 1 when there is one; exits 0 and prints a summary when
the import graph between files is acyclic.
"""

import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def raw_string_start(text, i):
    """Whether the `r` at `i` starts a raw (byte) string literal, not ends an identifier."""
    before = text[max(0, i - 2) : i]
    if before.endswith("b"):
        before = before[:-1]
    return not re.match(r"\w", before[-1:])


def strip(text):
    """The text with comments, string and char literals blanked (lengths kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and raw_string_start(text, i):
            m = re.match(r'r(#*)"', text[i:])
            close = '"' + m.group(1)
            j = text.find(close, i + len(m.group(0)))
            j = n if j < 0 else j + len(close)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}'), not a lifetime ('a).
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(text, open_at):
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text)


MOD_RE = re.compile(r"((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*([;{])")


def drop_test_code(code):
    """Split a file's code: (code outside inline modules, child module files, inline modules).

    `#[cfg(test)]` modules and imports are dropped; an inline module
    (`mod x { ... }`) is returned as (name, its code) to be read as a
    module of the same file.
    """
    children, inline = [], []
    out = code
    for m in list(MOD_RE.finditer(code)):
        attrs, name, end = m.group(1), m.group(2), m.group(3)
        if any(m.start() > a and m.start() < b for a, b, _ in inline):
            continue  # nested inside an inline module: read with it
        is_test = "cfg(test)" in attrs.replace(" ", "")
        if end == ";":
            if not is_test:
                children.append(name)
            continue
        close = matching_brace(code, m.end() - 1)
        if not is_test:
            inline.append((m.start(), close, name))
        out = out[: m.start()] + re.sub(r"[^\n]", " ", out[m.start() : close + 1]) + out[close + 1 :]
    # Other `#[cfg(test)]` imports.
    for m in re.finditer(r"#\[cfg\(test\)\]\s*", out):
        if out[m.end() :].startswith("use "):
            j = out.find(";", m.end())
            out = out[: m.start()] + " " * (j + 1 - m.start()) + out[j + 1 :]
    blocks = []
    for start, close, name in inline:
        body_start = code.index("{", start) + 1
        blocks.append((name, code[body_start:close]))
    return out, children, blocks


def use_paths(tree, prefix=()):
    """Paths of a `use` tree: `a::{b, c::d as e}` -> [a::b, a::c::d]."""
    tree = tree.strip()
    if not tree:
        return []
    # Split top-level on '::' up to a brace group.
    depth, i = 0, 0
    if "{" not in tree:
        tree = re.sub(r"\s+as\s+\w+$", "", tree)
        return [prefix + tuple(s.strip() for s in tree.split("::") if s.strip())]
    brace = tree.index("{")
    head = [s.strip() for s in tree[:brace].split("::") if s.strip()]
    close = matching_brace(tree, brace)
    inner = tree[brace + 1 : close]
    parts, start = [], 0
    for j, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:j])
            start = j + 1
    parts.append(inner[start:])
    paths = []
    for part in parts:
        paths.extend(use_paths(part, prefix + tuple(head)))
    return paths


class Crate:
    def __init__(self, root_dir):
        self.root_dir = root_dir
        self.files = {}  # module path tuple -> file path
        self.children = {}  # module path -> [child names]
        self.code = {}
        self._imports = {}
        lib = os.path.join(root_dir, "src", "lib.rs")
        self.load((), lib)

    def load(self, module, path):
        with open(path, encoding="utf-8") as f:
            code, children, blocks = drop_test_code(strip(f.read()))
        self.files[module] = path
        self.code[module] = code
        self.children[module] = []
        for name, block in blocks:
            inner, _, _ = drop_test_code(block)
            self.children[module].append(name)
            self.files[module + (name,)] = path
            self.code[module + (name,)] = inner
            self.children[module + (name,)] = []
        base = os.path.dirname(path)
        stem = os.path.splitext(os.path.basename(path))[0]
        folder = base if stem in ("lib", "main", "mod") else os.path.join(base, stem)
        for child in children:
            for candidate in (os.path.join(folder, child + ".rs"), os.path.join(folder, child, "mod.rs")):
                if os.path.isfile(candidate):
                    self.children[module].append(child)
                    self.load(module + (child,), candidate)
                    break

    def imports(self, module):
        """Names a module imports: name -> (module the path starts in, segments), or None (another crate)."""
        if module in self._imports:
            return self._imports[module]
        names = {}
        self._imports[module] = names
        for m in re.finditer(r"\buse\s+([^;]+);", self.code[module]):
            for path in use_paths(m.group(1)):
                if not path or path[-1] == "*":
                    continue
                alias = re.search(r"\bas\s+(" + IDENT + r")\s*$", m.group(1)) if "{" not in m.group(1) else None
                name = alias.group(1) if alias else (path[-2] if path[-1] == "self" and len(path) > 1 else path[-1])
                first = path[0]
                if first in ("crate", "super", "self") or first in self.children[module]:
                    names[name] = (module, path)
                else:
                    names[name] = None
        return names

    def walk(self, start, segments, depth=0):
        """The file a path reaches: through modules, and through imports to the defining file."""
        module = start
        for i, seg in enumerate(segments):
            if seg == "super":
                module = module[:-1]
            elif seg == "self":
                continue
            elif seg == "crate":
                module = ()
            elif seg in self.children.get(module, []):
                module = module + (seg,)
            else:
                imported = self.imports(module).get(seg, False)
                if imported and depth < 32:
                    origin, path = imported
                    return self.walk(origin, list(path) + list(segments[i + 1 :]), depth + 1)
                break
        return module

    def dependencies(self, module):
        code = self.code[module]
        targets = set()
        scope = {c: module + (c,) for c in self.children[module]}
        for m in re.finditer(r"\buse\s+([^;]+);", code):
            for path in use_paths(m.group(1)):
                if not path:
                    continue
                first = path[0]
                if first in ("crate", "super", "self"):
                    target = self.walk(module, path)
                elif first in scope:
                    target = self.walk(scope[first], path[1:])
                else:
                    continue  # another crate
                targets.add(target)
                # A module brought into scope can be named in code.
                if target in self.files and path[-1] not in ("self", "*"):
                    if target[-1:] == (path[-1],):
                        scope[path[-1]] = target
                elif path[-1] == "self" and target in self.files:
                    scope[path[-2] if len(path) > 1 else target[-1]] = target
        names = "|".join(["crate", "super", "self"] + [re.escape(n) for n in scope])
        body = re.sub(r"\buse\s+[^;]+;", lambda m: " " * len(m.group(0)), code)
        for m in re.finditer(r"(?<![\w:])(" + names + r")((?:::" + IDENT + r")+)", body):
            first, rest = m.group(1), [s for s in m.group(2).split("::") if s]
            if first in ("crate", "super", "self"):
                target = self.walk(module, [first] + rest)
            else:
                target = self.walk(scope[first], rest)
            targets.add(target)
        return {self.files[t] for t in targets if t in self.files} - {self.files[module]}


def cycles(graph):
    """Strongly connected components of two or more nodes (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dirs = sys.argv[1:] or sorted(
        os.path.join(repo, d) for d in os.listdir(repo) if os.path.isfile(os.path.join(repo, d, "src", "lib.rs"))
    )
    found = False
    files = edges = 0
    for d in dirs:
        crate = Crate(d)
        graph = {}
        for m in crate.files:
            graph.setdefault(crate.files[m], set()).update(crate.dependencies(m))
        files += len(graph)
        edges += sum(len(v) for v in graph.values())
        for group in cycles(graph):
            found = True
            members = set(group)
            rel = lambda f: os.path.relpath(f, repo)
            print(f"import circle in {os.path.relpath(d, repo)}: " + ", ".join(rel(m) for m in group))
            for m in group:
                for t in sorted(graph[m] & members):
                    print(f"    {rel(m)} -> {rel(t)}")
    if found:
        return 1
    print(f"no import circles: {files} library files, {edges} dependencies between them, in {len(dirs)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
