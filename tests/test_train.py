"""The training stage: the adapter recovers a planted criterion, splits never share an anchor, the store-level
``train`` reads only the cache and gold (never re-embeds, never votes), and the adapter joins the committee."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import func, select

from condsim_annot.errors import CondsimError
from condsim_annot.train.adapter import BilinearAdapter, TripletArrays
from condsim_annot.train.evaluate import accuracy, correct, kfold_by_anchor, split_by_anchor


def planted(n_docs: int = 300, dim: int = 32, k: int = 4, seed: int = 0, latent: int = 0):
    """Unit document vectors, query-side vectors (the same plus a little noise) and a planted linear
    criterion s*(a, x) = (A q_a) . (A d_x) that the base cosine mostly ignores.  ``latent`` > 0: the
    vectors live in a random ``latent``-dimensional subspace (as sentence embeddings mostly do)."""
    rng = np.random.default_rng(seed)
    if latent:
        basis = np.linalg.qr(rng.normal(size=(dim, latent)))[0].T  # [latent, dim], orthonormal rows
        D = rng.normal(size=(n_docs, latent)) @ basis
        A = rng.normal(size=(k, latent)) @ basis
    else:
        D = rng.normal(size=(n_docs, dim))
        A = rng.normal(size=(k, dim))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Q = D + 0.1 * rng.normal(size=D.shape) / np.sqrt(dim / 32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    return D, Q, A


def planted_triplets(D, Q, A, n: int, seed: int = 1, min_gap: float = 0.3):
    """(anchor, pos, neg) with the planted similarity deciding, ties and near-ties left out (like gold)."""
    rng = np.random.default_rng(seed)
    S = (Q @ A.T) @ (D @ A.T).T
    rows = []
    while len(rows) < n:
        a, x, y = rng.choice(len(D), 3, replace=False)
        gap = S[a, x] - S[a, y]
        if abs(gap) >= min_gap:
            rows.append((a, x, y) if gap > 0 else (a, y, x))
    return np.asarray(rows)


def test_adapter_recovers_a_planted_linear_criterion():
    D, Q, A = planted()
    t = planted_triplets(D, Q, A, 1500)
    arr = TripletArrays(Q[t[:, 0]], D[t[:, 1]], D[t[:, 2]], np.full(len(t), 0.97))
    tr, te = split_by_anchor(t[:, 0], 0.3, seed=0)
    assert not set(t[tr, 0]) & set(t[te, 0])
    itr, iva = split_by_anchor(t[tr, 0], 0.2, seed=1)
    ad = BilinearAdapter(rank=4, temperature=0.2, l2=1e-4, max_steps=1000, patience=100).fit(
        arr.take(tr[itr]), arr.take(tr[iva])
    )
    held = arr.take(te)
    acc_adapter = correct(ad.margins(held)).mean()
    acc_base = correct(BilinearAdapter().margins(held)).mean()
    assert acc_adapter >= 0.95, (acc_adapter, acc_base)
    assert acc_base < 0.8  # the planted criterion is not what the base cosine measures
    assert 0 < ad.best_step_ <= 1000 and ad.history_
    # the weights round-trip through the stored blob, and the expanded vectors give the same scores
    back = BilinearAdapter.from_bytes(ad.to_bytes())
    np.testing.assert_allclose(back.margins(held), ad.margins(held), rtol=1e-4, atol=1e-5)
    expanded = np.einsum(
        "ij,ij->i", back.expand_queries(held.q), back.expand_documents(held.pos) - back.expand_documents(held.neg)
    )
    np.testing.assert_allclose(expanded, back.margins(held), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_no_anchor_on_both_sides_of_any_split(seed):
    rng = np.random.default_rng(seed)
    anchors = rng.integers(0, 40, 300)
    tr, te = split_by_anchor(anchors, 0.25, seed=seed)
    assert len(tr) + len(te) == len(anchors) and len(te) > 0 and not set(anchors[tr]) & set(anchors[te])
    folds = kfold_by_anchor(anchors, 5, seed=seed)
    seen = np.concatenate([te for _tr, te in folds])
    assert sorted(seen.tolist()) == list(range(len(anchors)))  # every triplet tested exactly once
    for tr, te in folds:
        assert not set(anchors[tr]) & set(anchors[te])


def test_cluster_bootstrap_is_wider_when_anchors_are_correlated():
    # 20 anchors, each all-right or all-wrong: the honest CI (resampling anchors) is wide
    groups = np.repeat(np.arange(20), 10)
    ok = np.repeat(np.arange(20) % 2, 10).astype(float)
    r = accuracy(ok, groups, B=2000)
    assert r["accuracy"] == 0.5 and r["anchors"] == 20
    assert r["ci"][1] - r["ci"][0] > 0.3
    r_iid = accuracy(ok, np.arange(200), B=2000)
    assert r_iid["ci"][1] - r_iid["ci"][0] < 0.2


# --------------------------------------------------------------------------- store level


def _seed_store(store, cache_dir, *, n_gold: int = 240, n_docs: int = 80, with_judge: bool = False):
    """A corpus whose embeddings sit in the cache (no model run), triplets proposed under a criterion,
    and a calibration run whose gold labels follow the planted criterion."""
    from condsim_annot.criteria import add_criterion, default_instruction
    from condsim_annot.ingest import ingest
    from condsim_annot.models import CalibrationRun, Criterion, Document, GoldLabel
    from condsim_annot.propose.cache import EmbeddingCache, model_key, query_key
    from condsim_annot.propose.embedding import resolve_model
    from condsim_annot.store_api import add_triplet, canonical, get_or_create_annotator, record_vote

    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    rng = np.random.default_rng(3)
    src = cache_dir / "docs.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": f"d{i}", "text": " ".join(rng.choice(words, 8)) + f" item {i}"}) + "\n"
            for i in range(n_docs)
        )
    )
    ingest(store, [str(src)], corpus="c")
    add_criterion(store, "crit", "planted criterion", instruction="Represent the planted view: ")
    D, Q, A = planted(n_docs, 384, 4, seed=5, latent=12)
    with store.session() as s:
        docs = s.execute(select(Document.id, Document.content_hash).order_by(Document.id)).all()
        crit = s.scalars(select(Criterion)).one()
        prompt = default_instruction(crit)
    ids = np.asarray([d for d, _h in docs])
    key = model_key(resolve_model(None))
    EmbeddingCache(cache_dir / "emb", key).append([h for _d, h in docs], D.astype(np.float32))
    EmbeddingCache(cache_dir / "emb", key + ".query").append(
        [query_key(prompt, h) for _d, h in docs], Q.astype(np.float32)
    )
    t = planted_triplets(D, Q, A, n_gold, seed=7, min_gap=0.5)
    with store.transaction() as s:
        run = CalibrationRun(criterion_id=crit.id, params={}, n_votes=0)
        s.add(run)
        s.flush()
        judge = get_or_create_annotator(s, "judge-x", kind="llm") if with_judge else None
        for k, (a, p, n) in enumerate(t):
            A_, f, sec, _sw = canonical(int(ids[a]), int(ids[p]), int(ids[n]))
            tr, _new = add_triplet(s, crit.id, A_, f, sec, strategy="audit" if k % 5 == 0 else "disagreement")
            label = "first" if f == int(ids[p]) else "second"
            s.add(
                GoldLabel(
                    calibration_run_id=run.id,
                    criterion_id=crit.id,
                    triplet_id=tr.id,
                    label=label,
                    probability=0.95,
                    n_votes=2,
                    status="gold",
                )
            )
            if judge is not None:
                record_vote(s, tr.id, judge.id, label, source="llm")
    return crit


@pytest.mark.backends("sqlite")  # MiniLM/CHAMP behaviour; the backends are tested where they matter
def test_train_reads_the_cache_and_gold_and_the_adapter_joins_the_committee(cli, tmp_path, monkeypatch, db_url):
    from condsim_annot.db import open_store
    from condsim_annot.models import Vote
    from condsim_annot.propose.select import propose
    from condsim_annot.propose.tables import TripletMargin
    from condsim_annot.train.tables import TrainedModel

    monkeypatch.setenv("CONDSIM_CACHE", str(tmp_path))
    store = open_store(db_url)
    _seed_store(store, tmp_path, with_judge=True)
    with store.session() as s:
        n_votes = s.scalar(select(func.count()).select_from(Vote))
    rep = json.loads(cli("train", "crit", "--json", "--bootstrap", "200", "--max-steps", "120").stdout)
    m = rep["metrics"]
    assert m["encoder_calls"] == 0 and m["encoder_texts_encoded"] == 0  # every vector came from the cache
    assert m["plan"].startswith("5-fold") and m["n_held_out"] == m["n_gold"] == 240
    by = {r["method"]: r for r in m["methods"]}
    assert {"adapter", "base embedding", "bm25", "judge:judge-x"} <= set(by)
    acc, base = by["adapter"]["all"]["accuracy"], by["base embedding"]["all"]["accuracy"]
    assert acc >= 0.85 and acc >= base + 0.15, (acc, base)
    assert by["adapter"]["audit"]["n"] == m["n_audit_held_out"] == 48
    lo, hi = by["adapter"]["all"]["ci"]
    assert lo <= by["adapter"]["all"]["accuracy"] <= hi
    assert by["judge:judge-x"]["all"]["accuracy"] == 1.0 and "optimistic" in by["judge:judge-x"]["note"]
    with store.session() as s:
        row = s.scalars(select(TrainedModel)).one()
        assert row.kind == "adapter" and row.weights and row.n_train == 240 and row.criterion_version == 1
        assert row.params["rank"] == 16 and row.metrics["methods"] and len(row.train_triplets) == 240
        assert s.scalar(select(func.count()).select_from(Vote)) == n_votes  # training never touches votes
    # the adapter is a committee member: its margins are stored with the new triplets
    summ = propose(store, "crit", methods=["bm25", "adapter"], budget=300, seed=2)
    assert summ.methods == ["bm25", "adapter"] and summ.added == 60, summ.skipped
    assert summ.method_info["adapter"]["texts_encoded"] == 0
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(TripletMargin).where(TripletMargin.method == "adapter")) == 60
    # the leaderboard never scores the adapter on triplets it was trained on, and shows its held-out report
    from sqlalchemy import insert

    from condsim_annot.exporters.leaderboard import leaderboard

    with store.transaction() as s:
        s.execute(
            insert(TripletMargin),
            [
                {"triplet_id": t, "method": m, "score_first": 1.0, "score_second": 0.0, "margin": 1.0}
                for t in row.train_triplets[:5]
                for m in ("adapter", "embedding")
            ],
        )
    lb = leaderboard(store, "crit", bootstrap=100)
    by_m = {r["method"]: r for r in lb["methods"]}
    assert by_m["embedding"]["n"] == 5 and "adapter" not in by_m
    assert [t["kind"] for t in lb["trained"]] == ["adapter"] and lb["trained"][0]["plan"].startswith("5-fold")
    assert "biased" in lb["labels"]["accuracy"] and "unbiased" in lb["labels"]["audit"]
    text = cli("leaderboard", "crit", "--bootstrap", "100").stdout
    assert f"trained model #{row.id} (adapter" in text and "audit = random audit slice" in text
    store.close()


def test_too_few_gold_triplets_is_a_clear_error(sqlite_store, tmp_path, monkeypatch):
    from condsim_annot.train.pipeline import train

    monkeypatch.setenv("CONDSIM_CACHE", str(tmp_path))
    _seed_store(sqlite_store, tmp_path, n_gold=12)
    with pytest.raises(CondsimError, match=r"has 12 gold triplets .* needs at least 30 gold triplets .*18 more"):
        train(sqlite_store, "crit")


def test_adapter_method_skips_until_trained(sqlite_store, tmp_path, monkeypatch):
    from condsim_annot.propose.select import propose

    monkeypatch.setenv("CONDSIM_CACHE", str(tmp_path))
    _seed_store(sqlite_store, tmp_path, n_gold=40)
    s = propose(sqlite_store, "crit", methods=["bm25", "adapter"], budget=50, dry_run=True)
    assert s.methods == ["bm25"] and "condsim-annot train crit" in s.skipped["adapter"]


@pytest.mark.backends("sqlite")
def test_train_cli_errors_are_one_clear_line(cli):
    res = cli("train", "nope", expect_ok=False)
    assert res.exit_code == 1 and "no criterion named 'nope'" in res.output and "Traceback" not in res.output
    res = cli("train", "nope", "--full", expect_ok=False)
    assert res.exit_code == 2 and "--full needs --out" in res.output


def test_averaged_adapter_scores_the_mean_of_its_members_and_round_trips():
    D, Q, A = planted(n_docs=120, dim=16, k=2, seed=4)
    t = planted_triplets(D, Q, A, 300, seed=5)
    arr = TripletArrays(Q[t[:, 0]], D[t[:, 1]], D[t[:, 2]], np.ones(len(t)))
    members = [
        BilinearAdapter(rank=3, bias=True, max_steps=40, seed=s).fit(arr.take(np.arange(s, len(t), 3)))
        for s in range(3)
    ]
    avg = BilinearAdapter.average(members)
    assert avg.rank == 9 and avg.members_ == 3 and avg.b_ is not None
    np.testing.assert_allclose(avg.margins(arr), np.mean([m.margins(arr) for m in members], axis=0), atol=1e-10)
    back = BilinearAdapter.from_bytes(avg.to_bytes())
    assert back.members_ == 3 and back.bias
    np.testing.assert_allclose(back.margins(arr), avg.margins(arr), rtol=1e-4, atol=1e-5)
    expanded = np.einsum(
        "ij,ij->i", back.expand_queries(arr.q), back.expand_documents(arr.pos) - back.expand_documents(arr.neg)
    )
    np.testing.assert_allclose(expanded, avg.margins(arr), rtol=1e-3, atol=1e-4)


def test_paired_difference_cancels_the_shared_luck_of_the_test_set():
    from condsim_annot.train.evaluate import paired_difference

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 5)
    hard = np.repeat(rng.random(40) < 0.5, 5)  # half the anchors are hard for both methods
    a = np.where(hard, rng.random(200) < 0.3, rng.random(200) < 0.95).astype(float)
    b = a.copy()
    flip = rng.choice(np.flatnonzero(a == 1), 12, replace=False)  # b loses 12 of a's right answers
    b[flip] = 0
    d = paired_difference(a, b, groups, B=2000)
    assert d["diff"] == pytest.approx(12 / 200) and d["n"] == 200 and d["anchors"] == 40
    assert 0 < d["ci"][0] <= d["diff"] <= d["ci"][1] and d["p_le_0"] < 0.05
    # compared unpaired, the two accuracies' CIs overlap: the anchors' difficulty dominates them
    ra, rb = accuracy(a, groups, B=2000), accuracy(b, groups, B=2000)
    assert ra["ci"][0] < rb["ci"][1]
    same = paired_difference(a, a, groups, B=500)
    assert same["diff"] == 0 and same["ci"] == [0.0, 0.0] and same["p_le_0"] == 1.0


@pytest.mark.backends("sqlite")
def test_fine_tune_on_every_fold_tests_each_triplet_once_and_is_cached(sqlite_store, tmp_path, monkeypatch):
    from condsim_annot.train.pipeline import TrainOptions, train

    monkeypatch.setenv("CONDSIM_CACHE", str(tmp_path))
    _seed_store(sqlite_store, tmp_path, n_gold=40, n_docs=40)
    opt = TrainOptions(
        full=True,
        full_folds=True,
        kfold=2,
        kfold_below=10**6,
        full_max_steps=1,
        batch_size=8,
        out=str(tmp_path / "ft"),
        full_cache=str(tmp_path / "ft-cache"),
        bootstrap=100,
        max_steps=30,
        write=False,
    )
    said: list[str] = []
    rep = train(sqlite_store, "crit", opt, say=said.append)
    m = rep["metrics"]
    by = {r["method"]: r for r in m["methods"]}
    assert m["plan"].startswith("2-fold") and rep["full"]["folds"] == 2
    assert by["fine-tuned"]["all"]["n"] == m["n_held_out"] == 40  # every triplet tested once, by the fold's model
    pair = {r["method"]: r for r in m["paired"]}["adapter - fine-tuned"]["all"]
    ft_acc, ad_acc = by["fine-tuned"]["all"]["accuracy"], by["adapter"]["all"]["accuracy"]
    assert pair["n"] == 40 and pair["diff"] == pytest.approx(ad_acc - ft_acc)
    assert len(list((tmp_path / "ft-cache").glob("*.json"))) == 2 and not any(
        "fine-tune of this split read from" in x for x in said
    )
    again = train(sqlite_store, "crit", opt, say=said.append)  # the same splits: both fine-tunes come from the cache
    assert sum("fine-tune of this split read from" in x for x in said) == 2
    assert {r["method"]: r for r in again["metrics"]["methods"]}["fine-tuned"]["all"] == by["fine-tuned"]["all"]
