"""Ingest: formats, idempotence, --update, and every bad input named with nothing written."""

from __future__ import annotations

import copy
import json
import os
import sqlite3
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from condsim_annot import ingest as ing
from condsim_annot import ingest_writer
from condsim_annot.errors import InputError
from condsim_annot.ingest import ingest


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [
    {"id": "p1", "text": "Prove by induction that 2^n > n.", "topic": "algebra"},
    {"id": "p2", "text": "How many strings of length 6 ...?", "topic": "combinatorics"},
    {"id": "p3", "text": "Use the pigeonhole principle to show ...", "topic": "combinatorics"},
]


def doc_count(cli):
    return json.loads(cli("status", "--json").output)["documents"]


def test_jsonl_ingest_keeps_metadata_and_is_idempotent(cli, store, tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", ROWS)
    r = cli("ingest", f)
    assert "added 3" in r.output
    r = cli("ingest", f)
    assert "added 0" in r.output and "unchanged 3" in r.output
    assert doc_count(cli) == 3
    from sqlalchemy import select

    from condsim_annot.models import Document

    with store.session() as s:
        d = s.scalars(select(Document).where(Document.ext_id == "p1")).one()
    assert d.meta == {"topic": "algebra"} and len(d.content_hash) == 64


def test_csv_parquet_and_stdin(cli, tmp_path):
    c = tmp_path / "d.csv"
    c.write_text('doc,body,extra\nc1,"multi\nline text",x\nc2,plain,y\n', encoding="utf-8")
    cli("ingest", c, "--id-field", "doc", "--text-field", "body")
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"id": ["q1", "q2"], "text": ["one", "two"], "n": [1, 2]}), p)
    cli("ingest", p)
    cli("ingest", "-", input='{"id": "s1", "text": "from stdin"}\n')
    assert doc_count(cli) == 5


def test_same_id_different_text_needs_update(cli, tmp_path):
    cli("ingest", write_jsonl(tmp_path / "a.jsonl", ROWS))
    changed = [dict(ROWS[0], text="A different text")] + ROWS[1:]
    f = write_jsonl(tmp_path / "b.jsonl", changed)
    r = cli("ingest", f, expect_ok=False)
    assert r.exit_code == 1
    assert "b.jsonl:1: field 'id'" in r.output and "--update" in r.output
    r = cli("ingest", f, "--update")
    assert "updated 1" in r.output


BAD = [
    ("malformed.jsonl", b'{"id": "1", "text": "ok"}\n{"id": "2", "text": \n', "malformed.jsonl:2", "malformed JSON"),
    ("noid.jsonl", b'{"id": "1", "text": "ok"}\n{"text": "no id"}\n', "noid.jsonl:2: field 'id'", "missing"),
    ("notext.jsonl", b'{"id": "1", "text": "ok"}\n{"id": "2"}\n', "notext.jsonl:2: field 'text'", "missing"),
    (
        "empty.jsonl",
        b'{"id": "1", "text": "ok"}\n{"id": "2", "text": "   "}\n',
        "empty.jsonl:2: field 'text'",
        "empty text",
    ),
    (
        "dup.jsonl",
        b'{"id": "1", "text": "ok"}\n{"id": "2", "text": "b"}\n{"id": "1", "text": "c"}\n',
        "dup.jsonl:3: field 'id'",
        "duplicate id",
    ),
    ("latin1.jsonl", b'{"id": "1", "text": "ok"}\n{"id": "2", "text": "caf\xe9"}\n', "latin1.jsonl:2", "UTF-8"),
    ("latin1.csv", b"id,text\n1,ok\n2,caf\xe9\n", "latin1.csv:3", "UTF-8"),
    ("short.csv", b"id,text\n1,ok\n2\n", "short.csv:3", "columns"),
    ("data.xml", b"<xml/>", "data.xml", "unknown file type"),
]



def test_unreachable_database_is_one_clear_error(tmp_path):
    from click.testing import CliRunner

    from condsim_annot.cli import main

    r = CliRunner().invoke(main, ["--db", "postgresql+psycopg://nobody:secret@127.0.0.1:1/x", "status"])
    assert r.exit_code == 1
    assert "cannot connect to database" in r.output and "secret" not in r.output
    r = CliRunner().invoke(main, ["--db", str(tmp_path / "missing" / "x.db"), "status"])
    assert r.exit_code == 1 and "does not exist" in r.output


def test_ingest_api_reports_progress(store, tmp_path):
    rows = [{"id": str(i), "text": f"text {i}"} for i in range(2500)]
    f = write_jsonl(tmp_path / "big.jsonl", rows)
    calls = []
    res = ingest(store, [str(f)], progress=lambda name, done, total: calls.append((done, total)))
    assert res.added == 2500
    assert len(calls) >= 3 and calls[-1][0] == calls[-1][1] == f.stat().st_size


EDGE = [
    (
        "quote.csv",
        b'id,text\n1,ok\n2,"never closed\n3,swallowed\n4,also swallowed\n',
        "quote.csv:3",
        "unterminated quoted field",
    ),
    ("fake.parquet", b"this is not parquet at all\n", "fake.parquet", "not a readable Parquet file"),
    (
        "deep.jsonl",
        b'{"id": "1", "text": "ok", "m": ' + b"[" * 100000 + b"]" * 100000 + b"}\n",
        "deep.jsonl:1",
        "nested too deeply",
    ),
    (
        "nested.jsonl",
        b'{"id": "1", "text": "ok", "m": ' + b"[" * 80 + b"]" * 80 + b"}\n",
        "nested.jsonl:1: field 'm'",
        "nested deeper than 64",
    ),
    (
        "surrogate.jsonl",
        b'{"id": "1", "text": "bad \\ud800 half"}\n',
        "surrogate.jsonl:1: field 'text'",
        "lone surrogate",
    ),
    ("nul.jsonl", b'{"id": "1", "text": "a\\u0000b"}\n', "nul.jsonl:1: field 'text'", "NUL character"),
    ("nulid.csv", b"id,text\na\x00b,text\n", "nulid.csv:2: field 'id'", "NUL character"),
    (
        "nulmeta.jsonl",
        b'{"id": "1", "text": "t", "src": "x\\u0000y"}\n',
        "nulmeta.jsonl:1: field 'src'",
        "NUL character",
    ),
    ("longid.jsonl", b'{"id": "' + b"x" * 501 + b'", "text": "t"}\n', "longid.jsonl:1: field 'id'", "at most 500"),
    ("empty.jsonl", b"", "empty.jsonl", "empty file"),
    ("blank.jsonl", b"\n\n", "blank.jsonl", "empty file"),
    ("header.csv", b"id,text\n", "header.csv", "empty file"),
]


@pytest.mark.parametrize("name,content,where,what", BAD + EDGE, ids=[e[0] for e in BAD + EDGE])
def test_bad_input_is_named_and_nothing_is_written(cli, tmp_path, name, content, where, what):
    """One line naming file, line and field; nothing written, not even the good file given first in the same
    command. The EDGE cases (defect 14.7) were silent merges (CSV), 40-120-line tracebacks or a PostgreSQL-only
    crash; both backends must answer alike."""
    good = write_jsonl(tmp_path / "good.jsonl", ROWS)
    bad = tmp_path / name
    bad.write_bytes(content)
    r = cli("ingest", good, bad, expect_ok=False)
    assert r.exit_code == 1, r.output
    assert where in r.output and what in r.output, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) <= 3, r.output
    assert doc_count(cli) == 0


@pytest.mark.backends("sqlite")
def test_a_folder_is_a_one_line_error(cli, tmp_path):
    (tmp_path / "docs.jsonl").mkdir()
    r = cli("ingest", tmp_path / "docs.jsonl", expect_ok=False)
    assert r.exit_code == 1 and "is a folder" in r.output and "Traceback" not in r.output


def test_nan_and_infinity_in_metadata_are_stored_alike(cli, store, tmp_path):
    """Defect 14.7: NaN/Infinity in metadata were stored by SQLite but crashed PostgreSQL."""
    f = tmp_path / "nan.jsonl"
    f.write_bytes(
        b'{"id": "1", "text": "t", "score": NaN, "hi": Infinity, "lo": -Infinity, "ok": 1.5, '
        b'"nested": {"x": [NaN, 2]}}\n'
    )
    cli("ingest", f)
    from sqlalchemy import select

    from condsim_annot.models import Document

    with store.session() as s:
        meta = s.scalars(select(Document.meta)).one()
    assert meta == {"score": None, "hi": None, "lo": None, "ok": 1.5, "nested": {"x": [None, 2]}}


# --------------------------------------------------------------------------- the fast paths (issue 15: ingest speed)


def _outcome(fn, *args):
    try:
        return fn(*args)
    except InputError as exc:
        return f"error: {exc}"


_PIECES = st.sampled_from(["a", "Z", "7", " ", "\t", "\n", "\x00", "\ud800", "\udfff", "é", "😀", "\u2028",
                           "\\u0000", "{", "[", "]", '"', "\\"])
_STRINGS = st.lists(_PIECES, max_size=6).map("".join) | st.text(max_size=6)
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | _STRINGS
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_STRINGS, inner,
                                                                                            max_size=3), max_leaves=8)


def _nested(depth):
    v: object = 1
    for _ in range(depth):
        v = [v]
    return v


def _agree(raw_id, text, meta):
    meta = {k: v for k, v in meta.items() if k not in ("id", "text")}
    data = {"id": raw_id, "text": text, **meta}
    fast = _outcome(ing._doc, 3, copy.deepcopy(data), "f.jsonl", "id", "text")
    exact = _outcome(ing._doc_exact, 3, raw_id, text, copy.deepcopy(meta), "f.jsonl", "id", "text")
    assert fast == exact
    if not isinstance(fast, str):
        ext_id, stored_text, stored_meta, digest = fast
        assert digest == ing.content_hash(stored_text) and isinstance(json.loads(stored_meta), dict)
    return fast


_BAD = "\ud800"
ROW_CASES = [  # each check of the fast path, one at a time, with the value just inside and just outside
    ("a", "ok", {}), (" a ", "ok", {}), ("a\x00b", "ok", {}), ("a" + _BAD, "ok", {}), ("é", "ok", {}), ("  ", "ok", {}),
    ("x" * 500, "ok", {}), ("x" * 501, "ok", {}), (5, "ok", {}), (1.5, "ok", {}), (True, "ok", {}), (None, "ok", {}),
    (["l"], "ok", {}), ("a", "a\x00b", {}), ("a", "a" + _BAD, {}), ("a", "", {}), ("a", " \t\n", {}),
    ("a", "\u2028", {}), ("a", 5, {}), ("a", None, {}), ("a", "Gödel 😀", {"m": "naïve", "k😀": ["α"]}),
    ("a", "ok", {"m": "a\x00b"}), ("a", "ok", {"a\x00": 1}), ("a", "ok", {"m": "a" + _BAD}), ("a", "ok", {_BAD: 1}),
    ("a", "ok", {"m": "a\\u0000b"}), ("a", "ok", {"m": float("nan")}), ("a", "ok", {"m": [{"x": float("-inf")}]}),
    ("a", "ok", {"m": 1e308, "n": -0.0, "b": False, "z": None}), ("a", "ok", {"m": _nested(63)}),
    ("a", "ok", {"m": _nested(64)}), ("a", "ok", {"m": "{" * 70}), ("a", "ok", {"m": {"n": {"o": [1]}}}),
]


@pytest.mark.parametrize("raw_id,text,meta", ROW_CASES)
def test_each_fast_check_agrees_with_the_exact_path(raw_id, text, meta):
    _agree(raw_id, text, meta)


@settings(max_examples=200, deadline=None)
@given(raw_id=_SCALARS, text=_SCALARS, meta=st.dictionaries(_STRINGS, _VALUES, max_size=4))
@example(raw_id=" x ", text="ok", meta={"m": _nested(63)})
@example(raw_id="x", text="ok", meta={"m": _nested(64)})
@example(raw_id="x" * 501, text="ok", meta={})
@example(raw_id=12, text=" \u2028 ", meta={})
@example(raw_id="x", text="ok", meta={"k": "a\\u0000b"})
def test_fast_row_checks_agree_with_the_exact_path(raw_id, text, meta):
    """What `_doc`'s few C checks accept must be exactly what the value-by-value path accepts, with the same
    stored values (ids, text, metadata JSON, hash); anything else must end in the same error."""
    _agree(raw_id, text, meta)


@pytest.mark.parametrize("line", [
    b'{"id": "1", "text": "t"}\n', b'{"id": "1", "text": "t"}\r\n', b'{"id": "1", "text": "t"}', b' {"id": "1", '
    b'"text": "t"} \n', b'\xef\xbb\xbf{"id": "1", "text": "t"}\n', b'{"id": "1", "text": "t"}\x0c\n',
    b'{"id": "1", "text": "t"} {}\n', b'[1]\n', b'{"id": 1e999, "text": "t", "x": NaN}\n', b"\n",
])
def test_jsonl_lines_read_as_json_loads_reads_them(tmp_path, line):
    """The scanner shortcut of `read_jsonl` against json.loads (a BOM allowed on the first line only)."""
    text = line.decode("utf-8")
    text = text[1:] if text.startswith("\ufeff") else text
    try:
        expected = [] if not text.strip() else [json.loads(text)]
        if expected and not isinstance(expected[0], dict):
            expected = "error"
    except ValueError:
        expected = "error"
    try:
        got = [obj for _, obj in ing.read_jsonl([line], "f.jsonl")]
    except InputError:
        got = "error"
    assert json.dumps(got) == json.dumps(expected)


def test_unicode_ids_nested_metadata_and_numeric_ids_are_stored_alike(cli, store, tmp_path):
    f = write_jsonl(tmp_path / "u.jsonl", [
        {"id": "é-1", "text": "naïve Gödel 😀", "auteur": "Gödel", "tags": ["α", {"x": [1, None]}]},
        {"id": 7, "text": "numeric id", "n": 1.5, "ok": True},
    ])
    cli("ingest", f)
    from sqlalchemy import select

    from condsim_annot.models import Document

    with store.session() as s:
        docs = {d.ext_id: d for d in s.scalars(select(Document))}
    assert docs["é-1"].meta == {"auteur": "Gödel", "tags": ["α", {"x": [1, None]}]}
    assert docs["é-1"].content_hash == ing.content_hash("naïve Gödel 😀")
    assert docs["7"].meta == {"n": 1.5, "ok": True} and docs["7"].created_at is not None


def test_batches_meet_duplicates_repeats_and_updates(cli, tmp_path):
    """More rows than a batch: an id repeated two batches apart is named at its second line; re-ingesting is
    'unchanged' for all; a changed text in a later batch needs --update and then only that row changes."""
    n = ing.BATCH + 700
    rows = [{"id": f"r{i}", "text": f"text {i}"} for i in range(n)]
    dup = write_jsonl(tmp_path / "dup.jsonl", rows + [{"id": "r5", "text": "again"}])
    r = cli("ingest", dup, expect_ok=False)
    assert r.exit_code == 1 and f"dup.jsonl:{n + 1}: field 'id'" in r.output and "duplicate id" in r.output
    assert doc_count(cli) == 0
    f = write_jsonl(tmp_path / "ok.jsonl", rows)
    assert f"added {n}" in cli("ingest", f).output
    assert f"added 0, updated 0, unchanged {n}" in cli("ingest", f).output
    rows[ing.BATCH + 10]["text"] = "changed"
    g = write_jsonl(tmp_path / "changed.jsonl", rows)
    r = cli("ingest", g, expect_ok=False)
    assert r.exit_code == 1 and f"changed.jsonl:{ing.BATCH + 11}: field 'id'" in r.output
    assert f"updated 1, unchanged {n - 1}" in cli("ingest", g, "--update").output
    assert doc_count(cli) == n


def _index_sql(path):
    with sqlite3.connect(path) as c:
        return sorted(c.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name = 'document'").fetchall())


@pytest.mark.backends("sqlite")
def test_large_ingest_rebuilds_the_indexes_it_dropped(cli, store, db_url, tmp_path, monkeypatch):
    """Past DEFER_INDEXES_AFTER rows the non-unique indexes are dropped and built again before the commit: the
    schema is the same afterwards, and a failed ingest leaves it untouched (all one transaction)."""
    path = db_url.removeprefix("sqlite:///")
    before = _index_sql(path)
    assert any("ix_document_content_hash" in name for name, _ in before)
    monkeypatch.setattr(ingest_writer, "DEFER_INDEXES_AFTER", 1)
    rows = [{"id": f"r{i}", "text": f"text {i}"} for i in range(ing.BATCH + 5)]
    good = write_jsonl(tmp_path / "good.jsonl", rows)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "x"}])
    r = cli("ingest", good, bad, expect_ok=False)
    assert r.exit_code == 1 and "bad.jsonl:1: field 'text'" in r.output
    assert _index_sql(path) == before and doc_count(cli) == 0
    with store.engine.connect() as c:  # the API writes through the pool's connection: it must get it back as it was
        cache = c.exec_driver_sql("PRAGMA cache_size").scalar()
    assert ingest(store, [str(good)]).added == len(rows)
    with store.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA cache_size").scalar() == cache
    assert _index_sql(path) == before and doc_count(cli) == len(rows)
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        plan = c.execute("EXPLAIN QUERY PLAN SELECT id FROM document WHERE content_hash = ?", ("x",)).fetchall()
    assert "ix_document_content_hash" in str(plan)


def test_migration_heads_are_read_as_alembic_reads_them(tmp_path):
    from alembic.script import ScriptDirectory

    from condsim_annot.db import alembic_config, make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert ing.migration_heads() == set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
    engine.dispose()


@pytest.mark.parametrize("db,expected", [
    ("x.db", "x.db"), ("~/x.db", os.path.expanduser("~/x.db")), ("sqlite:///x.db", "x.db"),
    ("sqlite:////tmp/x.db", "/tmp/x.db"), ("sqlite:///x.db?mode=ro", None), ("sqlite://", None),
    ("sqlite:///:memory:", None), ("postgresql://me@host/db", None),
])
def test_sqlite_path_of_db_option(db, expected):
    assert ingest_writer.sqlite_path(db) == expected


class _Opened(Exception):
    pass


def _must_not_open():
    raise _Opened


@pytest.mark.backends("sqlite")
def test_command_writes_a_migrated_sqlite_store_without_sqlalchemy(db_url, tmp_path):
    """The command's start-up: a store at the current migrations is written through sqlite3 alone; a new
    file, or a store whose migrations differ, goes through open_store (which creates or migrates it)."""
    f = write_jsonl(tmp_path / "p.jsonl", ROWS)
    path = db_url.removeprefix("sqlite:///")
    code = ("import sys; from condsim_annot.cli import main; "
            f"main(['--db', {path!r}, 'ingest', {str(f)!r}], standalone_mode=False); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic', 'sqlmodel')); "
            "print('imported:', heavy); sys.exit(len(heavy) > 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "added 3" in r.stdout, r.stdout + r.stderr
    assert ing.ingest_db(db_url, [str(f)], _must_not_open).unchanged == 3
    with sqlite3.connect(path) as c:
        c.execute("UPDATE alembic_version SET version_num = 'elsewhere' WHERE rowid = (SELECT min(rowid) FROM "
                  "alembic_version)")
    with pytest.raises(_Opened):
        ing.ingest_db(db_url, [str(f)], _must_not_open)
    with pytest.raises(_Opened):
        ing.ingest_db(str(tmp_path / "new.db"), [str(f)], _must_not_open)
    from click.testing import CliRunner

    from condsim_annot.cli import main

    r2 = CliRunner().invoke(main, ["--db", str(tmp_path / "new.db"), "ingest", str(f)])
    assert r2.exit_code == 0 and "added 3" in r2.output, r2.output
