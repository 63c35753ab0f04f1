"""Votes are the users' labour: concurrent writer processes lose and double nothing (both backends)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from sqlalchemy import func, select

from condsim_annot.models import Corpus, Criterion, Document, Vote
from condsim_annot.store_api import add_triplet

WRITER = textwrap.dedent(
    """
    import sys
    from condsim_annot.db import open_store
    from condsim_annot.store_api import get_or_create_annotator, record_vote
    url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = open_store(url)
    with store.transaction() as s:
        ann = get_or_create_annotator(s, name)
    for i in range(n):
        with store.transaction() as s:      # one vote, one commit: acknowledged = durable
            record_vote(s, 1 + i, ann.id, "first" if i % 2 else "second", source="tui")
        print(i, flush=True)
    """
)


def test_four_processes_write_votes_concurrently(store, db_url):
    n = 40
    with store.transaction() as s:
        c = Corpus(name="c")
        s.add(c)
        s.flush()
        docs = [Document(corpus_id=c.id, ext_id=str(i), text=str(i), content_hash=str(i)) for i in range(n + 2)]
        s.add_all(docs)
        crit = Criterion(name="k", description="d")
        s.add(crit)
        s.flush()
        ids = [d.id for d in docs]
        for i in range(n):
            add_triplet(s, crit.id, ids[0], ids[1 + i], ids[n + 1])
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, db_url, f"w{k}", str(n)], stdout=subprocess.PIPE, text=True) for k in range(4)]
    acknowledged = 0
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0
        acknowledged += len(out.split())
    with store.session() as s:
        total = s.scalar(select(func.count()).select_from(Vote))
        per = dict(s.execute(select(Vote.annotator_id, func.count()).group_by(Vote.annotator_id)).all())
    assert acknowledged == 4 * n
    assert total == 4 * n and sorted(per.values()) == [n] * 4
