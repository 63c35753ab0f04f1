"""Criteria (CLI + YAML/TOML files), status --json keys, and that every command's help teaches."""

from __future__ import annotations

import json

import click
import pytest

from condsim_annot.cli import main


def test_add_list_edit_and_duplicate(cli):
    cli("criteria", "add", "proof-strategy", "--description", "Same proof technique, regardless of topic")
    r = cli("criteria", "add", "proof-strategy", "--description", "again", expect_ok=False)
    assert r.exit_code == 1 and "already exists" in r.output
    r = cli("criteria", "edit", "proof-strategy", "--description", "Same key technique")
    assert "version 2" in r.output
    rows = json.loads(cli("criteria", "list", "--json").output)
    assert rows == [{"name": "proof-strategy", "description": "Same key technique", "instruction": None, "version": 2}]


def test_load_yaml_and_toml_all_or_nothing(cli, tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("criteria:\n  - name: topic\n    description: Same topic\n"
                 "  - name: technique\n    description: Same technique\n    instruction: 'Represent the technique: '\n")
    r = cli("criteria", "load", y)
    assert "2 criteria loaded" in r.output
    t = tmp_path / "c.toml"
    t.write_text('[[criteria]]\nname = "difficulty"\ndescription = "Same difficulty"\n\n'
                 '[[criteria]]\nname = "topic"\ndescription = "dup"\n')
    r = cli("criteria", "load", t, expect_ok=False)
    assert r.exit_code == 1 and "c.toml" in r.output and "'topic' already exists" in r.output
    names = [c["name"] for c in json.loads(cli("criteria", "list", "--json").output)]
    assert names == ["technique", "topic"]  # 'difficulty' was rolled back
    bad = tmp_path / "bad.yaml"
    bad.write_text("criteria:\n  - name: x\n")
    r = cli("criteria", "load", bad, expect_ok=False)
    assert "bad.yaml" in r.output and "field 'description'" in r.output


def test_status_json_has_stable_keys(cli, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"id": 1, "text": "a"}\n{"id": 2, "text": "b"}\n')
    cli("ingest", f)
    cli("criteria", "add", "k", "-d", "desc")
    data = json.loads(cli("status", "--json").output)
    assert data["documents"] == 2
    k = data["criteria"]["k"]
    assert k["triplets"] == 0 and k["gold"] == 0
    assert set(k["votes"]) >= {"tui", "argilla", "llm", "import"}


def _all_commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, prefix + (name,))


@pytest.mark.parametrize("path", [p for p, _ in _all_commands(main)], ids=lambda p: " ".join(p))
def test_every_command_help_has_an_example(path):
    from click.testing import CliRunner

    r = CliRunner().invoke(main, [*path, "--help"])
    assert r.exit_code == 0
    cmd = dict(_all_commands(main))[path]
    text = (cmd.help or "") + r.output
    assert "condsim-annot" in text or isinstance(cmd, click.Group) and any(
        "condsim-annot" in (c.help or "") for c in cmd.commands.values()
    ), f"`condsim-annot {' '.join(path)} --help` shows no example"
