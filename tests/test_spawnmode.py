"""Key promises again in spawn mode (the mode on Windows and macOS; fork is Linux's)."""

from __future__ import annotations

import pytest

from tests import test_control, test_core


@pytest.fixture(autouse=True)
def spawn_mode(project, monkeypatch):
    monkeypatch.setenv("BGRUN_MODE", "spawn")
    return project


test_retries = test_core.test_retries_are_counted_and_logged
test_priority = test_core.test_priority_order_at_concurrency_one
test_timeout = test_core.test_timeout_ends_the_attempt
test_async = test_core.test_async_functions_and_methods_are_awaited
test_where = test_core.test_job_runs_where_and_how_it_was_queued
test_exit_status = test_core.test_exit_status_is_the_verdict_when_the_child_says_nothing
test_removed_target = test_core.test_target_removed_from_allowlist_after_queueing_fails_not_allowed
test_cancel_tree = test_control.test_cancel_running_job_ends_its_whole_tree
test_runner_killed = test_control.test_runner_killed_mid_job_is_noticed_and_retried
