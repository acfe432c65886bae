"""Named queues: names, allowlist tables and defaults, and where queues show."""

from __future__ import annotations

import pytest

from bgrun import allowlist
from bgrun.errors import AllowlistError, BadQueueError
from bgrun.queues import check_queue_name, parse_queue_list

GOOD_NAMES = ["default", "a", "0", "reports", "mail-out", "mail_out", "a" * 64, "9x-_"]
BAD_NAMES = ["", "A", "Reports", "-a", "_a", "a b", "a.b", "a/b", "a" * 65, "é", "a\n",
             " a", "a,b"]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_queue_names(name):
    assert check_queue_name(name) == name


@pytest.mark.parametrize("name", [*BAD_NAMES, None, 3, b"a"])
def test_bad_queue_names_are_refused_in_one_line(name):
    with pytest.raises(BadQueueError) as info:
        check_queue_name(name)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_queue_lists():
    assert parse_queue_list("a") == {"a"}
    assert parse_queue_list("a, b,a") == {"a", "b"}
    for bad in ("", "a,", "a,,b", "A"):
        with pytest.raises(BadQueueError):
            parse_queue_list(bad)


def load_text(tmp_path, text: str) -> allowlist.Allowlist:
    path = tmp_path / "allowlist.toml"
    path.write_text(text)
    return allowlist.load(path)


def test_allowlist_queue_defaults_and_limits(tmp_path):
    rules = load_text(tmp_path, '[jobs."a.B"]\nmethods = ["run"]\nqueue = "reports"\n\n'
                                '[jobs."c"]\nmethods = ["go"]\n\n'
                                '[queues.reports]\nconcurrency = 1\n\n'
                                '[queues."mail"]\nconcurrency = 0\n')
    assert rules.rules["a.B"].queue == "reports"
    assert rules.rules["c"].queue is None
    assert rules.limits == {"reports": 1, "mail": 0}


@pytest.mark.parametrize(("text", "line", "words"), [
    ('[jobs."a"]\nmethods = ["x"]\nqueue = "Big"\n', 3, "not a queue name"),
    ('[jobs."a"]\nmethods = ["x"]\nqueue = 3\n', 3, "wrong type"),
    ('[jobs."a"]\nmethods = ["x"]\n\n[queues.Bad]\nconcurrency = 1\n', 4, "bad queue name"),
    ('[jobs."a"]\nmethods = ["x"]\n\n[queues.ok]\nconcurrency = -1\n', 5, "whole number"),
    ('[jobs."a"]\nmethods = ["x"]\n\n[queues.ok]\nconcurrency = 1.5\n', 5, "whole number"),
    ('[jobs."a"]\nmethods = ["x"]\n\n[queues.ok]\nconcurrency = true\n', 5, "whole number"),
    ('[jobs."a"]\nmethods = ["x"]\n\n[queues.ok]\nconcurrency = "2"\n', 5, "whole number"),
    ('[jobs."a"]\nmethods = ["x"]\n\n[queues.ok]\n', 4, "needs 'concurrency'"),
    ('[jobs."a"]\nmethods = ["x"]\n\n[queues.ok]\nconcurrency = 1\nlimit = 2\n', 6,
     "unknown key"),
    ('[jobs."a"]\nmethods = ["x"]\n\n[queues]\nok = 2\n', 5, "must be a table"),
    ('queues = 3\n[jobs."a"]\nmethods = ["x"]\n', 1, "table of queues"),
])
def test_bad_queue_settings_name_the_file_and_line(tmp_path, text, line, words):
    with pytest.raises(AllowlistError) as info:
        load_text(tmp_path, text)
    message = str(info.value)
    assert f"allowlist.toml:{line}:" in message
    assert words in message
    assert "\n" not in message
