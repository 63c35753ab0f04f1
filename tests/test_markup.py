"""Text from users, documents and servers is shown literally, never read as Rich markup (defect 9)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.backends("sqlite")


def test_criteria_list_and_errors_show_brackets_literally(cli):
    cli("criteria", "add", "brackets", "--description", "Same [/] technique, [bold]not[/bold] [link=x] topic")
    res = cli("criteria", "list")
    assert "Same [/] technique, [bold]not[/bold] [link=x] topic" in " ".join(res.output.split())
    res = cli("judge", "[/nope]", "-m", "m", "--dry-run", expect_ok=False)  # the name comes back in an error line
    assert res.exit_code == 1 and "no criterion named '[/nope]'" in res.output
