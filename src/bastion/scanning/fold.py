"""A small constant-folding evaluator over Python's ``ast``: recover strings built at runtime.

It never executes the scanned code. It understands the usual ways of hiding a name, URL or payload
from a grep: concatenation, ``%`` and ``format`` of constants, f-strings, ``chr(n)`` and chr
arithmetic, ``''.join`` (also over ``map(chr, ...)`` and simple comprehensions), slicing such as
``[::-1]``, ``bytes.fromhex``, base16/32/64/85 decoding, zlib/bz2/lzma decompression (bounded),
``codecs.decode(..., 'rot13')`` and ``.decode()``/``.encode()``. Names resolve through an
environment of simple assignments. Results are bounded in size and work.
"""

from __future__ import annotations

import ast
import base64
import binascii
import bz2
import codecs
import lzma
import zlib
from collections.abc import Callable
from typing import Any

MAX_VALUE = 4 * 1024 * 1024
"""Largest folded string, bytes or list (elements for lists)."""
MAX_STEPS = 200_000

Value = Any
NOTHING = object()
"""Returned when an expression does not fold."""

# Operations that only obfuscation needs: when one of them built a value, the value was hidden.
TRICKS = frozenset({"chr", "join-chr", "reverse", "base64", "hex", "zlib", "rot13", "xor", "bytes-list", "marshal"})


class Folder:
    """Fold expressions of one module. ``lookup(name, node)`` returns the expression bound to a name."""

    def __init__(self, lookup: Callable[[str, ast.AST], ast.expr | None], resolve: Callable[[ast.expr], str],
                 function: Callable[[str], ast.FunctionDef | None] | None = None) -> None:
        self.lookup = lookup
        self.resolve = resolve
        self.function = function
        self._inlining = 0
        self.steps = 0
        self.tricks: set[str] = set()
        self._cache: dict[int, Value] = {}
        self._active: set[int] = set()

    def fold(self, node: ast.AST | None, env: dict[str, Value] | None = None) -> Value:
        """The value of ``node`` or NOTHING. Tricks used are added to ``self.tricks``."""
        if node is None:
            return NOTHING
        key = id(node)
        if env is None and key in self._cache:
            cached, tricks = self._cache[key]
            self.tricks |= tricks
            return cached
        if key in self._active or self.steps > MAX_STEPS:
            return NOTHING
        self.steps += 1
        self._active.add(key)
        saved = self.tricks
        self.tricks = set()
        try:
            value = self._fold(node, env)
        except (ValueError, TypeError, OverflowError, IndexError, KeyError, AttributeError, ZeroDivisionError,
                binascii.Error, zlib.error, lzma.LZMAError, OSError, EOFError, LookupError, RecursionError,
                MemoryError, UnicodeError):
            value = NOTHING
        finally:
            self._active.discard(key)
        if value is not NOTHING and _too_big(value):
            value = NOTHING
        tricks = self.tricks
        self.tricks = saved | tricks
        if env is None:
            self._cache[key] = (value, frozenset(tricks))
        return value

    def fold_str(self, node: ast.AST | None) -> str | None:
        value = self.fold(node)
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                return value.decode("latin-1")
        return value if isinstance(value, str) else None

    def _fold(self, node: ast.AST, env: dict[str, Value] | None) -> Value:
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, (str, bytes, int, float)) else NOTHING
        if isinstance(node, ast.Name):
            if env is not None and node.id in env:
                return env[node.id]
            bound = self.lookup(node.id, node)
            return self.fold(bound) if bound is not None else NOTHING
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                if isinstance(value, ast.Constant):
                    parts.append(str(value.value))
                elif isinstance(value, ast.FormattedValue):
                    inner = self.fold(value.value, env)
                    if inner is NOTHING or value.format_spec is not None:
                        return NOTHING
                    parts.append(str(inner) if not isinstance(inner, bytes) else repr(inner))
                else:
                    return NOTHING
            return "".join(parts)
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self.fold(e, env) for e in node.elts]
            return NOTHING if any(i is NOTHING for i in items) else items
        if isinstance(node, ast.BinOp):
            return self._binop(node, env)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            value = self.fold(node.operand, env)
            return -value if isinstance(value, (int, float)) and not isinstance(value, bool) else NOTHING
        if isinstance(node, ast.Subscript):
            return self._subscript(node, env)
        if isinstance(node, ast.Call):
            return self._call(node, env)
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)):
            return self._comprehension(node, env)
        return NOTHING

    def _binop(self, node: ast.BinOp, env: dict[str, Value] | None) -> Value:
        left = self.fold(node.left, env)
        if left is NOTHING:
            return NOTHING
        right = self.fold(node.right, env)
        if right is NOTHING:
            return NOTHING
        op = node.op
        if isinstance(op, ast.Add):
            if isinstance(left, list) and isinstance(right, list):
                return left + right
            if type(left) is type(right) or (isinstance(left, (int, float)) and isinstance(right, (int, float))):
                return left + right
            return NOTHING
        if isinstance(op, ast.Mult):
            if isinstance(left, (str, bytes, list)) and isinstance(right, int):
                return left * right if len(left) * max(right, 0) <= MAX_VALUE else NOTHING
            if isinstance(left, (int, float)) and isinstance(right, (int, float)):
                return left * right
            return NOTHING
        if isinstance(op, ast.Mod):
            if isinstance(left, (str, bytes)):
                args = tuple(right) if isinstance(right, list) else right
                return left % args
            if isinstance(left, int) and isinstance(right, int):
                return left % right
            return NOTHING
        if not (isinstance(left, int) and isinstance(right, int)):
            return NOTHING
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.BitXor):
            self.tricks.add("xor")
            return left ^ right
        if isinstance(op, ast.FloorDiv):
            return left // right
        if isinstance(op, ast.LShift) and right < 64:
            return left << right
        if isinstance(op, ast.RShift):
            return left >> right
        if isinstance(op, ast.BitAnd):
            return left & right
        if isinstance(op, ast.BitOr):
            return left | right
        return NOTHING

    def _subscript(self, node: ast.Subscript, env: dict[str, Value] | None) -> Value:
        value = self.fold(node.value, env)
        if not isinstance(value, (str, bytes, list)):
            return NOTHING
        index = node.slice
        if isinstance(index, ast.Slice):
            parts = [self.fold(p, env) if p is not None else None for p in (index.lower, index.upper, index.step)]
            if any(p is NOTHING or not (p is None or isinstance(p, int)) for p in parts):
                return NOTHING
            if parts[2] is not None and parts[2] < 0:
                self.tricks.add("reverse")
            return value[slice(*parts)]
        key = self.fold(index, env)
        return value[key] if isinstance(key, int) else NOTHING

    def _comprehension(self, node: ast.ListComp | ast.GeneratorExp, env: dict[str, Value] | None) -> Value:
        if len(node.generators) != 1:
            return NOTHING
        gen = node.generators[0]
        if not isinstance(gen.target, ast.Name) or gen.ifs or gen.is_async:
            return NOTHING
        source = self.fold(gen.iter, env)
        if isinstance(source, (str, bytes)):
            source = list(source)
        if not isinstance(source, list) or len(source) > MAX_VALUE // 8:
            return NOTHING
        out = []
        inner = dict(env or {})
        for item in source:
            inner[gen.target.id] = item
            value = self.fold(node.elt, inner)
            if value is NOTHING:
                return NOTHING
            out.append(value)
            self.steps += 1
            if self.steps > MAX_STEPS:
                return NOTHING
        return out

    def _call(self, node: ast.Call, env: dict[str, Value] | None) -> Value:
        func = node.func
        if node.keywords and not all(k.arg in ("encoding", "errors") for k in node.keywords):
            if not (isinstance(func, ast.Attribute) and func.attr == "format"):
                return NOTHING
        # Methods of a folded value: "".join(...), s.decode(), s[::-1].replace(...), "{}".format(...)
        if isinstance(func, ast.Attribute):
            method = func.attr
            receiver = self.fold(func.value, env)
            if receiver is not NOTHING and isinstance(receiver, (str, bytes)):
                return self._method(receiver, method, node, env)
        name = self.resolve(func)
        args = [self.fold(a, env) for a in node.args]
        if any(a is NOTHING for a in args):
            if name in ("map",) or not args:
                pass
            else:
                return NOTHING
        handler = _FUNCTIONS.get(name)
        if handler is None and isinstance(func, ast.Name) and self.function is not None:
            definition = self.function(func.id)
            if definition is not None and not any(a is NOTHING for a in args):
                return self._inline(definition, args)
        if handler is None:
            if name == "map" and len(node.args) == 2:
                fname = self.resolve(node.args[0])
                seq = self.fold(node.args[1], env)
                if isinstance(seq, (str, bytes)):
                    seq = list(seq)
                if fname == "chr" and isinstance(seq, list):
                    self.tricks.add("chr")
                    return [chr(int(x)) for x in seq]
                if fname in ("int", "str", "ord") and isinstance(seq, list):
                    return [_FUNCTIONS[fname](self, [x]) for x in seq]
            return NOTHING
        return handler(self, args)

    def _inline(self, definition: ast.FunctionDef, args: list[Value]) -> Value:
        """A module helper made of simple assignments and one return (``def b64(s): return b64decode(s)``)."""
        params = [a.arg for a in definition.args.args]
        if len(params) != len(args) or self._inlining > 3:
            return NOTHING
        env: dict[str, Value] = dict(zip(params, args))
        self._inlining += 1
        try:
            for statement in definition.body:
                if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                    continue
                if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and \
                        isinstance(statement.targets[0], ast.Name):
                    value = self.fold(statement.value, env)
                    if value is NOTHING:
                        return NOTHING
                    env[statement.targets[0].id] = value
                    continue
                if isinstance(statement, ast.Return):
                    return self.fold(statement.value, env)
                return NOTHING
            return NOTHING
        finally:
            self._inlining -= 1

    def _method(self, receiver: str | bytes, method: str, node: ast.Call, env: dict[str, Value] | None) -> Value:
        args = [self.fold(a, env) for a in node.args]
        if method == "format":
            kwargs = {k.arg: self.fold(k.value, env) for k in node.keywords if k.arg}
            if any(a is NOTHING for a in args) or any(v is NOTHING for v in kwargs.values()):
                return NOTHING
            return receiver.format(*args, **kwargs) if isinstance(receiver, str) else NOTHING
        if any(a is NOTHING for a in args):
            return NOTHING
        if method == "join" and len(args) == 1:
            items = args[0]
            if isinstance(items, (str, bytes)):
                items = list(items) if isinstance(items, str) else [bytes([b]) for b in items]
            if not isinstance(items, list):
                return NOTHING
            if isinstance(receiver, str) and all(isinstance(i, str) for i in items):
                if len(items) > 8 and all(len(i) == 1 for i in items):
                    self.tricks.add("join-chr")
                return receiver.join(items)
            if isinstance(receiver, bytes) and all(isinstance(i, bytes) for i in items):
                return receiver.join(items)
            return NOTHING
        if method == "decode":
            if not isinstance(receiver, bytes):
                return NOTHING
            encoding = args[0] if args and isinstance(args[0], str) else "utf-8"
            if encoding.replace("-", "_").lower() in ("rot13", "rot_13"):
                return NOTHING
            if encoding.lower() in ("hex", "base64", "zlib", "bz2"):
                return _codecs_decode(self, [receiver, encoding])
            return receiver.decode(encoding, "replace")
        if method == "encode":
            if not isinstance(receiver, str):
                return NOTHING
            encoding = args[0] if args and isinstance(args[0], str) else "utf-8"
            if encoding.replace("-", "_").lower() in ("rot13", "rot_13"):
                self.tricks.add("rot13")
                return codecs.encode(receiver, "rot13")
            return receiver.encode(encoding, "replace")
        simple = {"upper", "lower", "strip", "lstrip", "rstrip", "replace", "split", "title", "capitalize",
                  "swapcase", "zfill", "center", "ljust", "rjust", "removeprefix", "removesuffix", "casefold"}
        if method in simple:
            return getattr(receiver, method)(*args)
        if method == "fromhex" and isinstance(receiver, str):
            return NOTHING
        return NOTHING


def _too_big(value: Value) -> bool:
    return isinstance(value, (str, bytes, list)) and len(value) > MAX_VALUE


def _as_bytes(value: Value) -> bytes:
    if isinstance(value, str):
        return value.encode("latin-1", "ignore") if value.isascii() else value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise TypeError("not bytes")


def _b64(folder: Folder, args: list[Value], decoder: Callable[[bytes], bytes]) -> Value:
    folder.tricks.add("base64")
    return decoder(_as_bytes(args[0]))


def _decompress(folder: Folder, args: list[Value], kind: str) -> Value:
    folder.tricks.add("zlib")
    data = _as_bytes(args[0])
    if kind == "zlib":
        wbits = args[1] if len(args) > 1 and isinstance(args[1], int) else zlib.MAX_WBITS
        out = zlib.decompressobj(wbits).decompress(data, MAX_VALUE)
    elif kind == "bz2":
        out = bz2.BZ2Decompressor().decompress(data, MAX_VALUE)
    elif kind == "gzip":
        out = zlib.decompressobj(31).decompress(data, MAX_VALUE)
    else:
        out = lzma.LZMADecompressor().decompress(data, MAX_VALUE)
    return out


def _codecs_decode(folder: Folder, args: list[Value]) -> Value:
    if len(args) < 2 or not isinstance(args[1], str):
        return args[0].decode("utf-8", "replace") if len(args) == 1 and isinstance(args[0], bytes) else NOTHING
    encoding = args[1].replace("-", "_").lower()
    if encoding in ("rot13", "rot_13"):
        folder.tricks.add("rot13")
        return codecs.decode(str(args[0]), "rot13")
    if encoding in ("hex", "hex_codec"):
        folder.tricks.add("hex")
        return binascii.unhexlify(_as_bytes(args[0]))
    if encoding in ("base64", "base64_codec"):
        folder.tricks.add("base64")
        return base64.b64decode(_as_bytes(args[0]))
    if encoding in ("zlib", "zlib_codec"):
        return _decompress(folder, [args[0]], "zlib")
    if encoding in ("bz2", "bz2_codec"):
        return _decompress(folder, [args[0]], "bz2")
    if isinstance(args[0], bytes):
        return args[0].decode(args[1], "replace")
    return NOTHING


def _chr(folder: Folder, args: list[Value]) -> Value:
    folder.tricks.add("chr")
    return chr(int(args[0]))


def _bytes(folder: Folder, args: list[Value]) -> Value:
    if len(args) == 1 and isinstance(args[0], list) and all(isinstance(x, int) for x in args[0]):
        folder.tricks.add("bytes-list")
        return bytes(args[0])
    if len(args) >= 1 and isinstance(args[0], str):
        return args[0].encode(args[1] if len(args) > 1 and isinstance(args[1], str) else "utf-8", "replace")
    if len(args) == 1 and isinstance(args[0], bytes):
        return args[0]
    return NOTHING


def _fromhex(folder: Folder, args: list[Value]) -> Value:
    folder.tricks.add("hex")
    value = args[0]
    return bytes.fromhex(value) if isinstance(value, str) else binascii.unhexlify(_as_bytes(value))


def _str(folder: Folder, args: list[Value]) -> Value:
    if len(args) >= 2 and isinstance(args[0], bytes):
        return args[0].decode(args[1], "replace")
    if len(args) == 1 and isinstance(args[0], (str, int, float)):
        return str(args[0])
    return NOTHING


def _reversed(folder: Folder, args: list[Value]) -> Value:
    folder.tricks.add("reverse")
    value = args[0]
    return list(reversed(value)) if isinstance(value, (str, list)) else NOTHING


def _ord(folder: Folder, args: list[Value]) -> Value:
    return ord(args[0]) if isinstance(args[0], str) and len(args[0]) == 1 else NOTHING


def _int(folder: Folder, args: list[Value]) -> Value:
    if len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], int):
        return int(args[0], args[1])
    return int(args[0]) if len(args) == 1 and isinstance(args[0], (str, int, float)) else NOTHING


def _list(folder: Folder, args: list[Value]) -> Value:
    value = args[0] if args else []
    return list(value) if isinstance(value, (str, list, bytes)) else NOTHING


_FUNCTIONS: dict[str, Callable[[Folder, list[Value]], Value]] = {
    "chr": _chr,
    "ord": _ord,
    "int": _int,
    "str": _str,
    "bytes": _bytes,
    "bytearray": _bytes,
    "list": _list,
    "tuple": _list,
    "reversed": _reversed,
    "bytes.fromhex": _fromhex,
    "bytearray.fromhex": _fromhex,
    "binascii.unhexlify": _fromhex,
    "binascii.a2b_hex": _fromhex,
    "base64.b16decode": _fromhex,
    "base64.b64decode": lambda f, a: _b64(f, a, lambda d: base64.b64decode(d + b"=" * (-len(d) % 4))),
    "base64.decodebytes": lambda f, a: _b64(f, a, base64.decodebytes),
    "base64.decodestring": lambda f, a: _b64(f, a, base64.decodebytes),
    "base64.standard_b64decode": lambda f, a: _b64(f, a, base64.standard_b64decode),
    "base64.urlsafe_b64decode": lambda f, a: _b64(f, a, lambda d: base64.urlsafe_b64decode(d + b"=" * (-len(d) % 4))),
    "base64.b32decode": lambda f, a: _b64(f, a, base64.b32decode),
    "base64.b85decode": lambda f, a: _b64(f, a, base64.b85decode),
    "base64.a85decode": lambda f, a: _b64(f, a, base64.a85decode),
    "binascii.a2b_base64": lambda f, a: _b64(f, a, binascii.a2b_base64),
    "zlib.decompress": lambda f, a: _decompress(f, a, "zlib"),
    "bz2.decompress": lambda f, a: _decompress(f, a, "bz2"),
    "gzip.decompress": lambda f, a: _decompress(f, a, "gzip"),
    "lzma.decompress": lambda f, a: _decompress(f, a, "lzma"),
    "codecs.decode": _codecs_decode,
}
