"""Ingest: formats, idempotence, --update, and every bad input named with nothing written."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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
