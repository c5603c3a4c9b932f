"""The expression language of streaming pipelines: Map expressions and Filter values.

An expression is never evaluated by Python. It is tokenized, parsed by a small
recursive-descent parser into an AST made of a fixed set of node types, type-checked
against the input schema of its operator and compiled to a SQL expression tree (sqlglot) in
which every field is a quoted identifier and every literal is re-emitted from its parsed
value; the engine renders the tree in its dialect.
Anything outside the grammar (a statement separator, a comment, a subquery, a function that
is not on the allow-list) is refused with a message naming its position. Expressions are at
most :data:`MAX_LENGTH` characters and :data:`MAX_DEPTH` levels deep.

Grammar (keywords and function names are case-insensitive)::

    expression := or
    or         := and ("OR" and)*
    and        := not ("AND" not)*
    not        := "NOT" not | comparison
    comparison := additive [ ("=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">=") additive
                           | "IS" ["NOT"] "NULL"
                           | ["NOT"] "IN" "(" expression ("," expression)* ")" ]
    additive   := term (("+" | "-") term)*
    term       := unary (("*" | "/" | "%") unary)*
    unary      := "-" unary | primary
    primary    := number | string | "TRUE" | "FALSE" | "NULL"
                | function "(" [expression ("," expression)*] ")"
                | field ("." key | "[" (integer | string) "]")*
                | "CASE" ("WHEN" expression "THEN" expression)+ ["ELSE" expression] "END"
                | "(" expression ")"
    field      := name | "`" any characters except ` and control characters "`"
    name, key  := letter or "_", then letters, digits or "_"
    string     := "'" characters "'"      (two quotes '' stand for one)
    number     := digits ["." digits] [("e" | "E") ["+" | "-"] digits]

A field followed by ``.key`` or ``[0]`` reads a value out of a MAP, ARRAY or JSON STRING
field (``payload.sensor.temp``, ``items[0]``, ``payload['odd key']``); the value read is a
STRING (NULL when the path does not exist), to be converted with ``to_double`` and friends.
Words of SQL statements (SELECT, FROM, DROP …) are refused as names; a field really named so
is written in backquotes.

Types are those of :class:`FieldType`. Arithmetic needs numbers (``/`` always gives a
DOUBLE and gives NULL when dividing by zero; integer ``+ - *`` give a LONG); comparisons need
two numbers or two values of one type; AND, OR, NOT and the branches' conditions need
BOOLEAN. A field of a source that declares no fields has an unknown type, accepted wherever
a value is.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from sqlglot import exp

MAX_LENGTH = 4096
"""The longest expression accepted, in characters."""
MAX_DEPTH = 48
"""The deepest nesting accepted (parentheses, operators, function arguments)."""
MAX_STRING = 1024
"""The longest string literal or quoted field name accepted."""
MAX_ARGS = 16
AGGREGATES = frozenset({"sum", "count", "avg", "min", "max", "first", "last"})


class FieldType(StrEnum):
    """The types a field of a streaming pipeline can have."""

    STRING = "STRING"
    INTEGER = "INTEGER"
    LONG = "LONG"
    FLOAT = "FLOAT"
    DOUBLE = "DOUBLE"
    BOOLEAN = "BOOLEAN"
    TIMESTAMP = "TIMESTAMP"
    MAP = "MAP"
    ARRAY = "ARRAY"


class Loose(StrEnum):
    """Types of values that are not fields: unknown (``ANY``) and the ``NULL`` literal."""

    ANY = "ANY"
    NULL = "NULL"


ValueType = FieldType | Loose

NUMERIC: tuple[FieldType, ...] = (
    FieldType.INTEGER,
    FieldType.LONG,
    FieldType.FLOAT,
    FieldType.DOUBLE,
)
INTEGRAL = (FieldType.INTEGER, FieldType.LONG)
ORDERED = (*NUMERIC, FieldType.STRING, FieldType.TIMESTAMP)
JSON_HOLDERS = (FieldType.MAP, FieldType.ARRAY, FieldType.STRING)

SQL_TYPES: dict[FieldType, str] = {
    FieldType.STRING: "VARCHAR",
    FieldType.INTEGER: "INT",
    FieldType.LONG: "BIGINT",
    FieldType.FLOAT: "FLOAT",
    FieldType.DOUBLE: "DOUBLE",
    FieldType.BOOLEAN: "BOOLEAN",
    FieldType.TIMESTAMP: "TIMESTAMP",
    FieldType.MAP: "JSON",
    FieldType.ARRAY: "JSON",
}
"""The SQL type (sqlglot's name) holding each type: MAP and ARRAY values are JSON."""


def is_loose(kind: ValueType) -> bool:
    return isinstance(kind, Loose)


def is_numeric(kind: ValueType) -> bool:
    return kind in NUMERIC or is_loose(kind)


def wider(left: ValueType, right: ValueType) -> ValueType:
    """The numeric type holding both (``ANY`` if either is unknown)."""
    if left == Loose.ANY or right == Loose.ANY:
        return Loose.ANY
    if left == Loose.NULL:
        return right
    if right == Loose.NULL:
        return left
    assert isinstance(left, FieldType)
    assert isinstance(right, FieldType)
    return max(left, right, key=NUMERIC.index)


def unify(left: ValueType, right: ValueType) -> ValueType | None:
    """The type of a value that is either ``left`` or ``right``; None when they clash."""
    if left == right:
        return left
    if left == Loose.NULL:
        return right
    if right == Loose.NULL:
        return left
    if Loose.ANY in (left, right):
        return Loose.ANY
    if left in NUMERIC and right in NUMERIC:
        return wider(left, right)
    return None


def fits(value: ValueType, declared: FieldType) -> bool:
    """Whether a value of type ``value`` can be stored in a field declared ``declared``.

    Numbers convert to any number type, and every value converts to STRING.
    """
    if is_loose(value) or value == declared or declared == FieldType.STRING:
        return True
    return value in NUMERIC and declared in NUMERIC


def comparable(left: ValueType, right: ValueType, ordering: bool) -> bool:
    """Whether two values can be compared (``ordering``: with < > <= >= as well as =)."""
    if is_loose(left) or is_loose(right):
        return True
    if left in NUMERIC and right in NUMERIC:
        return True
    if left != right or left in (FieldType.MAP, FieldType.ARRAY):
        return False
    return not ordering or left in ORDERED


class ExpressionError(ValueError):
    """An expression that does not parse or does not type-check.

    ``position`` is 1-based (0 when the error is about the whole expression); ``part`` names
    the piece of a condition the error is about (``leftValue`` / ``rightValue``) if any.
    """

    def __init__(self, message: str, position: int = 0, part: str | None = None) -> None:
        where = f" at position {position}" if position else ""
        super().__init__(message + where)
        self.message = message
        self.position = position
        self.part = part


# --------------------------------------------------------------------------- tokens

KEYWORDS = frozenset(
    ("AND", "OR", "NOT", "IN", "IS", "NULL", "TRUE", "FALSE", "CASE", "WHEN", "THEN", "ELSE")
) | {"END"}
_STATEMENTS = ("SELECT", "FROM", "WHERE", "UNION", "JOIN", "DROP", "INSERT", "DELETE", "CREATE")
SQL_WORDS = frozenset(_STATEMENTS) | {
    *("ALTER", "ATTACH", "DETACH", "COPY", "PRAGMA", "INSTALL", "LOAD", "EXECUTE", "INTO", "CAST")
}
"""Words of SQL statements: refused as names, so that a query never looks like a field."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_OPERATORS = ("==", "!=", "<>", "<=", ">=", "=", "<", ">", "+", "-", "*", "/", "%")
_PUNCTUATION = "(),.[]"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Token:
    kind: str  # "number", "string", "name", "quoted", "op", "end"
    text: str
    pos: int  # 1-based
    value: int | float | str | None = None

    def is_keyword(self, *words: str) -> bool:
        return self.kind == "name" and self.text.upper() in words

    def is_op(self, *ops: str) -> bool:
        return self.kind == "op" and self.text in ops

    def describe(self) -> str:
        return "the end of the expression" if self.kind == "end" else f"'{self.text[:40]}'"


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; refuses any character the language has no use for."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char in " \t\r\n":
            i += 1
            continue
        pos = i + 1
        number = _NUMBER.match(text, i)
        if number and (char.isdigit() or char == "."):
            raw = number.group(0)
            after = text[number.end() : number.end() + 1]
            if after and (after.isalnum() or after == "_"):
                raise ExpressionError(f"malformed number '{raw}{after}'", pos)
            value: int | float
            if number.group(2) or number.group(3) or raw.startswith("."):
                value = float(raw)
                if value in (float("inf"), float("-inf")):
                    raise ExpressionError(f"number '{raw[:40]}' is out of range", pos)
            else:
                value = int(raw)
                if value >= 2**63:
                    raise ExpressionError(f"integer '{raw[:40]}' is out of range", pos)
            tokens.append(Token("number", raw, pos, value))
            i = number.end()
        elif char == "'":
            j, parts = i + 1, []
            while True:
                end = text.find("'", j)
                if end < 0:
                    raise ExpressionError("string is not closed (a ' is missing)", pos)
                parts.append(text[j:end])
                if text[end + 1 : end + 2] == "'":
                    parts.append("'")
                    j = end + 2
                    continue
                break
            value_text = "".join(parts)
            if len(value_text) > MAX_STRING:
                raise ExpressionError(f"string is longer than {MAX_STRING} characters", pos)
            if "\x00" in value_text:
                raise ExpressionError("string contains a NUL character", pos)
            tokens.append(Token("string", text[i : end + 1], pos, value_text))
            i = end + 1
        elif char == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise ExpressionError("quoted field name is not closed (a ` is missing)", pos)
            name = text[i + 1 : end]
            if not name or len(name) > 128 or _CONTROL.search(name):
                raise ExpressionError(
                    "a quoted field name has 1-128 characters and no control characters", pos
                )
            tokens.append(Token("quoted", text[i : end + 1], pos, name))
            i = end + 1
        elif _NAME.match(text, i):
            match = _NAME.match(text, i)
            assert match is not None
            tokens.append(Token("name", match.group(0), pos, match.group(0)))
            i = match.end()
        else:
            op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
            if op is None and char in _PUNCTUATION:
                op = char
            if op is None:
                shown = repr(char) if not char.isprintable() else f"'{char}'"
                hint = " (one expression, no statements)" if char == ";" else ""
                raise ExpressionError(f"unexpected character {shown}{hint}", pos)
            tokens.append(Token("op", op, pos, op))
            i += len(op)
    tokens.append(Token("end", "", n + 1))
    return tokens


# --------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class Literal:
    value: int | float | str | bool | None
    pos: int


@dataclass(frozen=True)
class FieldRef:
    """A field of the input, with an optional path into its JSON value."""

    name: str
    keys: tuple[str | int, ...]
    pos: int


@dataclass(frozen=True)
class Unary:
    op: str  # "-" or "NOT"
    operand: Node
    pos: int


@dataclass(frozen=True)
class Binary:
    op: str  # arithmetic or comparison operator, normalized ("=" / "<>")
    left: Node
    right: Node
    pos: int


@dataclass(frozen=True)
class Logical:
    op: str  # "AND" or "OR"
    items: tuple[Node, ...]
    pos: int


@dataclass(frozen=True)
class IsNull:
    operand: Node
    negated: bool
    pos: int


@dataclass(frozen=True)
class InList:
    operand: Node
    items: tuple[Node, ...]
    negated: bool
    pos: int


@dataclass(frozen=True)
class Call:
    name: str  # lower case
    args: tuple[Node, ...]
    pos: int


@dataclass(frozen=True)
class Case:
    whens: tuple[tuple[Node, Node], ...]
    default: Node | None
    pos: int


Node = Literal | FieldRef | Unary | Binary | Logical | IsNull | InList | Call | Case


def children(node: Node) -> Iterator[Node]:
    if isinstance(node, Unary | IsNull):
        yield node.operand
    elif isinstance(node, Binary):
        yield node.left
        yield node.right
    elif isinstance(node, Logical | Call):
        yield from node.items if isinstance(node, Logical) else node.args
    elif isinstance(node, InList):
        yield node.operand
        yield from node.items
    elif isinstance(node, Case):
        for condition, value in node.whens:
            yield condition
            yield value
        if node.default is not None:
            yield node.default


def depth(node: Node) -> int:
    """The depth of the tree under ``node`` (computed without recursion)."""
    deepest = 0
    stack = [(node, 1)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children(current))
    return deepest


# --------------------------------------------------------------------------- parser

_COMPARISONS = {
    "=": "=",
    "==": "=",
    "!=": "<>",
    "<>": "<>",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.index = 0
        self.level = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def expect_op(self, op: str, what: str) -> Token:
        if not self.token.is_op(op):
            raise ExpressionError(
                f"expected '{op}' {what}, found {self.token.describe()}", self.token.pos
            )
        return self.advance()

    def expect_end(self) -> None:
        if self.token.kind != "end":
            raise _unexpected(self.token)

    def descend(self) -> None:
        self.level += 1
        if self.level > MAX_DEPTH:
            raise ExpressionError(f"expression is nested more than {MAX_DEPTH} levels deep")

    # -- grammar rules, one method each

    def expression(self) -> Node:
        self.descend()
        try:
            return self.or_()
        finally:
            self.level -= 1

    def or_(self) -> Node:
        return self._logical("OR", self.and_)

    def and_(self) -> Node:
        return self._logical("AND", self.not_)

    def _logical(self, word: str, operand: Callable[[], Node]) -> Node:
        first = operand()
        items = [first]
        while self.token.is_keyword(word):
            self.advance()
            items.append(operand())
        return first if len(items) == 1 else Logical(word, tuple(items), _pos(first))

    def not_(self) -> Node:
        if self.token.is_keyword("NOT"):
            pos = self.advance().pos
            self.descend()
            try:
                return Unary("NOT", self.not_(), pos)
            finally:
                self.level -= 1
        return self.comparison()

    def comparison(self) -> Node:
        left = self.additive()
        token = self.token
        if token.kind == "op" and token.text in _COMPARISONS:
            self.advance()
            return Binary(_COMPARISONS[token.text], left, self.additive(), token.pos)
        if token.is_keyword("IS"):
            self.advance()
            negated = self.token.is_keyword("NOT")
            if negated:
                self.advance()
            if not self.token.is_keyword("NULL"):
                raise ExpressionError(
                    f"expected NULL after IS, found {self.token.describe()}", self.token.pos
                )
            self.advance()
            return IsNull(left, negated, token.pos)
        negated = False
        if token.is_keyword("NOT") and self.tokens[self.index + 1].is_keyword("IN"):
            self.advance()
            negated = True
        if self.token.is_keyword("IN"):
            pos = self.advance().pos
            self.expect_op("(", "after IN")
            items = self.arguments("IN")
            if not items:
                raise ExpressionError("IN needs at least one value", pos)
            return InList(left, tuple(items), negated, pos)
        return left

    def arguments(self, what: str) -> list[Node]:
        """Comma-separated expressions up to the closing parenthesis (consumed)."""
        items: list[Node] = []
        if self.token.is_op(")"):
            self.advance()
            return items
        while True:
            items.append(self.expression())
            if len(items) > MAX_ARGS * 4:
                raise ExpressionError(f"{what} has too many values", self.token.pos)
            if self.token.is_op(","):
                self.advance()
                continue
            self.expect_op(")", f"to close {what}")
            return items

    def additive(self) -> Node:
        node = self.term()
        while self.token.is_op("+", "-"):
            op = self.advance()
            node = Binary(op.text, node, self.term(), op.pos)
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.token.is_op("*", "/", "%"):
            op = self.advance()
            node = Binary(op.text, node, self.unary(), op.pos)
        return node

    def unary(self) -> Node:
        if self.token.is_op("-"):
            pos = self.advance().pos
            self.descend()
            try:
                return Unary("-", self.unary(), pos)
            finally:
                self.level -= 1
        return self.primary()

    def primary(self) -> Node:
        token = self.token
        if token.kind == "number":
            self.advance()
            assert isinstance(token.value, int | float)
            return Literal(token.value, token.pos)
        if token.kind == "string":
            self.advance()
            return Literal(str(token.value), token.pos)
        if token.is_op("("):
            self.advance()
            node = self.expression()
            self.expect_op(")", "to close '('")
            return node
        if token.kind == "quoted":
            self.advance()
            return self.path(str(token.value), token.pos)
        if token.kind == "name":
            word = token.text.upper()
            if word in ("TRUE", "FALSE"):
                self.advance()
                return Literal(word == "TRUE", token.pos)
            if word == "NULL":
                self.advance()
                return Literal(None, token.pos)
            if word == "CASE":
                return self.case()
            if word in SQL_WORDS:
                raise _unexpected(token)
            if word in KEYWORDS:
                raise ExpressionError(f"unexpected keyword {word}", token.pos)
            self.advance()
            if self.token.is_op("("):
                self.advance()
                return Call(token.text.lower(), tuple(self.arguments(token.text)), token.pos)
            return self.path(token.text, token.pos)
        raise ExpressionError(f"expected a value, found {token.describe()}", token.pos)

    def path(self, name: str, pos: int) -> FieldRef:
        keys: list[str | int] = []
        while self.token.is_op(".", "["):
            if self.advance().text == ".":
                key = self.token
                if key.kind != "name":
                    raise ExpressionError(
                        f"expected a key name after '.', found {key.describe()}", key.pos
                    )
                keys.append(self.advance().text)
                continue
            key = self.advance()
            if key.kind == "number" and isinstance(key.value, int) and key.value < 1_000_000:
                keys.append(key.value)
            elif key.kind == "string":
                text = str(key.value)
                if not text or len(text) > 128 or _CONTROL.search(text) or '"' in text:
                    raise ExpressionError(
                        "a key in [...] has 1-128 characters, no control characters and no "
                        "double quote",
                        key.pos,
                    )
                keys.append(text)
            else:
                raise ExpressionError(
                    f"expected an index or a quoted key in [...], found {key.describe()}",
                    key.pos,
                )
            self.expect_op("]", "to close '['")
        return FieldRef(name, tuple(keys), pos)

    def case(self) -> Node:
        pos = self.advance().pos
        whens: list[tuple[Node, Node]] = []
        while self.token.is_keyword("WHEN"):
            self.advance()
            condition = self.expression()
            if not self.token.is_keyword("THEN"):
                raise ExpressionError(
                    f"expected THEN, found {self.token.describe()}", self.token.pos
                )
            self.advance()
            whens.append((condition, self.expression()))
        if not whens:
            raise ExpressionError("CASE needs at least one WHEN … THEN …", pos)
        default = None
        if self.token.is_keyword("ELSE"):
            self.advance()
            default = self.expression()
        if not self.token.is_keyword("END"):
            raise ExpressionError(f"expected END, found {self.token.describe()}", self.token.pos)
        self.advance()
        return Case(tuple(whens), default, pos)


def _unexpected(token: Token) -> ExpressionError:
    if token.kind == "name" and token.text.upper() in SQL_WORDS:
        return ExpressionError(
            f"'{token.text}' is an SQL keyword: an expression computes one value and has no "
            f"queries or statements (a field of that name is written `{token.text}`)",
            token.pos,
        )
    return ExpressionError(f"unexpected {token.describe()}", token.pos)


def _pos(node: Node) -> int:
    return node.pos


def _check_size(text: str) -> None:
    if not text.strip():
        raise ExpressionError("empty")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression is longer than {MAX_LENGTH} characters")


def _check_depth(node: Node) -> Node:
    if depth(node) > MAX_DEPTH:
        raise ExpressionError(f"expression is nested more than {MAX_DEPTH} levels deep")
    return node


def parse(text: str) -> Node:
    """The AST of one expression; raises :class:`ExpressionError`."""
    _check_size(text)
    parser = _Parser(text)
    node = parser.expression()
    parser.expect_end()
    return _check_depth(node)


def parse_list(text: str) -> list[Node]:
    """A comma-separated list of expressions, optionally in parentheses (``1, 2`` or
    ``('a', 'b')``), as the right-hand side of IN."""
    _check_size(text)
    parser = _Parser(text)
    try:
        items = [parser.expression()]
        while parser.token.is_op(","):
            parser.advance()
            items.append(parser.expression())
        parser.expect_end()
    except ExpressionError:
        parser = _Parser(text)
        if not parser.token.is_op("("):
            raise
        parser.advance()
        items = parser.arguments("the list")
        parser.expect_end()
    if len(items) > MAX_ARGS * 4:
        raise ExpressionError(f"the list has more than {MAX_ARGS * 4} values")
    return [_check_depth(item) for item in items]


def parse_path(text: str) -> FieldRef:
    """A field with an optional path into it (``payload.items[0].temp``): what Flat, Nest
    and other operators use to point into a record."""
    node = parse(text)
    if not isinstance(node, FieldRef):
        raise ExpressionError("expected a field or a path such as payload.items[0].temp")
    return node


# --------------------------------------------------------------------------- type check and SQL


@dataclass(frozen=True)
class Scope:
    """What an expression can refer to: the input fields, and whether others may exist.

    ``open`` is true for the output of a source that declares no fields: any name is then
    accepted as a field of unknown type.
    """

    fields: Mapping[str, ValueType]
    open: bool = False

    def type_of(self, name: str, pos: int) -> ValueType:
        if name in self.fields:
            return self.fields[name]
        if self.open:
            return Loose.ANY
        close = difflib.get_close_matches(name, list(self.fields), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ExpressionError(f"unknown field '{name[:80]}'{hint}", pos)


@dataclass(frozen=True)
class Compiled:
    """An expression compiled to a SQL expression tree, with its type and the fields it
    reads. An engine renders ``expression`` in its dialect."""

    expression: exp.Expr
    type: ValueType
    fields: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Typed:
    expression: exp.Expr
    type: ValueType


def json_path(keys: Sequence[str | int]) -> str:
    """The JSON path of keys: ``("a", 0, "b c")`` -> ``$.a[0]."b c"``."""
    out = "$"
    for key in keys:
        if isinstance(key, int):
            out += f"[{key}]"
        elif _NAME.fullmatch(key):
            out += f".{key}"
        else:
            out += f'."{key}"'
    return out


def column(name: str) -> exp.Column:
    """A field as a quoted column reference."""
    return exp.column(name, quoted=True)


def string(value: str) -> exp.Literal:
    return exp.Literal.string(value)


def sql_type(kind: FieldType) -> exp.DataType:
    """The SQL type holding values of ``kind`` (MAP and ARRAY values are JSON)."""
    return exp.DataType.build(SQL_TYPES[kind])


def cast(value: exp.Expr, kind: FieldType) -> exp.Expr:
    """``value`` converted to a field of type ``kind``: NULL where a value does not convert."""
    return exp.TryCast(this=value, to=sql_type(kind))


def json_value(value: exp.Expr, keys: Sequence[str | int]) -> exp.Expr:
    """The JSON value at ``keys`` in ``value`` (NULL when the path does not exist)."""
    return exp.JSONExtract(this=value, expression=string(json_path(keys)))


def json_text(value: exp.Expr, keys: Sequence[str | int]) -> exp.Expr:
    """The value at ``keys`` in ``value``, as text (NULL when the path does not exist)."""
    return exp.JSONExtractScalar(this=value, expression=string(json_path(keys)))


def _paren(value: exp.Expr) -> exp.Paren:
    return exp.Paren(this=value)


def _function(name: str, args: Sequence[Typed]) -> exp.Expr:
    return exp.Anonymous(this=name, expressions=[a.expression for a in args])


def _chain(kind: type[exp.Connector], items: Sequence[exp.Expr]) -> exp.Expr:
    joined = items[0]
    for item in items[1:]:
        joined = kind(this=joined, expression=item)
    return joined


COMPARISONS: dict[str, type[exp.Binary]] = {
    "=": exp.EQ,
    "<>": exp.NEQ,
    "<": exp.LT,
    "<=": exp.LTE,
    ">": exp.GT,
    ">=": exp.GTE,
}
ARITHMETIC: dict[str, type[exp.Binary]] = {"+": exp.Add, "-": exp.Sub, "*": exp.Mul}


def _comparison(op: str, left: exp.Expr, right: exp.Expr) -> exp.Expr:
    return _paren(COMPARISONS[op](this=left, expression=right))


def _is_null(value: exp.Expr, negated: bool) -> exp.Expr:
    test: exp.Expr = exp.Is(this=value, expression=exp.Null())
    return _paren(exp.Not(this=test) if negated else test)


def _in(value: exp.Expr, items: Sequence[exp.Expr], negated: bool) -> exp.Expr:
    test: exp.Expr = exp.In(this=value, expressions=list(items))
    return _paren(exp.Not(this=test) if negated else test)


FunctionRule = Callable[[Call, list[Typed]], Typed]


class _Compiler:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.used: set[str] = set()

    def visit(self, node: Node) -> Typed:
        if isinstance(node, Literal):
            return literal(node)
        if isinstance(node, FieldRef):
            return self.field(node)
        if isinstance(node, Unary):
            return self.unary(node)
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Logical):
            items = [self.boolean(item, node.op).expression for item in node.items]
            joiner = exp.And if node.op == "AND" else exp.Or
            return Typed(_paren(_chain(joiner, items)), FieldType.BOOLEAN)
        if isinstance(node, IsNull):
            operand = self.visit(node.operand)
            return Typed(_is_null(operand.expression, node.negated), FieldType.BOOLEAN)
        if isinstance(node, InList):
            return self.in_list(node)
        if isinstance(node, Call):
            return self.call(node)
        return self.case(node)

    def boolean(self, node: Node, what: str) -> Typed:
        typed = self.visit(node)
        if typed.type != FieldType.BOOLEAN and not is_loose(typed.type):
            raise ExpressionError(f"{what} needs a BOOLEAN, not {typed.type}", _pos(node))
        return typed

    def field(self, node: FieldRef) -> Typed:
        kind = self.scope.type_of(node.name, node.pos)
        self.used.add(node.name)
        ref = column(node.name)
        if not node.keys:
            return Typed(ref, kind)
        if kind not in JSON_HOLDERS and not is_loose(kind):
            raise ExpressionError(
                f"field '{node.name}' is {kind}; a path (. or [...]) reads into a MAP, ARRAY "
                "or JSON STRING field",
                node.pos,
            )
        return Typed(exp.Try(this=json_text(ref, node.keys)), FieldType.STRING)

    def unary(self, node: Unary) -> Typed:
        if node.op == "NOT":
            operand = self.boolean(node.operand, "NOT")
            return Typed(_paren(exp.Not(this=operand.expression)), FieldType.BOOLEAN)
        operand = self.visit(node.operand)
        if not is_numeric(operand.type):
            raise ExpressionError(f"'-' needs a number, not {operand.type}", node.pos)
        return Typed(_paren(exp.Neg(this=operand.expression)), operand.type)

    def binary(self, node: Binary) -> Typed:
        left, right = self.visit(node.left), self.visit(node.right)
        if node.op in COMPARISONS:
            if not comparable(left.type, right.type, node.op not in ("=", "<>")):
                raise ExpressionError(
                    f"cannot compare {left.type} with {right.type} using '{node.op}'", node.pos
                )
            return Typed(_comparison(node.op, left.expression, right.expression), FieldType.BOOLEAN)
        for side in (left, right):
            if not is_numeric(side.type):
                hint = "; join strings with concat()" if side.type == FieldType.STRING else ""
                raise ExpressionError(f"'{node.op}' needs numbers, not {side.type}{hint}", node.pos)
        divisor = exp.Nullif(this=right.expression, expression=exp.Literal.number(0))
        if node.op == "/":
            kind: ValueType = (
                Loose.ANY if Loose.ANY in (left.type, right.type) else FieldType.DOUBLE
            )
            dividend = exp.Cast(this=left.expression, to=sql_type(FieldType.DOUBLE))
            return Typed(_paren(exp.Div(this=dividend, expression=divisor)), kind)
        kind = wider(left.type, right.type)
        if node.op == "%":
            return Typed(_paren(exp.Mod(this=left.expression, expression=divisor)), kind)
        left_value = left.expression
        if kind in INTEGRAL:
            kind = FieldType.LONG
            left_value = exp.Cast(this=left_value, to=sql_type(FieldType.LONG))
        operation = ARITHMETIC[node.op](this=left_value, expression=right.expression)
        return Typed(_paren(operation), kind)

    def in_list(self, node: InList) -> Typed:
        operand = self.visit(node.operand)
        items = [self.visit(item) for item in node.items]
        for item, source in zip(items, node.items, strict=True):
            if not comparable(operand.type, item.type, False):
                raise ExpressionError(f"IN compares {operand.type} with {item.type}", _pos(source))
        values = [i.expression for i in items]
        return Typed(_in(operand.expression, values, node.negated), FieldType.BOOLEAN)

    def case(self, node: Case) -> Typed:
        branches: list[exp.Expr] = []
        kind: ValueType = Loose.NULL
        for condition, value in node.whens:
            test, result = self.boolean(condition, "WHEN"), self.visit(value)
            kind = self.unify(kind, result.type, _pos(value), "CASE")
            branches.append(exp.If(this=test.expression, true=result.expression))
        default: exp.Expr = exp.Null()
        if node.default is not None:
            result = self.visit(node.default)
            kind = self.unify(kind, result.type, _pos(node.default), "CASE")
            default = result.expression
        return Typed(_paren(exp.Case(ifs=branches, default=default)), kind)

    @staticmethod
    def unify(left: ValueType, right: ValueType, pos: int, what: str) -> ValueType:
        kind = unify(left, right)
        if kind is None:
            raise ExpressionError(
                f"{what} mixes values of types {left} and {right}; convert one of them", pos
            )
        return kind

    def call(self, node: Call) -> Typed:
        rule = FUNCTIONS.get(node.name)
        if rule is None and node.name in AGGREGATES:
            raise ExpressionError(
                f"{node.name}() aggregates many records: use the Aggregate operator", node.pos
            )
        if rule is None:
            raise ExpressionError(
                f"unknown function '{node.name[:40]}'; the functions are "
                + ", ".join(sorted(FUNCTIONS)),
                node.pos,
            )
        low, high, build = rule
        if not low <= len(node.args) <= high:
            count = str(low) if low == high else f"{low} to {high}"
            raise ExpressionError(
                f"{node.name}() takes {count} arguments, not {len(node.args)}", node.pos
            )
        return build(node, [self.visit(arg) for arg in node.args])


def constant(value: str | int | float | bool | None) -> exp.Expr:
    """A JSON scalar as a SQL literal."""
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float):
        return exp.Literal.number(repr(value))
    return string(value)


def literal(node: Literal) -> Typed:
    value = node.value
    if value is None:
        return Typed(exp.Null(), Loose.NULL)
    if isinstance(value, bool):
        return Typed(exp.Boolean(this=value), FieldType.BOOLEAN)
    if isinstance(value, int):
        kind = FieldType.INTEGER if -(2**31) <= value < 2**31 else FieldType.LONG
        return Typed(exp.Literal.number(str(value)), kind)
    if isinstance(value, float):
        number = exp.Cast(this=exp.Literal.number(repr(value)), to=sql_type(FieldType.DOUBLE))
        return Typed(number, FieldType.DOUBLE)
    return Typed(string(value), FieldType.STRING)


# --------------------------------------------------------------------------- functions


def _need(node: Call, index: int, arg: Typed, allowed: Sequence[FieldType], what: str) -> None:
    if not is_loose(arg.type) and arg.type not in allowed:
        raise ExpressionError(
            f"{node.name}() argument {index + 1} must be {what}, not {arg.type}", node.pos
        )


def _numeric_same(sql_name: str) -> FunctionRule:
    def build(node: Call, args: list[Typed]) -> Typed:
        _need(node, 0, args[0], NUMERIC, "a number")
        if len(args) > 1:
            _need(node, 1, args[1], INTEGRAL, "an integer")
        return Typed(_function(sql_name, args), args[0].type)

    return build


def _power(node: Call, args: list[Typed]) -> Typed:
    for i, arg in enumerate(args):
        _need(node, i, arg, NUMERIC, "a number")
    base = exp.Cast(this=args[0].expression, to=sql_type(FieldType.DOUBLE))
    return Typed(exp.Pow(this=base, expression=args[1].expression), FieldType.DOUBLE)


def _string_fn(sql_name: str, result: FieldType, extra: Sequence[FieldType] = ()) -> FunctionRule:
    def build(node: Call, args: list[Typed]) -> Typed:
        _need(node, 0, args[0], (FieldType.STRING,), "a STRING")
        for i, arg in enumerate(args[1:], start=1):
            kinds = extra or (FieldType.STRING,)
            _need(node, i, arg, kinds, " or ".join(kinds))
        return Typed(_function(sql_name, args), result)

    return build


def _contains(node: Call, args: list[Typed]) -> Typed:
    _string_fn("contains", FieldType.BOOLEAN)(node, args)
    contains = exp.Contains(this=args[0].expression, expression=args[1].expression)
    return Typed(contains, FieldType.BOOLEAN)


def _concat(node: Call, args: list[Typed]) -> Typed:
    return Typed(exp.Concat(expressions=[a.expression for a in args]), FieldType.STRING)


def _coalesce(node: Call, args: list[Typed]) -> Typed:
    kind: ValueType = Loose.NULL
    for arg in args:
        kind = _Compiler.unify(kind, arg.type, node.pos, "coalesce()")
    return Typed(_function("coalesce", args), kind)


def _if(node: Call, args: list[Typed]) -> Typed:
    condition, then, otherwise = args
    if condition.type != FieldType.BOOLEAN and not is_loose(condition.type):
        raise ExpressionError(f"if() needs a BOOLEAN condition, not {condition.type}", node.pos)
    kind = _Compiler.unify(then.type, otherwise.type, node.pos, "if()")
    branch = exp.If(this=condition.expression, true=then.expression)
    return Typed(_paren(exp.Case(ifs=[branch], default=otherwise.expression)), kind)


def _now(node: Call, args: list[Typed]) -> Typed:
    utc = exp.AtTimeZone(this=exp.CurrentTimestamp(), zone=string("UTC"))
    return Typed(_paren(utc), FieldType.TIMESTAMP)


def _to_timestamp(node: Call, args: list[Typed]) -> Typed:
    value = args[0]
    if len(args) == 2:
        _need(node, 0, value, (FieldType.STRING,), "a STRING when a format is given")
        fmt = node.args[1]
        if not (isinstance(fmt, Literal) and isinstance(fmt.value, str)):
            raise ExpressionError("to_timestamp() format must be a string literal", node.pos)
        parsed = exp.StrToTime(this=value.expression, format=args[1].expression, safe=True)
        return Typed(parsed, FieldType.TIMESTAMP)
    if value.type in NUMERIC:
        seconds = exp.Cast(this=value.expression, to=sql_type(FieldType.DOUBLE))
        micros = exp.Cast(
            this=exp.Mul(this=seconds, expression=exp.Literal.number(1000000)),
            to=sql_type(FieldType.LONG),
        )
        return Typed(
            exp.Try(this=exp.UnixToTime(this=micros, scale=exp.UnixToTime.MICROS)),
            FieldType.TIMESTAMP,
        )
    if value.type == FieldType.TIMESTAMP:
        return value
    _need(node, 0, value, (FieldType.STRING, *NUMERIC), "epoch seconds or a STRING")
    return Typed(cast(value.expression, FieldType.TIMESTAMP), FieldType.TIMESTAMP)


def _to_epoch_ms(node: Call, args: list[Typed]) -> Typed:
    _need(node, 0, args[0], (FieldType.TIMESTAMP,), "a TIMESTAMP")
    return Typed(exp.UnixMillis(this=args[0].expression), FieldType.LONG)


def _converter(kind: FieldType) -> FunctionRule:
    def build(node: Call, args: list[Typed]) -> Typed:
        if kind != FieldType.STRING:
            _need(node, 0, args[0], (*NUMERIC, FieldType.STRING, FieldType.BOOLEAN), "a scalar")
        return Typed(cast(args[0].expression, kind), kind)

    return build


FUNCTIONS: dict[str, tuple[int, int, FunctionRule]] = {
    "abs": (1, 1, _numeric_same("abs")),
    "round": (1, 2, _numeric_same("round")),
    "floor": (1, 1, _numeric_same("floor")),
    "ceil": (1, 1, _numeric_same("ceil")),
    "power": (2, 2, _power),
    "lower": (1, 1, _string_fn("lower", FieldType.STRING)),
    "upper": (1, 1, _string_fn("upper", FieldType.STRING)),
    "trim": (1, 1, _string_fn("trim", FieldType.STRING)),
    "length": (1, 1, _string_fn("length", FieldType.LONG)),
    "substring": (2, 3, _string_fn("substring", FieldType.STRING, INTEGRAL)),
    "replace": (3, 3, _string_fn("replace", FieldType.STRING)),
    "contains": (2, 2, _contains),
    "concat": (1, MAX_ARGS, _concat),
    "coalesce": (1, MAX_ARGS, _coalesce),
    "if": (3, 3, _if),
    "now": (0, 0, _now),
    "to_timestamp": (1, 2, _to_timestamp),
    "to_epoch_ms": (1, 1, _to_epoch_ms),
    "to_string": (1, 1, _converter(FieldType.STRING)),
    "to_integer": (1, 1, _converter(FieldType.INTEGER)),
    "to_long": (1, 1, _converter(FieldType.LONG)),
    "to_double": (1, 1, _converter(FieldType.DOUBLE)),
    "to_boolean": (1, 1, _converter(FieldType.BOOLEAN)),
}
"""The allow-list: name -> (fewest arguments, most arguments, type rule and SQL)."""


def compile_node(node: Node, scope: Scope) -> Compiled:
    compiler = _Compiler(scope)
    typed = compiler.visit(node)
    return Compiled(typed.expression, typed.type, frozenset(compiler.used))


def compile_expression(text: str, scope: Scope) -> Compiled:
    """Parse, type-check and compile one expression; raises :class:`ExpressionError`."""
    return compile_node(parse(text), scope)


def compile_predicate(text: str, scope: Scope) -> Compiled:
    """An expression that must be BOOLEAN (a condition)."""
    compiled = compile_expression(text, scope)
    if compiled.type != FieldType.BOOLEAN and not is_loose(compiled.type):
        raise ExpressionError(f"a condition must be BOOLEAN, not {compiled.type}")
    return compiled


# --------------------------------------------------------------------------- Filter conditions


class Symbol(StrEnum):
    """The comparison of a Filter condition (seed 000)."""

    EQUAL = "EQUAL"
    NOT_EQUAL = "NOT_EQUAL"
    MORE_THAN = "MORE_THAN"
    LESS_THAN = "LESS_THAN"
    MORE_EQUAL = "MORE_EQUAL"
    LESS_EQUAL = "LESS_EQUAL"
    CONTAINS = "CONTAINS"
    IN = "IN"
    IS_NULL = "IS_NULL"
    NOT_NULL = "NOT_NULL"


SYMBOL_OPERATORS = {
    Symbol.EQUAL: "=",
    Symbol.NOT_EQUAL: "<>",
    Symbol.MORE_THAN: ">",
    Symbol.LESS_THAN: "<",
    Symbol.MORE_EQUAL: ">=",
    Symbol.LESS_EQUAL: "<=",
}
UNARY_SYMBOLS = (Symbol.IS_NULL, Symbol.NOT_NULL)


def _part(part: str, run: Callable[[], Compiled]) -> Compiled:
    try:
        return run()
    except ExpressionError as exc:
        raise ExpressionError(exc.message, exc.position, part) from None


def compile_condition(left: str, symbol: Symbol, right: str | None, scope: Scope) -> Compiled:
    """One Filter condition ``leftValue symbol rightValue`` as a BOOLEAN SQL expression.

    Both values are expressions (a string constant is quoted: ``'abc'``); the right value
    of IN is a list (``1, 2, 3``); IS_NULL and NOT_NULL take no right value. Errors carry
    ``part`` = ``leftValue`` or ``rightValue``.
    """
    lhs = _part("leftValue", lambda: compile_expression(left, scope))
    if symbol in UNARY_SYMBOLS:
        if right is not None and right.strip():
            raise ExpressionError(f"{symbol} takes no right value", part="rightValue")
        test = _is_null(lhs.expression, symbol == Symbol.NOT_NULL)
        return Compiled(test, FieldType.BOOLEAN, lhs.fields)
    if right is None or not right.strip():
        raise ExpressionError("empty", part="rightValue")
    if symbol == Symbol.IN:
        items = _compile_list(right, scope)
        for item in items:
            if not comparable(lhs.type, item.type, False):
                raise ExpressionError(f"IN compares {lhs.type} with {item.type}", part="rightValue")
        used = lhs.fields.union(*(i.fields for i in items))
        test = _in(lhs.expression, [i.expression for i in items], False)
        return Compiled(test, FieldType.BOOLEAN, used)
    rhs = _part("rightValue", lambda: compile_expression(right, scope))
    used = lhs.fields | rhs.fields
    if symbol == Symbol.CONTAINS:
        for part, side in (("leftValue", lhs), ("rightValue", rhs)):
            if side.type != FieldType.STRING and not is_loose(side.type):
                raise ExpressionError(f"CONTAINS needs a STRING, not {side.type}", part=part)
        test = exp.Contains(this=_text(lhs), expression=_text(rhs))
        return Compiled(test, FieldType.BOOLEAN, used)
    op = SYMBOL_OPERATORS[symbol]
    if not comparable(lhs.type, rhs.type, op not in ("=", "<>")):
        raise ExpressionError(
            f"cannot compare {lhs.type} with {rhs.type} using {symbol}", part="rightValue"
        )
    return Compiled(_comparison(op, lhs.expression, rhs.expression), FieldType.BOOLEAN, used)


def _text(compiled: Compiled) -> exp.Expr:
    if compiled.type == FieldType.STRING:
        return compiled.expression
    return cast(compiled.expression, FieldType.STRING)


def _compile_list(text: str, scope: Scope) -> list[Compiled]:
    try:
        return [compile_node(node, scope) for node in parse_list(text)]
    except ExpressionError as exc:
        raise ExpressionError(exc.message, exc.position, "rightValue") from None


def combine(conditions: Sequence[Compiled], relationship: str) -> exp.Expr:
    """The conditions joined by AND or OR into one predicate."""
    if not conditions:
        return exp.Boolean(this=True)
    joiner = exp.Or if relationship.upper() == "OR" else exp.And
    return _paren(_chain(joiner, [c.expression for c in conditions]))
