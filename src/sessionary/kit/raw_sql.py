"""Prebuilt Core statements run on the DB-API cursor of a unit of work's connection.

Every billed request runs the same handful of statements (a reserve, a settle, a turn's rows).
Through SQLAlchemy's execution path each costs about 40 µs of Python on top of the database's
own few microseconds (an execution context, events, result machinery), several times over per
request. Here a statement is compiled once per dialect (and, for an INSERT, per set of columns)
into its SQL, the order of its parameters and their type conversions; running it then costs one
cursor call, on the same connection and so in the same transaction as the session's other work.

What stays as SQLAlchemy would do it, and is tested on both engines (`tests/test_raw_sql.py`):
- parameters and returned columns go through the columns' types (UTC datetimes on SQLite);
- an INSERT's unset columns get their Python-side defaults; literal values bound in the
  statement (`status = 'open'`) are sent as compiled;
- driver errors are raised as SQLAlchemy's (`IntegrityError`, `OperationalError`, ...), with
  parameters hidden, so callers catch one family of errors whatever path ran the statement.

Not for statements built per call (the cache holds each statement, keyed by its identity).

On PostgreSQL a unit of work may also hold its plain INSERTs back (`holding_inserts`) and send
them together, as one statement, right before its next other statement: a turn's transcript (a
session, two messages, a response) is then one statement instead of four. A unit held at once
may also hold one guard ahead of its INSERTs (`at_once_guard`: a turn on a stored session moves
the session on, and its messages go in only if it is still there).
"""

from __future__ import annotations

import re
import threading
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast

from sqlalchemy import Connection, Dialect, exc
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Params = Mapping[str, Any]


class Rows:
    """What a statement returned (RETURNING or SELECT), with the few readers the stores use."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def first(self) -> Any | None:
        return self.rows[0] if self.rows else None

    def scalar_one_or_none(self) -> Any | None:
        if len(self.rows) > 1:
            raise exc.MultipleResultsFound("more than one row where at most one was expected")
        return self.rows[0][0] if self.rows else None

    def scalars(self) -> Iterator[Any]:
        return (row[0] for row in self.rows)


def run(
    connection: Connection, statement: ClauseElement, params: Params | Sequence[Params]
) -> Rows:
    """Run `statement` with one set of parameters, or many (executemany, no rows returned),
    inside the transaction `connection` has begun (never in autocommit: refused).

    Within `holding_inserts` on this connection, a plain INSERT (no RETURNING) is held back,
    and any other statement sends what is held first (`HeldInserts.send`)."""
    if not connection.in_transaction():
        raise RuntimeError("raw_sql.run needs a connection with its transaction begun")
    batch: Sequence[Params] = [params] if isinstance(params, Mapping) else params
    plan = plan_of(statement, connection.dialect, batch[0])
    try:
        arguments = [plan.arguments(each) for each in batch]
    except (KeyError, TypeError, ValueError) as error:  # as SQLAlchemy reports a bad parameter
        raise exc.StatementError(str(error), plan.sql, None, error) from error
    raw = connection.connection.driver_connection
    assert raw is not None
    sql = plan.sql
    held = _held.get()
    if held is not None and held.owner is raw:
        if plan.holdable and not held.at_once_sent:
            held.rows.extend((plan, each) for each in arguments)
            return Rows([])
        assumed = held.hold_guard(plan, params, arguments[0]) if held.at_once else None
        if assumed is not None:
            return Rows([plan.row(assumed)])
        if held.at_once:
            sql, arguments = held.last_at_once(plan, params, arguments[0])
        elif held.rows:
            held.send(connection)
    cursor = raw.cursor()
    try:
        if not isinstance(params, Mapping):
            cursor.executemany(sql, arguments)
            return Rows([])
        cursor.execute(sql, arguments[0])
        if held is not None and held.owner is raw and held.at_once_sent:
            held.at_once_done = True  # answered: in autocommit, committed
        return Rows([plan.row(found) for found in cursor.fetchall()] if plan.returns else [])
    except connection.dialect.loaded_dbapi.Error as error:
        raise _translated(connection, sql, cursor, error) from error
    finally:
        cursor.close()


class NotAtOnce(Exception):
    """A unit held at once (`holding_inserts(at_once=True)`) ran something that cannot go out
    in its one statement: nothing was sent."""


class HeldInserts:
    """A unit of work's INSERTs held back on one PostgreSQL connection (`holding_inserts`)."""

    def __init__(self, owner: Any, at_once: bool = False) -> None:
        self.owner = owner  # the DB-API connection they are for
        self.rows: list[tuple[Plan, Any]] = []
        self.failed = False  # sending them failed
        # at once: everything goes out with the unit's one other statement, once `last` is set
        self.at_once = at_once
        self.last = False
        self.at_once_sent = False  # its statement was run (whatever came of it)
        self.at_once_done = False  # and answered: committed
        self.guard: tuple[int, Guard] | None = None  # its place among `rows`, and what it gates

    def hold_guard(self, plan: Plan, params: Any, values: Any) -> tuple[Any] | None:
        """Hold `plan` as the unit's guard when it is one (`at_once_guard`), before `last`, and
        the first: the row the guard is assumed to return, which `run` answers; else None."""
        guard = _GUARDS.get(id(plan.statement))
        if guard is None or self.last or self.at_once_sent or not isinstance(params, Mapping):
            return None
        if self.guard is not None:
            raise NotAtOnce("a second guard")
        self.guard = (len(self.rows), guard)
        self.rows.append((plan, values))
        return guard.assumed(params)

    def last_at_once(self, plan: Plan, params: Any, values: Any) -> tuple[str, list[Any]]:
        """The SQL and parameters of `plan` with the held rows before it, as data-modifying
        CTEs: `WITH held_0 AS (<insert>), ... <statement>` (PostgreSQL runs every one of them,
        read or not, in the statement's single snapshot and transaction). NotAtOnce, with
        nothing sent, before `last` is set, for a batch, or past `TOGETHER` rows."""
        if self.at_once_sent:
            raise RuntimeError("a unit held at once sends one statement after its INSERTs")
        if not self.last or not isinstance(params, Mapping) or len(self.rows) > TOGETHER:
            raise NotAtOnce(plan.sql[:60])
        rows, self.rows = self.rows, []
        self.at_once_sent = True
        if not rows:
            return plan.sql, [values]
        key = (*(id(insert) for insert, _ in rows), id(plan))
        sql = _at_once_sql.get(key)
        if sql is None:
            parts = _renamed_inserts(rows)
            if self.guard is not None:
                parts = _gated(parts, *self.guard)
            ctes = ", ".join(f"held_{n} AS ({part})" for n, part in enumerate(parts))
            own = plan.sql.lstrip()
            if own[:5].upper() == "WITH " and not own[5:15].upper().startswith("RECURSIVE"):
                sql = f"WITH {ctes}, {own[5:]}"
            else:
                sql = f"WITH {ctes} {own}"
            sql = _at_once_sql.setdefault(key, sql)
        merged = _renamed_values(rows)
        if not merged.keys().isdisjoint(values):
            raise NotAtOnce("parameter names collide")
        return sql, [{**merged, **values}]

    def send(self, connection: Connection) -> None:
        """Send the held INSERTs, in their order: up to `TOGETHER` rows in one statement (all
        but the last as data-modifying CTEs; PostgreSQL checks foreign keys at a statement's
        end, so a row may refer to one before it), more in executemany batches."""
        rows, self.rows = self.rows, []
        if 1 < len(rows) <= TOGETHER:
            batches = [_together(rows)]
        else:
            batches = []
            for insert, values in rows:  # consecutive rows of one statement: one executemany
                if batches and batches[-1][0] == insert.sql:
                    batches[-1][1].append(values)
                else:
                    batches.append((insert.sql, [values]))
        raw = connection.connection.driver_connection
        assert raw is not None
        cursor = raw.cursor()
        try:
            for sql, many in batches:
                try:
                    if len(many) == 1:
                        cursor.execute(sql, many[0])
                    else:
                        cursor.executemany(sql, many)
                except connection.dialect.loaded_dbapi.Error as error:
                    self.failed = True
                    raise _translated(connection, sql, cursor, error) from error
        finally:
            cursor.close()


def _together(rows: list[tuple[Plan, Any]]) -> tuple[str, list[Any]]:
    """One statement for `rows`: `WITH held_0 AS (<insert>), ... <last insert>`, its
    parameters renamed per row (`%(id)s` to `%(h0_id)s`). Cached by the rows' statements."""
    key = tuple(id(insert) for insert, _ in rows)
    sql = _together_sql.get(key)
    if sql is None:
        parts = _renamed_inserts(rows)
        ctes = ", ".join(f"held_{n} AS ({part})" for n, part in enumerate(parts[:-1]))
        sql = _together_sql.setdefault(key, f"WITH {ctes} {parts[-1]}")
    return sql, [_renamed_values(rows)]


class Guard:
    """What `at_once_guard` registered: the column the guard returns, the parameter whose value
    that is when it matches, and the INSERTs' parameter it gates."""

    def __init__(self, returns: str, returns_param: str, gates: str) -> None:
        self.returns, self.returns_param, self.gates = returns, returns_param, gates

    def assumed(self, params: Params) -> tuple[Any]:
        return (params[self.returns_param],)


def at_once_guard(statement: Any, *, returns_param: str, gates: str) -> Any:
    """Let a unit held at once (`holding_inserts(at_once=True)`) send `statement`, an UPDATE
    returning one column, ahead of its INSERTs, as one more data-modifying CTE. `run` answers
    it as if it matched (the row of its `returns_param`), and the INSERTs held after it take
    its returned value for their `gates` parameter (`(SELECT id FROM held_0)`): when it matches
    no row, that value is NULL, which a NOT NULL column refuses, and the whole statement fails
    with nothing written; the caller then does the work the usual way, where the guard's own
    answer is read (`kit/at_once.py`). `gates` must name a NOT NULL column of at least one
    INSERT after it (NotAtOnce otherwise, nothing sent). Returns `statement`."""
    returned = list(statement.exported_columns)
    if len(returned) != 1:
        raise TypeError("an at-once guard returns exactly one column")
    _GUARDS[id(statement)] = Guard(returned[0].key, returns_param, gates)
    _KEPT_GUARDS.append(statement)  # so its identity is never another statement's
    return statement


def _gated(parts: list[str], at: int, guard: Guard) -> list[str]:
    """The held statements with the `gates` parameter of each INSERT after the guard replaced
    by the guard's returned value; NotAtOnce when none takes it."""
    gated = list(parts)
    taken = 0
    value = f"(SELECT {guard.returns} FROM held_{at})"  # noqa: S608 (our column, our CTE)
    for n in range(at + 1, len(parts)):
        slot = f"%(h{n}_{guard.gates})s"
        if slot in gated[n]:
            gated[n] = gated[n].replace(slot, value)
            taken += 1
    if taken == 0:
        raise NotAtOnce("a guard that gates nothing")
    return gated


def _renamed_inserts(rows: list[tuple[Plan, Any]]) -> list[str]:
    """Each row's INSERT with its parameters renamed for its place (`%(id)s` to `%(h0_id)s`)."""
    return [_renamed(insert.sql, f"h{n}_") for n, (insert, _) in enumerate(rows)]


def _renamed_values(rows: list[tuple[Plan, Any]]) -> dict[str, Any]:
    """The rows' values under the names `_renamed_inserts` gave their parameters."""
    return {f"h{n}_{name}": value for n, (_, row) in enumerate(rows) for name, value in row.items()}


# At most this many held rows go in one statement (a turn has four: a session, two messages, a
# response); more go in executemany batches, a statement's parameters being bounded.
TOGETHER = 16
_held: ContextVar[HeldInserts | None] = ContextVar("raw_sql_held_inserts", default=None)
_together_sql: dict[tuple[int, ...], str] = {}
_at_once_sql: dict[tuple[int, ...], str] = {}
_GUARDS: dict[int, Guard] = {}
_KEPT_GUARDS: list[Any] = []
_PARAMETER = re.compile(r"(?<!%)%\((\w+)\)s")


def _renamed(sql: str, prefix: str) -> str:
    """`sql` with each `%(name)s` parameter renamed `%(<prefix>name)s`."""
    return _PARAMETER.sub(lambda found: f"%({prefix}{found.group(1)})s", sql)


@contextmanager
def holding_inserts(connection: Connection, at_once: bool = False) -> Iterator[HeldInserts | None]:
    """PostgreSQL: hold `run`'s plain INSERTs on `connection` back for the block (`run`). What
    is still held when the block ends is sent then, before the transaction commits; nothing is
    sent when it raises (its transaction will roll back). SQLite: nothing held (None): it has
    no round trips to save.

    `at_once` (a connection in autocommit): the held rows go out only with the block's one
    other statement, run by `run` once `last` is set, in the same statement; any other
    statement (SQLAlchemy's, `run_fixed`, a second one) raises NotAtOnce with nothing sent,
    and so does the block's end with rows still held."""
    if connection.dialect.name != "postgresql":
        yield None
        return
    raw = connection.connection.driver_connection
    held = HeldInserts(raw, at_once)
    token = _held.set(held)
    try:
        yield held
        if held.rows:
            if at_once:
                raise NotAtOnce("rows held and no statement to send them with")
            held.send(connection)
    finally:
        _held.reset(token)


def send_held_first(connection: Connection, *_args: Any) -> None:
    """A `before_cursor_execute` hook for PostgreSQL engines: a statement SQLAlchemy runs
    (the ORM's, Core's) on a connection with INSERTs held back sends them first, in order;
    on one held at once, it is refused (NotAtOnce, nothing sent)."""
    held = _held.get()
    if held is None or held.owner is not connection.connection.driver_connection:
        return
    if held.at_once:
        raise NotAtOnce("a statement that cannot go out at once")
    if held.rows:
        held.send(connection)


# psycopg converts a statement's `%(name)s` placeholders to `$n` on every execute, and keeps
# the conversion only for statements of at most 4,096 bytes and 50 parameters. A turn's end
# sent at once (`kit/at_once.py`) is longer, with more: converting it again each time was 7% of
# a server's interpreter time. These statements are a few dozen fixed ones (`plan_of`), so
# keeping theirs costs little (psycopg keeps 128 at most). Tests: `tests/test_at_once.py`.
LONGEST_KEPT_STATEMENT = 32_768
MOST_KEPT_PARAMETERS = 400


def keep_long_conversions() -> None:
    """Let psycopg keep the conversions of statements as long as ours (PostgreSQL servers)."""
    from psycopg import _queries  # only where PostgreSQL is used

    if hasattr(_queries, "MAX_CACHED_STATEMENT_LENGTH"):
        _queries.MAX_CACHED_STATEMENT_LENGTH = max(
            _queries.MAX_CACHED_STATEMENT_LENGTH, LONGEST_KEPT_STATEMENT
        )
    if hasattr(_queries, "MAX_CACHED_STATEMENT_PARAMS"):
        _queries.MAX_CACHED_STATEMENT_PARAMS = max(
            _queries.MAX_CACHED_STATEMENT_PARAMS, MOST_KEPT_PARAMETERS
        )


def run_fixed(connection: Connection, sql: str) -> None:
    """Run one fixed, parameterless statement (`BEGIN IMMEDIATE`, `SAVEPOINT sa_savepoint_1`)
    on the DB-API cursor, with driver errors raised as SQLAlchemy's. For the statements
    SQLAlchemy itself would compile on every call (a savepoint's) or run through its whole
    execution path (a `BEGIN` from a "begin" event): 20-40 µs each, a few times a turn."""
    raw = connection.connection.driver_connection
    assert raw is not None
    send_held_first(connection)
    cursor = raw.cursor()
    try:
        cursor.execute(sql)
    except connection.dialect.loaded_dbapi.Error as error:
        raise _translated(connection, sql, cursor, error) from error
    finally:
        cursor.close()


def _translated(connection: Connection, sql: str, cursor: Any, error: Any) -> Exception:
    """A driver error as SQLAlchemy raises it (parameters hidden); a lost connection is
    invalidated first, as SQLAlchemy does, so the pool discards it instead of reusing it. A
    statement the event loop's connections gave up on is `WouldBlock` (`kit/pg_loop_units.py`)."""
    from sessionary.kit.pg_loop_units import given_up  # (it imports this module)

    blocked = given_up(error)
    if blocked is not None:  # their `lock_timeout` or `statement_timeout`, in a unit there
        return blocked
    dialect = connection.dialect
    lost = dialect.is_disconnect(error, connection.connection.dbapi_connection, cursor)
    if lost:
        connection.invalidate(error)
    translated: Exception = exc.DBAPIError.instance(
        sql,
        None,
        error,
        dialect.loaded_dbapi.Error,
        hide_parameters=True,
        connection_invalidated=lost,
        dialect=dialect,
    )
    return translated


_plans: dict[tuple[int, str, str, frozenset[str] | None], Plan] = {}
_plans_lock = threading.Lock()


def plan_of(statement: ClauseElement, dialect: Dialect, params: Params) -> Plan:
    """The statement compiled for `dialect` (cached): what `run`, and the event loop's reads
    (`kit/loop_read.py`), send to a DB-API cursor."""
    columns = frozenset(params) if getattr(statement, "is_insert", False) else None
    key = (id(statement), dialect.name, dialect.driver, columns)
    plan = _plans.get(key)
    if plan is None:
        with _plans_lock:
            plan = _plans.setdefault(key, Plan(statement, dialect, columns))
    return plan


class Plan:
    """One statement compiled for one dialect: SQL, parameter slots, row conversion.

    Holds the statement, so the identity it is cached under is never reused by another."""

    def __init__(
        self, statement: ClauseElement, dialect: Dialect, columns: frozenset[str] | None
    ) -> None:
        compiled = cast(
            SQLCompiler,
            statement.compile(
                dialect=dialect, column_keys=sorted(columns) if columns is not None else None
            ),
        )
        self.statement = statement
        self.sql = compiled.string
        self.positional = dialect.positional
        bind_of = {name: bind for bind, name in compiled.bind_names.items()}
        names = (
            list(compiled.positiontup or ())
            if dialect.positional
            else list(dict.fromkeys(compiled.bind_names.values()))
        )
        defaults = {column.key: column.default for column in compiled.insert_prefetch}
        # (name, where its value comes from, the type's conversion)
        self.slots: list[tuple[str, Callable[[Params], Any], Any]] = []
        for name in names:
            bind = bind_of[name]
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            self.slots.append((name, _source(name, bind, defaults, columns), convert))
        returned = list(getattr(statement, "exported_columns", ()))
        self.returns = bool(compiled.returning) or getattr(statement, "is_select", False)
        self.results = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in returned
        ]
        self.converts = any(self.results)
        # a plain INSERT of one row's values, which `holding_inserts` may send later
        self.holdable = (
            bool(getattr(statement, "is_insert", False))
            and not self.returns
            and not self.positional
        )
        self.row_type = namedtuple("Row", [column.key for column in returned])  # type: ignore[misc]

    def arguments(self, params: Params) -> list[Any] | dict[str, Any]:
        values = [
            (take(params) if convert is None else convert(take(params)))
            for _, take, convert in self.slots
        ]
        if self.positional:
            return values
        return {name: value for (name, _, _), value in zip(self.slots, values, strict=True)}

    def row(self, found: Sequence[Any]) -> Any:
        if not self.converts:  # no column converts (text, integers): the driver's values
            return self.row_type._make(found)  # type: ignore[attr-defined]
        return self.row_type._make(  # type: ignore[attr-defined]
            value if convert is None else convert(value)
            for value, convert in zip(found, self.results, strict=True)
        )


def _source(
    name: str, bind: Any, defaults: dict[str, Any], columns: frozenset[str] | None
) -> Callable[[Params], Any]:
    """Where a parameter's value comes from: the caller, a column default, or the statement
    (a literal bound in it, or a bindparam's own value when the caller gives none)."""
    if bind.expanding:
        raise TypeError(f"parameter '{name}' expands (IN): raw_sql does not render those")
    if name in defaults and (columns is None or name not in columns):
        default = defaults[name]
        if default is None or not (default.is_scalar or default.is_callable):
            raise TypeError(f"column '{name}' has a default raw_sql cannot compute")
        if default.is_callable:
            return lambda _params: default.arg(None)
        return lambda _params: default.arg
    if bind.required or (columns is not None and name in columns):
        return lambda params: params[name]
    if bind.callable is not None:
        return lambda params: params[name] if name in params else bind.effective_value  # noqa: SIM401 - called only when absent
    value = bind.value
    return lambda params: params.get(name, value)
