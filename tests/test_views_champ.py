"""Views on the 270 CHAMP problems before any vote: the topic criterion separates CHAMP's categories
better than the technique criterion, and method agreement matches an independent computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def test_champ_topic_separates_categories_and_agreement_matches_an_independent_computation(
    sqlite_store, tmp_path, monkeypatch, champ_problems, champ_cache
):
    import bm25s
    from sentence_transformers import SentenceTransformer
    from sqlalchemy import select

    from condsim_annot.criteria import add_criterion
    from condsim_annot.demo import DEMO_CRITERIA
    from condsim_annot.ingest import ingest
    from condsim_annot.models import Document
    from condsim_annot.propose.cache import EmbeddingCache, model_key, query_key
    from condsim_annot.propose.embedding import default_model_path, resolve_model
    from condsim_annot.views.build import ViewOptions, build_views

    monkeypatch.setenv("CONDSIM_CACHE", champ_cache)  # MiniLM's CHAMP vectors, encoded by the library (conftest)
    f = tmp_path / "champ.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in champ_problems))
    ingest(sqlite_store, [str(f)])
    for c in DEMO_CRITERIA:
        add_criterion(sqlite_store, c["name"], c["description"], instruction=c["instruction"])
    data = build_views(
        sqlite_store, ["same-topic", "same-technique"], ViewOptions(projection="pca", color_by="category")
    )
    sil = {(r["criterion"], r["space"]): r["silhouette_space"] for r in data["silhouettes"]}
    topic, technique = sil[("same-topic", "embedding")], sil[("same-technique", "embedding")]
    print(
        f"CHAMP category silhouette (MiniLM, cosine): same-topic {topic:.4f}, same-technique {technique:.4f}; "
        f"bm25 {sil[('same-topic', 'bm25')]:.4f} under both"
    )
    assert topic > technique
    assert sil[("same-topic", "bm25")] == sil[("same-technique", "bm25")]  # criterion-blind

    # independent: sentence-transformers and bm25s called directly, CKA by the trace formula, Jaccard by sets.
    # The library's vectors of all 270 documents (its cache, by content hash and prompt) are checked against
    # sentence-transformers on a sample (the 6 longest texts and 14 at random: encoding all 270 again costs ~25 s
    # of the suite); the formulas below then run on those vectors.
    ag = data["agreement"]
    assert ag["sample"]["described"] == "the whole corpus (270 documents)"
    rows = data["docs"]
    by_id = {r["id"]: r for r in champ_problems}
    texts = [by_id[r["id"]]["text"] for r in rows]
    topic_prompt = DEMO_CRITERIA[1]["instruction"]
    with sqlite_store.session() as s:
        hash_of = dict(s.execute(select(Document.ext_id, Document.content_hash)).all())
    name = resolve_model(None)
    cache = EmbeddingCache(Path(champ_cache) / "emb", model_key(name) + ".query", model=name)
    E = cache.get([query_key(topic_prompt, hash_of[r["id"]]) for r in rows])
    rng = np.random.default_rng(0)
    longest = np.argsort([-len(t) for t in texts])[:6]
    sample = np.unique(np.concatenate([longest, rng.choice(len(texts), 14, replace=False)]))
    direct = SentenceTransformer(default_model_path(), device="cpu").encode(
        [texts[k] for k in sample], prompt=topic_prompt, normalize_embeddings=True
    )
    assert np.abs(E[sample] - direct).max() < 1e-4
    K_emb = E.astype(np.float64) @ E.T.astype(np.float64)
    retriever = bm25s.BM25(k1=1.5, b=0.75)
    tok = bm25s.tokenize(texts, stopwords="english", show_progress=False, allow_empty=True)
    retriever.index(tok, show_progress=False)
    empty = tok.vocab.get("")
    S = np.array(
        [retriever.get_scores_from_ids([int(t) for t in set(ids) if t != empty]) for ids in tok.ids], dtype=np.float64
    )
    n = len(texts)
    H = np.eye(n) - 1.0 / n
    Ks = (S + S.T) / 2
    cka = np.trace(K_emb @ H @ Ks @ H) / np.sqrt(np.trace(K_emb @ H @ K_emb @ H) * np.trace(Ks @ H @ Ks @ H))

    def knn(M, i):
        order = [j for j in np.argsort(-M[i], kind="stable") if j != i]
        return set(order[:10])

    jac = np.mean([len(knn(K_emb, i) & knn(S, i)) / len(knn(K_emb, i) | knn(S, i)) for i in range(n)])
    i, j = ag["methods"].index("embedding[same-topic]"), ag["methods"].index("bm25")
    print(
        f"CKA(embedding[same-topic], bm25) = {ag['cka'][i][j]:.4f} (independent {cka:.4f}); "
        f"Jaccard@10 = {ag['jaccard'][i][j]:.4f} (independent {jac:.4f})"
    )
    assert abs(ag["cka"][i][j] - cka) < 2e-3
    assert abs(ag["jaccard"][i][j] - jac) < 0.02
    p = ag["methods"].index("embedding-plain")
    assert ag["cka"][i][p] > ag["cka"][i][j]  # the prompt changes MiniLM less than switching to BM25 does
