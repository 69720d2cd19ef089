"""serva/ uses other packages through their public APIs only: the AST of every module is read and
each offender is named —
- an import of ctypes (calls into C libraries with signatures nobody checks);
- an import of a private name from another package (`from werkzeug._internal import …`,
  `from x import _y`);
- a read or write of a private attribute (`_x`, not a dunder) of something from another
  package: a module, or a name assigned from one (`sqla = SQLAlchemy()`, then `sqla._x`);
- a class deriving from another package's class that overrides one of its private methods or
  attributes, or defines a name-mangled `_Cls__x`.
Private names are the ones a library may change in any release without a word. The few
underscore names that are documented API are listed in ALLOWED, each with its reason.
"""
import ast
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "serva"

ALLOWED = {
    # werkzeug.local.LocalProxy's documented way to the object behind a proxy (current_app,
    # request), e.g. to hand the real app to another thread.
    "_get_current_object",
    # Named tuples and SQLAlchemy's Row: documented public API, underscored only so that
    # they cannot clash with a field or column name.
    "_asdict", "_fields", "_mapping", "_replace", "_make", "_tuple", "_t",
    # os._exit: the documented exit without clean-up, for a forked child.
    "_exit",
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _mangled(name: str) -> bool:
    return re.fullmatch(r"_[A-Za-z0-9]\w*?__\w+", name) is not None and not name.endswith("__")


def _root(node):
    """The Name at the bottom of an expression like a.b(c)[d].e, or None."""
    while True:
        if isinstance(node, ast.Attribute):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Name):
            return node
        else:
            return None


def _dotted(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


@dataclass
class Module:
    path: str
    tree: ast.AST
    external: dict = field(default_factory=dict)  # name -> where it comes from (dotted)
    offenders: list = field(default_factory=list)

    def report(self, node, kind: str, text: str) -> None:
        self.offenders.append((kind, f"{self.path}:{node.lineno}: {text}"))


def _is_ours(module: str | None, level: int) -> bool:
    return level > 0 or module is None or module.split(".")[0] == PACKAGE


def _bind_imports(module: Module) -> None:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    continue
                if alias.asname:
                    module.external[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    module.external[top] = top
        elif isinstance(node, ast.ImportFrom) and not _is_ours(node.module, node.level):
            for alias in node.names:
                module.external[alias.asname or alias.name] = f"{node.module}.{alias.name}"


def _bind_assignments(module: Module) -> None:
    """Names assigned from another package's objects are that package's objects too."""
    for _ in range(3):  # chains: a = lib.X(); b = a.y
        for node in ast.walk(module.tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                root = _root(node.value)
                if root is None or root.id not in module.external:
                    continue
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id not in module.external:
                        module.external[target.id] = f"{module.external[root.id]}(…)"


def _check_imports(module: Module) -> None:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ctypes":
                    module.report(node, "ctypes", f"imports {alias.name}")
                elif alias.name.split(".")[0] != PACKAGE and any(
                        _private(part) for part in alias.name.split(".")):
                    module.report(node, "private import", f"imports the private module {alias.name}")
        elif isinstance(node, ast.ImportFrom) and not _is_ours(node.module, node.level):
            if node.module.split(".")[0] == "ctypes":
                module.report(node, "ctypes", f"imports from {node.module}")
            elif any(_private(part) for part in node.module.split(".")):
                module.report(node, "private import",
                              f"imports from the private module {node.module}")
            for alias in node.names:
                if _private(alias.name) and alias.name not in ALLOWED:
                    module.report(node, "private import",
                                  f"imports the private name {alias.name} from {node.module}")
        elif (isinstance(node, ast.Call) and _dotted(node.func) in ("__import__",
                                                                   "importlib.import_module")
              and node.args and isinstance(node.args[0], ast.Constant)
              and str(node.args[0].value).split(".")[0] == "ctypes"):
            module.report(node, "ctypes", f"imports {node.args[0].value} by name")


def _check_attributes(module: Module) -> None:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in ALLOWED:
            root = _root(node.value)
            if root is not None and root.id in module.external:
                verb = "writes" if isinstance(node.ctx, ast.Store) else "reads"
                module.report(node, "private attribute",
                              f"{verb} the private {node.attr} of {module.external[root.id]} "
                              f"(through `{root.id}`)")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and _private(node.args[1].value)
              and node.args[1].value not in ALLOWED):
            root = _root(node.args[0])
            if root is not None and root.id in module.external:
                module.report(node, "private attribute",
                              f"{node.func.id}() of the private {node.args[1].value} of "
                              f"{module.external[root.id]} (through `{root.id}`)")


def _resolve(dotted: str):
    """The object a dotted name of another package names, or None when it cannot be found."""
    parts = dotted.replace("(…)", "").split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:]:
                found = getattr(found, part)
        except AttributeError:
            return None
        return found
    return None


def _external_bases(module: Module, cls: ast.ClassDef) -> list:
    bases = []
    for base in cls.bases:
        dotted = _dotted(base)
        if dotted and dotted.split(".")[0] in module.external:
            head, _, rest = dotted.partition(".")
            bases.append(module.external[head] + (f".{rest}" if rest else ""))
    return bases


def _check_overrides(module: Module) -> None:
    for cls in ast.walk(module.tree):
        if not isinstance(cls, ast.ClassDef):
            continue
        bases = _external_bases(module, cls)
        if not bases:
            continue
        resolved = [_resolve(base) for base in bases]
        for node in cls.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            else:
                continue
            for name in names:
                if not _private(name) or name in ALLOWED:
                    continue
                if _mangled(name):
                    module.report(node, "private override",
                                  f"{cls.name} defines the name-mangled {name} (a private name "
                                  f"of {', '.join(bases)})")
                elif any(base is None or hasattr(base, name) for base in resolved):
                    module.report(node, "private override",
                                  f"{cls.name} overrides the private {name} of {', '.join(bases)}")
        own = _own_names(cls)
        for node in ast.walk(cls):  # super()._x / self._x: a private member of the base
            if not (isinstance(node, ast.Attribute) and _private(node.attr)
                    and node.attr not in ALLOWED):
                continue
            if isinstance(node.value, ast.Call) and _dotted(node.value.func) == "super":
                module.report(node, "private override",
                              f"{cls.name} uses the private super().{node.attr} of "
                              f"{', '.join(bases)}")
            elif (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                  and (node.attr not in own or _mangled(node.attr))):
                module.report(node, "private override",
                              f"{cls.name} uses the private {node.attr} of {', '.join(bases)}")


def _own_names(cls: ast.ClassDef) -> set:
    """What a class defines itself: methods, class attributes, self.x it assigns."""
    names = set()
    for node in ast.walk(cls):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            names.add(node.attr)
    return names


def analyse(path: str, source: str) -> list:
    """[(kind, "path:line: what")] of one module's source."""
    module = Module(path, ast.parse(source, path))
    _bind_imports(module)
    _bind_assignments(module)
    _check_imports(module)
    _check_attributes(module)
    _check_overrides(module)
    return module.offenders


def _all_offenders() -> list:
    found = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        found += analyse(str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))
    return found


@pytest.fixture(scope="module")
def offenders():
    return _all_offenders()


@pytest.mark.parametrize("kind", ["ctypes", "private import", "private attribute",
                                  "private override"])
def test_serva_uses_other_packages_through_their_public_api(offenders, kind):
    named = [text for found_kind, text in offenders if found_kind == kind]
    assert not named, f"{len(named)} offender(s), {kind}:\n" + "\n".join(named)


def test_the_check_finds_each_kind_of_offence_and_lets_the_public_api_pass():
    source = '''
import ctypes.util
import logging
from flask import current_app, request
from flask.sessions import SecureCookieSessionInterface
from flask_sqlalchemy import SQLAlchemy
from limits.storage import MemoryStorage
from werkzeug._internal import _log
from werkzeug.routing import _private_helper
from . import db
from .db import _ours

sqla = SQLAlchemy()
logging._srcfile = None
sqla._teardown_session
setattr(logging, "_lock", None)
request._get_current_object()
db._ours_to_touch
logging.getLogger("x").info("fine")


class Storage(MemoryStorage):
    def _MemoryStorage__schedule_expiry(self):
        super()._MemoryStorage__schedule_expiry()

    def _own_helper(self):
        self._mine = 1
        return self._mine, self._own_helper

    def count(self):
        self._MemoryStorage__schedule_expiry()
        return self.expirations, self._base_private

    def incr(self, key, expiry):
        return super().incr(key, expiry)


class Sessions(SecureCookieSessionInterface):
    def get_signing_serializer(self, app):
        return super().get_signing_serializer(app)


class LoggingSubclass(logging.Handler):
    def _at_fork_reinit(self):
        pass
'''
    found = analyse("example.py", source)
    by_line = {(kind, int(text.split(":")[1])) for kind, text in found}
    lines = source.splitlines()

    def line_of(fragment):
        return next(number for number, text in enumerate(lines, 1) if fragment in text)

    expected = {("ctypes", line_of("import ctypes.util")),
                ("private import", line_of("werkzeug._internal")),
                ("private import", line_of("_private_helper")),
                ("private attribute", line_of("logging._srcfile")),
                ("private attribute", line_of("sqla._teardown_session")),
                ("private attribute", line_of('setattr(logging, "_lock"')),
                ("private override", line_of("def _MemoryStorage__schedule_expiry")),
                ("private override", line_of("super()._MemoryStorage__schedule_expiry")),
                ("private override", line_of("        self._MemoryStorage__schedule_expiry()")),
                ("private override", line_of("self._base_private")),
                ("private override", line_of("def _at_fork_reinit"))}
    assert by_line == expected, found
