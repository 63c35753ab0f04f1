"""End to end on the bundled CHAMP problems, as a user would: ingest, criteria, a votes CSV made
elsewhere (silver "same topic" answers from three annotators, one of them careless),
`votes import`, `calibrate`, `export`, `report`.  Gold labels must agree with the silver truth."""

from __future__ import annotations

import csv
import json
import random

import pytest

from condsim_annot.demo import silver_choice, write_demo_files


@pytest.mark.parametrize("backend", ["sqlite"])  # the store tests cover PostgreSQL; this one is about the data
def test_champ_votes_import_calibrate_export(cli, store, tmp_path, champ_problems):
    corpus, crit = write_demo_files(tmp_path / "demo")
    cli("ingest", corpus, "--corpus", "champ")
    cli("criteria", "load", crit)
    rng = random.Random(0)
    recs = {r["id"]: r for r in champ_problems}
    ids = sorted(recs)
    truth = {}
    rows = []
    while len(truth) < 150:
        a, x, y = rng.sample(ids, 3)
        want = silver_choice("same-topic", recs[a], recs[x], recs[y])  # in (x, y) order here
        if want == "tie" or (a, min(x, y), max(x, y)) in truth:
            continue
        truth[(a, min(x, y), max(x, y))] = x if want == "first" else y
        for name, err in (("alice", 0.0), ("bob", 0.05), ("careless", 0.45)):
            shown = [x, y] if rng.random() < 0.5 else [y, x]
            winner = truth[(a, min(x, y), max(x, y))]
            if rng.random() < err:
                winner = x if winner == y else y
            rows.append(
                {
                    "criterion": "same-topic",
                    "anchor": a,
                    "a": shown[0],
                    "b": shown[1],
                    "annotator": name,
                    "choice": "a" if winner == shown[0] else "b",
                    "kind": "human",
                }
            )
    f = tmp_path / "votes.csv"
    with f.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert "added 450 votes" in cli("votes", "import", f).stdout
    doc = json.loads(cli("calibrate", "same-topic", "--json").stdout)
    betas = {a["name"]: a["beta"] for a in doc["annotators"]}
    assert betas["careless"] < betas["alice"] and betas["careless"] < betas["bob"]
    assert doc["gold"]["gold"] >= 100
    cli("export", "same-topic", "--format", "jsonl", tmp_path / "gold.jsonl")
    exported = [json.loads(x) for x in (tmp_path / "gold.jsonl").read_text().splitlines()]
    assert len(exported) == doc["gold"]["gold"]
    wrong = [
        r
        for r in exported
        if truth[(r["anchor_id"], *sorted((r["positive_id"], r["negative_id"])))] != r["positive_id"]
    ]
    print(f"CHAMP same-topic: {len(exported)} gold, {len(wrong)} disagree with the silver label")
    assert len(wrong) <= 0.03 * len(exported)
    from condsim_annot.exporters.export import export_all

    res = export_all(store, "same-topic", tmp_path / "all", report=False)
    assert res["st"]["rows"] == len(exported) and res["pairs"]["rows"] > 0 and res["parquet"]["rows"] == len(exported)
