"""`condsim-annot votes import FILE.csv`: canonical order, one transaction, file:line:field errors, idempotent."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from condsim_annot.models import Annotator, Document, Triplet, Vote


def _setup(cli, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"p{i}", "text": f"problem {i}"}) + "\n" for i in range(1, 6)))
    cli("ingest", docs)
    cli("criteria", "add", "proof", "-d", "same proof technique")


def _count(store, model, *where):
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def test_import_votes_canonical_and_idempotent(cli, store, tmp_path):
    _setup(cli, tmp_path)
    f = tmp_path / "votes.csv"
    f.write_text(
        "criterion,anchor,a,b,annotator,choice,kind,confidence\n"
        "proof,p1,p3,p2,alice,a,human,\n"   # a=p3 shown first; canonical first=p2 -> swapped, choice second
        "proof,p1,p2,p3,bob,b,human,\n"     # same triplet, b=p3 -> canonical second
        "proof,p1,p2,p4,gpt,tie,llm,0.7\n"
        "proof,p1,p2,p5,carol,cant_tell,,\n"
        "proof,p1,p4,p5,carol,skip,,\n"
    )
    res = cli("votes", "import", f, "--json")
    r = json.loads(res.stdout)
    assert r["read"] == 5 and r["added"] == 5 and r["triplets_created"] == 4
    with store.session() as s:
        ids = {d: i for d, i in s.execute(select(Document.ext_id, Document.id)).all()}
        t = s.scalars(select(Triplet).where(Triplet.anchor_id == ids["p1"], Triplet.first_id == ids["p2"],
                                            Triplet.second_id == ids["p3"])).one()
        votes = {s.get(Annotator, v.annotator_id).name: v for v in s.scalars(select(Vote).where(Vote.triplet_id == t.id))}
        assert votes["alice"].choice == "second" and votes["alice"].swapped is True
        assert votes["bob"].choice == "second" and votes["bob"].swapped is False
        assert all(v.source == "import" for v in votes.values())
        gpt = s.scalars(select(Annotator).where(Annotator.name == "gpt")).one()
        assert gpt.kind == "llm"
        assert s.scalars(select(Vote.confidence).where(Vote.annotator_id == gpt.id)).one() == 0.7
    # importing again adds nothing
    res = cli("votes", "import", f)
    assert "added 0 votes, 5 already there" in res.stdout
    assert _count(store, Vote) == 5
    # and the imported votes calibrate
    cli("calibrate", "proof", "--min-votes", "1")


def test_import_errors_name_file_line_field_and_write_nothing(cli, store, tmp_path):
    _setup(cli, tmp_path)
    head = "criterion,anchor,a,b,annotator,choice\n"
    good = "proof,p1,p2,p3,alice,a\n"
    cases = [
        (head + good + "proof,p1,p2,p9,alice,a\n", "bad.csv:3: field 'b': no document with id 'p9'"),
        (head + good + "proof,p1,p2,p3,alice,maybe\n", "bad.csv:3: field 'choice': unknown choice 'maybe'"),
        (head + good + "nope,p1,p2,p3,alice,a\n", "bad.csv:3: field 'criterion': no criterion named 'nope'"),
        (head + good + "proof,p1,p1,p3,alice,a\n", "bad.csv:3: field 'a': the anchor is also a candidate"),
        (head + good + "proof,p1,p2,p2,alice,a\n", "bad.csv:3: field 'b': the two candidates are the same document"),
        (head + good + "proof,p1,p2,p3,,a\n", "bad.csv:3: field 'annotator': empty value"),
        ("criterion,anchor,a,annotator,choice\n" + "proof,p1,p2,alice,a\n", "bad.csv:1: missing column(s) b"),
        (head + good + "proof,p1,p2,p3,alice,a,extra\n", "bad.csv:3: 7 cells but 6 columns"),
        ("criterion,anchor,a,b,annotator,choice,kind\n" + "proof,p1,p2,p3,alice,a,robot\n", "bad.csv:2: field 'kind': unknown kind"),
    ]
    for text, msg in cases:
        f = tmp_path / "bad.csv"
        f.write_text(text)
        res = cli("votes", "import", f, expect_ok=False)
        assert res.exit_code == 1, text
        assert msg in res.output.replace("\n", ""), (msg, res.output)
        assert "Traceback" not in res.output
    assert _count(store, Vote) == 0 and _count(store, Triplet) == 0  # every file rolled back whole
    res = cli("votes", "import", tmp_path / "missing.csv", expect_ok=False)
    assert res.exit_code != 0
