"""Positional and keyword arguments together: `kwargs=`, ARGS beside --kw, JSON `kwargs`."""

from __future__ import annotations

import json

import pytest

from bgrun import BadParamsError, run_background_job
from tests.test_cli import one_error_line

KWJOBS = '''
def call(*args, **kwargs):
    cmdline = open("/proc/self/cmdline", "rb").read().split(b"\\0")
    runner = any(part.endswith(b"_runner_main.py") for part in cmdline)
    return {"args": list(args), "kwargs": kwargs, "forked": runner}


def build(month, pages=1, *, title="report"):
    return f"{title} {month}: {pages} pages"


class Report:
    def build(self, month, pages=1):
        return f"{month}/{pages}"
'''


@pytest.fixture
def kw_project(project):
    (project.path / "kwjobs.py").write_text(KWJOBS)
    with open(project.path / "allowlist.toml", "a") as f:
        f.write('\n[jobs."kwjobs"]\nmethods = ["call", "build"]\n'
                '\n[jobs."kwjobs.Report"]\nmethods = ["build"]\n')
    return project


@pytest.mark.parametrize("mode", ["fork", "spawn"])
def test_the_child_receives_both_in_either_mode(kw_project, monkeypatch, mode):
    monkeypatch.setenv("BGRUN_MODE", mode)
    job = run_background_job("kwjobs", "call", ["2026-11", [1]], kwargs={"pages": 4, "x": None})
    assert job.wait(timeout=30) == "completed"
    assert job.result == {"args": ["2026-11", [1]], "kwargs": {"pages": 4, "x": None},
                          "forked": mode == "fork"}
    report = run_background_job("kwjobs.Report", "build", ["2026-11"], kwargs={"pages": 4})
    assert report.wait(timeout=30) == "completed"
    assert report.result == "2026-11/4"  # a class's method: self is bound, then both


def test_json_keys_params_and_kwargs_in_show_list_and_handle(kw_project):
    mixed = run_background_job("kwjobs", "build", ["2026-11"], kwargs={"pages": 4},
                               delay=3600)
    keywords = run_background_job("kwjobs", "build", kwargs={"month": "2026-12"}, delay=3600)
    positional = run_background_job("kwjobs", "build", ["2027-01"], kwargs={}, delay=3600)
    as_dict = run_background_job("kwjobs", "build", {"month": "2027-02"}, delay=3600)
    expected = {
        mixed.id: (["2026-11"], {"pages": 4}),
        keywords.id: ({"month": "2026-12"}, None),  # only keywords: the dict is params
        positional.id: (["2027-01"], None),
        as_dict.id: ({"month": "2027-02"}, None),
    }
    listed = json.loads(kw_project.cli("list", "--json").stdout)
    assert {j["id"]: (j["params"], j["kwargs"]) for j in listed} == expected
    for job_id, pair in expected.items():
        assert (lambda d: (d["params"], d["kwargs"]))(kw_project.show(job_id)) == pair
    assert (mixed.info()["params"], mixed.info()["kwargs"]) == expected[mixed.id]
    text = kw_project.cli("show", mixed.id).stdout
    assert "params:       ['2026-11']" in text and "kwargs:       {'pages': 4}" in text
    for job in (mixed, keywords, positional, as_dict):
        job.cancel()


def test_the_signature_check_covers_the_mix(kw_project):
    refusals = [
        (["2026-11"], {"nope": 1}),  # no such keyword
        (["2026-11"], {"month": "x"}),  # month given twice
        (["2026-11", 4, 5], {}),  # one positional too many (title is keyword-only)
        ([], {"pages": 4}),  # month missing
    ]
    for args, kwargs in refusals:
        with pytest.raises(BadParamsError, match=r"params do not fit kwjobs\.build"):
            run_background_job("kwjobs", "build", args, kwargs=kwargs)
    with pytest.raises(BadParamsError, match="do not fit"):
        run_background_job("kwjobs.Report", "build", ["m"], kwargs={"self": 1})
    job = run_background_job("kwjobs", "build", ["2026-11", 4], kwargs={"title": "sales"})
    assert job.wait(timeout=30) == "completed"
    assert job.result == "sales 2026-11: 4 pages"
    assert kw_project.cli("list", "--json").stdout.count('"id"') == 1  # refusals stored nothing


def test_wrong_shapes_are_refused_and_logged_nothing_stored(kw_project, monkeypatch):
    monkeypatch.setenv("BGRUN_MAX_PARAMS_BYTES", "100")
    monkeypatch.setenv("BGRUN_MAX_PARAMS_DEPTH", "3")
    cases = [
        ({"month": "x"}, {"pages": 4}, "beside a positional list"),
        ({}, {"pages": 4}, "beside a positional list"),
        (["x"], ["pages"], "kwargs must be a dict"),
        (["x"], {"a-b": 1}, "not an identifier"),
        (["x"], {"__class__": 1}, "dunder"),
        (["x"], {"pages": float("nan")}, "not a JSON number"),
        (["x"], {"pages": [[[1]]]}, "nested deeper"),  # kwargs is level 1, as params is
        (["x" * 45], {"pages": "y" * 45}, "more than the limit 100"),  # the whole counts
        ({"*args": ["x"], "**kwargs": {}}, None, "not an identifier"),  # the stored shape
    ]
    for params, kwargs, message in cases:
        with pytest.raises(BadParamsError, match=message):
            run_background_job("kwjobs", "call", params, kwargs=kwargs)
    assert run_background_job("kwjobs", "call", ["x" * 30], kwargs={"p": "y" * 30}).id
    assert kw_project.cli("list", "--json").stdout.count('"id"') == 1
    rejected = [e for e in kw_project.events(errors=True) if e["status"] == "rejected"]
    assert len(rejected) == len(cases)


def test_cli_args_and_keywords_mix_in_exec_and_run(kw_project):
    job_id = kw_project.cli("exec", "kwjobs", "build", "2026-11", "--kw-json", "pages=4",
                            "--kw", "title=sales").stdout.strip()
    assert kw_project.cli("wait", job_id, "--timeout", "30").returncode == 0
    info = kw_project.show(job_id)
    assert (info["params"], info["kwargs"]) == (["2026-11"], {"pages": 4, "title": "sales"})
    assert info["result"] == "sales 2026-11: 4 pages"
    from_json = kw_project.cli("exec", "kwjobs", "call", "--params", '[1, {"a": null}]',
                               "--kw-json", "b=[2]").stdout.strip()
    assert kw_project.cli("wait", from_json, "--timeout", "30").returncode == 0
    assert kw_project.show(from_json)["result"]["kwargs"] == {"b": [2]}
    assert kw_project.show(from_json)["result"]["args"] == [1, {"a": None}]
    ran = kw_project.cli("run", "kwjobs", "build", "2026-12", "--kw-json", "pages=2")
    assert ran.returncode == 0, ran.stderr
    assert "result: \"report 2026-12: 2 pages\"" in ran.stderr
    refused = kw_project.cli("exec", "kwjobs", "build", "2026-11", "--kw-json", "nope=1")
    assert refused.returncode == 2
    assert "params do not fit kwjobs.build" in one_error_line(refused)


def test_stored_shapes_round_trip():
    from bgrun.params import decode_call, encode_params, shown_params

    for params, kwargs, args, keywords in [
        (None, None, [], {}),
        (["a"], None, ["a"], {}),
        ({"a": 1}, None, [], {"a": 1}),
        ([], {"a": 1}, [], {"a": 1}),
        (["a"], {}, ["a"], {}),
        (["a", {"*args": 1}], {"b": {"**kwargs": 2}}, ["a", {"*args": 1}], {"b": {"**kwargs": 2}}),
    ]:
        text = encode_params(params, 1 << 20, 64, kwargs)
        assert decode_call(text) == (args, keywords)
        shown = shown_params(text)
        assert shown == ((args, keywords) if args and keywords else (
            keywords if keywords else args, None))
