"""CI's own script: what it starts, it stops by process id."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_ci_stops_the_ui_it_started_by_its_process_id_not_by_a_pattern():
    """Issue 34, defect 8: `.ci/run` stopped the UI with `pkill -f` on a pattern, which can stop any
    process on the machine whose command line matches. It starts the UI in a process group of its own
    and stops that group by its id."""
    script = (ROOT / ".ci" / "run").read_text()
    commands = [line.split("#", 1)[0] for line in script.splitlines()]
    assert not [line for line in commands if re.search(r"\b(pkill|killall)\b", line)]
    assert re.search(r"^setsid timeout \d+ make run .*&$", script, re.MULTILINE)
    assert "runner=$!" in script and "kill -TERM -- -$runner" in script
