"""``train --full``: a few steps of sentence-transformers' trainer on a tiny set; the folder loads with
``SentenceTransformer(path)`` and its weights moved."""

from __future__ import annotations

import numpy as np


def test_fine_tuned_model_loads_with_sentence_transformer(tmp_path):
    from sentence_transformers import SentenceTransformer

    from condsim_annot.propose.embedding import default_model_path
    from condsim_annot.train.finetune import fine_tune, triplet_margins

    topics = ["pigeonhole principle", "modular arithmetic", "AM-GM inequality", "induction on n"]
    anchors = [f"Problem {i}: use the {topics[i % 4]} to show the claim." for i in range(8)]
    positives = [f"Exercise {i}: a classic {topics[i % 4]} argument." for i in range(8)]
    negatives = [f"Exercise {i}: a classic {topics[(i + 1) % 4]} argument." for i in range(8)]
    out = tmp_path / "ft"
    info = fine_tune(
        None,
        anchors,
        positives,
        negatives,
        str(out),
        prompt="Represent the technique: ",
        batch_size=4,
        max_steps=2,
        lr=1e-4,
    )
    assert info["steps"] == 2 and info["n_train"] == 8 and np.isfinite(info["train_loss"])
    model = SentenceTransformer(str(out), device="cpu")
    v = model.encode(["a pigeonhole problem"], normalize_embeddings=True)
    assert v.shape == (1, 384) and np.isfinite(v).all()
    # the weights were trained, not just copied (compared tensor by tensor, no second model loaded)
    from pathlib import Path

    from safetensors.numpy import load_file

    new = load_file(str(next(Path(out).rglob("model.safetensors"))))
    old = load_file(str(Path(default_model_path()) / "model.safetensors"))
    shared = [k for k in new if k in old]
    assert len(shared) == len(new) and any(not np.array_equal(new[k], old[k]) for k in shared)
    m = triplet_margins(str(out), anchors[:2], positives[:2], negatives[:2], prompt="Represent the technique: ")
    assert m.shape == (2,) and np.isfinite(m).all()
