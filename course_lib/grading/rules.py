"""The rule for graded code: what the answer cells may import and call (docs/grading.md).

The grader runs the student's answer cells (and the cells the student added) in a
sandboxed worker that has no ``course_lib`` and cannot read its files, so the reference
implementations do not exist there. This rule is the second barrier, checked on the
trusted side from the syntax tree before a cell is run, and by the notebooks' own test
cells, so a student learns of it while working. A cell that breaks it is not run; the
functions it would define are missing and their tests fail with :func:`message`.

The rule (stated in every assignment's introduction):

* ``import`` / ``from ... import`` only of :data:`ALLOWED_IMPORTS` (torch, numpy, math,
  random, ... : nothing that reaches course_lib, threads or processes (threading,
  _thread, multiprocessing, concurrent), C code (ctypes), the import machinery
  (importlib), the interpreter (sys, gc, inspect, builtins), signals, files or sockets);
* no use of the built-ins in :data:`FORBIDDEN_NAMES` (exec, eval, compile, __import__,
  getattr, globals, open, ...);
* no name that starts with two underscores (``__builtins__``) and no attribute that starts
  with one (``f.__globals__``, ``torch._C``), except ``__init__``;
* no attribute in :data:`FORBIDDEN_ATTRIBUTES` (``torch.load``, ``torch.hub``,
  ``torch.utils``, ``torch.jit``, ...: ways to load or compile code).
"""

from __future__ import annotations

import ast

__all__ = ["ALLOWED_IMPORTS", "FORBIDDEN_NAMES", "FORBIDDEN_ATTRIBUTES", "violations",
           "message", "RULE_TEXT"]

#: Top-level modules graded code may import.
ALLOWED_IMPORTS = frozenset({
    "torch", "numpy", "math", "cmath", "random", "statistics", "itertools", "functools",
    "operator", "collections", "heapq", "bisect", "fractions", "decimal", "typing",
    "dataclasses", "copy", "string", "re", "time", "warnings", "enum", "abc", "numbers",
    "__future__",
})

#: Built-ins that run, find or load code or reach the interpreter's namespaces.
FORBIDDEN_NAMES = frozenset({
    "exec", "eval", "compile", "__import__", "globals", "locals", "vars", "getattr",
    "setattr", "delattr", "open", "breakpoint", "input", "help", "memoryview",
    "get_ipython", "exit", "quit",
})

#: Attributes (of torch and numpy) that load, compile or serialise code.
FORBIDDEN_ATTRIBUTES = frozenset({
    "load", "hub", "utils", "jit", "ops", "classes", "library", "package", "compile",
    "multiprocessing", "distributed", "ctypeslib", "fromfile", "memmap",
})

RULE_TEXT = (
    "graded code (your answer cells and the cells you added) may import only "
    + ", ".join(sorted(ALLOWED_IMPORTS - {"__future__"}))
    + "; it may not import course_lib, threads, processes, ctypes or importlib, nor use "
    "exec, eval, compile, __import__, getattr, globals or open, nor attributes that start "
    "with an underscore")


def violations(source: str) -> list[str]:
    """What in ``source`` breaks the rule, as ``"line N: ..."`` strings (empty: allowed).

    A syntax error is not a violation (the cell fails when it runs, as it would anyway).
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    found: list[str] = []

    def add(node: ast.AST, what: str) -> None:
        found.append(f"line {getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root not in ALLOWED_IMPORTS:
                    add(node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            root = (node.module or "").split(".")[0]
            if node.level or root not in ALLOWED_IMPORTS:
                add(node, f"from {'.' * node.level}{node.module or ''} import ...")
        elif isinstance(node, ast.Name):
            if node.id in FORBIDDEN_NAMES:
                add(node, f"{node.id}")
            elif node.id.startswith("__"):
                add(node, f"the name {node.id}")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_") and node.attr != "__init__":
                add(node, f"the attribute .{node.attr}")
            elif node.attr in FORBIDDEN_ATTRIBUTES:
                add(node, f"the attribute .{node.attr}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name.startswith("__") and node.name != "__init__":
                add(node, f"the definition {node.name}")
    return found


def message(where: str, found: list[str]) -> str:
    """The message a student gets for a cell that breaks the rule."""
    shown = "; ".join(found[:3]) + (" ..." if len(found) > 3 else "")
    return (f"{where} was not run by the grader: it uses {shown}. The rule: {RULE_TEXT}. "
            f"Write the function yourself with torch and the standard modules listed.")
