"""Training stage: a criterion-specific similarity learned from gold triplets.

* :mod:`.adapter` - the pure estimator (a low-rank bilinear map on cached embeddings);
* :mod:`.evaluate` - anchor-grouped splits, triplet accuracy with cluster-bootstrap CIs;
* :mod:`.data` - gold triplets and cached embeddings read from the store (never votes);
* :mod:`.pipeline` - ``train()``: split, fit, evaluate against the peers, store;
* :mod:`.finetune` - ``--full``: sentence-transformers' trainer with MultipleNegativesRankingLoss;
* :mod:`.tables` - the stored, versioned models.

Kept light: nothing here imports torch until a fine-tune runs.
"""
