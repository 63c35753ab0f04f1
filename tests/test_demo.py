"""The README's first command: `condsim-annot demo` runs the whole loop offline on CHAMP."""

from __future__ import annotations

import json

from datasets import load_from_disk


def test_demo_runs_whole_loop(cli, tmp_path):
    folder = tmp_path / "demo"
    r = cli("demo", "--dir", folder, "--budget", "30", "--no-tui")
    assert "7. report" in r.output
    st = json.loads(cli("status", "--json").output)
    assert st["documents"] == 270
    for name in ("same-technique", "same-topic"):
        c = st["criteria"][name]
        # CHAMP's silver annotator and three simulated ones vote every triplet
        assert c["triplets"] == 30 and c["votes"]["import"] == 4 * 30
        assert c["gold"] > 0
        html = (folder / f"report-{name}.html").read_text()
        assert "<img" in html and "http://" not in html.split("<body", 1)[1][:200]
    ds = load_from_disk(str(folder / "export-same-topic-st"))
    assert ds.column_names[:3] == ["anchor", "positive", "negative"] and len(ds) == st["criteria"]["same-topic"]["gold"]
    # a second run adds nothing (ingest, propose and silver votes are idempotent)
    cli("demo", "--dir", folder, "--budget", "30", "--no-tui")
    st2 = json.loads(cli("status", "--json").output)
    assert st2["criteria"]["same-topic"]["votes"]["import"] == 4 * 30
    # calibration tells the simulated spammer (100% random answers) from CHAMP's own labels
    cal = json.loads(cli("calibrate", "same-topic", "--json").output)
    beta = {a["name"]: a["beta"] for a in cal["annotators"]}
    assert beta["sim-spammer"] < beta["champ-silver"] and beta["sim-spammer"] == min(beta.values())
