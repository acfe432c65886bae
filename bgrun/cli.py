"""The `bgrun` command line: parse, call one function, print. Errors are one line."""

from __future__ import annotations

import contextlib
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, TypeVar

import click

from bgrun import control
from bgrun.config import Config
from bgrun.context import Context, context_for
from bgrun.enqueue import submit
from bgrun.errors import BadParamsError, BgrunError, ExitCode, NoStoreError
from bgrun.execwords import build_request
from bgrun.queues import check_queue_name, parse_queue_list
from bgrun.records import JobStatus
from bgrun.render import job_page, job_table, parse_duration, runner_table
from bgrun.store.factory import describe_store
from bgrun.whereis import store_missing

F = TypeVar("F", bound=Callable[..., Any])
STATUSES = [s.value for s in JobStatus]


def fail(message: str, code: int) -> None:
    """Print one error line and exit with `code`."""
    click.echo(f"bgrun: error: {message}", err=True)
    sys.exit(code)


def handled(func: F) -> F:
    """Turn every error into one stderr line and its documented exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BgrunError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as exc:
            _log_internal(exc)
            fail(f"internal error: {type(exc).__name__}: {exc} (traceback in the error log)",
                 ExitCode.UNUSABLE)

    return wrapper  # type: ignore[return-value]


def _log_internal(exc: Exception) -> None:
    with contextlib.suppress(Exception):  # the error line is printed whatever happens here
        context_for(Config.load(), create=False).log.event(
            job="-", target="-", method="-", status="internal-error",
            error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())


def open_context() -> Context:
    """bgrun's settings and existing store for this command (not Click's context);
    NoStoreError (exit 4) if there is none.

    Only commands that queue jobs make a store (and its folder): one that reads in the
    wrong folder says where it looked instead of showing a new, empty world.
    """
    return context_for(Config.load(), create=False)


def say_store(c: Context, verbose: bool) -> None:
    """With --verbose: which store this command read (on stderr, so --json stays clean)."""
    if verbose:
        click.echo(f"bgrun: store {describe_store(c.config)}", err=True)


verbose_option = click.option("-v", "--verbose", is_flag=True,
                              help="Say which store was read (on stderr).")


class OneLineGroup(click.Group):
    """Click's group, with its usage errors as one line (`bgrun: error: ...`, exit 2)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any
             ) -> Any:
        """As click's main, but a usage error is one stderr line, as every bgrun error."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            fail(_usage_line(exc), exc.exit_code)
        except click.Abort:
            fail("interrupted", 130)
        sys.exit(code if isinstance(code, int) else 0)


def _usage_line(exc: click.ClickException) -> str:
    message = exc.format_message().rstrip(".")
    command = getattr(getattr(exc, "ctx", None), "command_path", None)
    if command is None:
        return message
    return f"{command}: {message} (see '{command} --help')"


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bgrun")
def cli() -> None:
    """Run allow-listed Python callables as background jobs."""
    warn_unknown_settings()


def warn_unknown_settings() -> None:
    """One stderr line naming the BGRUN_* variables bgrun does not know (typos)."""
    import os
    from pathlib import Path

    from bgrun.config import merged_environ, unknown_names

    with contextlib.suppress(OSError):  # (a deleted working folder is reported elsewhere)
        unknown = unknown_names(merged_environ(Path.cwd(), os.environ))
        if unknown:
            click.echo(f"bgrun: warning: unknown setting(s), ignored: {', '.join(unknown)}",
                       err=True)


def job_options(func: F) -> F:
    """The options `exec` and `run` share."""
    for option in reversed([
        click.argument("target"),
        click.argument("method", required=False, metavar="METHOD"),
        click.argument("args", nargs=-1),
        click.option("--params", "params_json", metavar="JSON",
                     help="Params as JSON instead of ARGS: a list (positional, which --kw and"
                          " --kw-json may join) or an object (keyword)."),
        click.option("--kw", "kwargs", multiple=True, metavar="NAME=VALUE",
                     help="A keyword argument, as a string."),
        click.option("--kw-json", "json_kwargs", multiple=True, metavar="NAME=JSON",
                     help="A keyword argument, as a JSON value."),
        click.option("--retries", type=click.IntRange(min=0), help="Extra attempts on failure."),
        click.option("--delay", type=click.FloatRange(min=0), default=0.0,
                     help="Seconds before it may start."),
        click.option("--priority", type=int, help="Higher runs first."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
                     help="Seconds an attempt may run."),
        click.option("--unique", metavar="KEY", help="Queue nothing while KEY is live."),
        click.option("--queue", metavar="NAME",
                     help="The named queue (default: the allowlist's, else 'default')."),
        click.option("--no-import-check", is_flag=True,
                     help="Do not import the target to check that it exists."),
    ]):
        func = option(func)
    return func


@cli.command("exec")
@job_options
@handled
def exec_(target: str, method: str | None, args: tuple[str, ...], **opts: Any) -> None:
    """Queue a background job: TARGET METHOD [ARGS]...; print its id.

    TARGET is a module or a class (dotted), METHOD one of its functions or methods, e.g.
    `bgrun exec myapp.mail.Mailer send ada@example.com`. ARGS are converted by the
    method's simple annotations (int, float, bool, str and their optional forms).
    """
    request = build_request(target, method, args, **opts)
    with contextlib.redirect_stdout(sys.stderr):  # what the target's import prints:
        job_id, created = submit(Config.load(), request)  # stdout is the id alone
    if not created:
        click.echo(f"bgrun: job {job_id} with unique key {request.unique!r} is still waiting"
                   " or running: nothing new was queued", err=True)
    click.echo(job_id)


@cli.command()
@job_options
@handled
def run(target: str, method: str | None, args: tuple[str, ...], **opts: Any) -> None:
    """Run a job in the foreground: TARGET METHOD [ARGS]...; exit 0 if it completes."""
    from bgrun.foreground import run_foreground

    out = sys.stdout.buffer  # click 8.5 deprecates get_binary_stream
    job = run_foreground(Config.load(), build_request(target, method, args, **opts),
                         lambda b: (out.write(b), out.flush()))
    status = job.status_at(time.time())
    detail = job.error if status != JobStatus.COMPLETED else f"result: {job.result_json}"
    click.echo(f"job {job.id} {status}: {detail}", err=True)
    sys.exit(0 if status == JobStatus.COMPLETED else ExitCode.JOB_FAILED)


@cli.command("list")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--target", help="Only jobs of this target (or of this target.method).")
@click.option("--queue", metavar="NAME", help="Only jobs of this queue.")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True,
              help="0 means all.")
@click.option("--json", "as_json", is_flag=True)
@verbose_option
@handled
def list_(status: str | None, target: str | None, queue: str | None, limit: int,
          as_json: bool, verbose: bool) -> None:
    """Jobs, newest first."""
    from bgrun.waiting import Look, job_dict, waiting_reason

    if queue is not None:
        check_queue_name(queue)
    c = open_context()
    say_store(c, verbose)
    control.settle_orphans(c)
    jobs = c.store.list_jobs(status=status, target=target, queue=queue, limit=limit)
    look = Look(c, time.time())
    if as_json:
        click.echo(json.dumps([job_dict(j, look) for j in jobs], indent=2))
    else:
        click.echo(job_table(jobs, lambda j: waiting_reason(j, look)))


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@verbose_option
@handled
def show(job_id: str, as_json: bool, verbose: bool) -> None:
    """One job: attempts, timings, error and traceback, where its output is."""
    from bgrun.waiting import Look, job_dict

    c = open_context()
    say_store(c, verbose)
    control.settle_orphans(c)
    job = c.store.get(job_id)
    look = Look(c, time.time())
    data = job_dict(job, look)
    if as_json:
        data["attempt_history"] = [a._asdict() for a in c.store.attempts_of(job_id)]
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(job_page(data, c.store.attempts_of(job_id)))


@cli.command()
@click.argument("job_id")
@click.option("--timeout", type=click.FloatRange(min=0), help="Give up after S seconds (exit 124).")
@handled
def wait(job_id: str, timeout: float | None) -> None:
    """Block until the job ends; exit 0 if completed, 1 if failed or cancelled.

    On a terminal, stderr shows the job's progress as a bar with its message and an ETA.
    """
    from bgrun.waitbar import bar_for

    with bar_for(sys.stderr) as bar:
        job = control.wait_for(open_context(), job_id, timeout, on_poll=bar)
    status = job.status_at(time.time())
    click.echo(status)
    sys.exit(0 if status == JobStatus.COMPLETED else ExitCode.JOB_FAILED)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@handled
def runners(as_json: bool) -> None:
    """Every live runner: slot, pid, queues, and the job it runs (or idle)."""
    from bgrun.runners import live_runners

    found = live_runners(open_context())
    click.echo(json.dumps(found, indent=2) if as_json else runner_table(found))


@cli.command()
@click.argument("job_id")
@click.option("--wait", "wait_", is_flag=True, help="Return only once it is cancelled.")
@handled
def cancel(job_id: str, wait_: bool) -> None:
    """Cancel a queued, scheduled or running job (a running one's whole tree ends)."""
    c = open_context()
    job = control.cancel_job(c, job_id, by="cli")
    if wait_:
        job = control.wait_for(c, job_id)
    status = job.status_at(time.time())
    click.echo(status if status != JobStatus.RUNNING else "cancelling")


@cli.command()
@click.argument("job_id")
@handled
def retry(job_id: str) -> None:
    """Queue a failed or cancelled job again, under the same id."""
    control.retry_job(open_context(), job_id, by="cli")
    click.echo(job_id)


@cli.command()
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Follow the output until the job ends.")
@handled
def logs(job_id: str, follow: bool) -> None:
    """The job's captured stdout and stderr."""
    c = open_context()
    out = sys.stdout.buffer  # click 8.5 deprecates get_binary_stream
    if follow and not c.store.get(job_id).status_at(time.time()).finished:
        from bgrun.follow import follow as follow_output

        follow_output(c, job_id, lambda b: (out.write(b), out.flush()))
    else:
        out.write(control.read_output(c, job_id))


@cli.command()
@handled
def recover() -> None:
    """Settle jobs whose runner died and start runners for waiting jobs."""
    from bgrun import allowlist

    config = Config.load()
    if store_missing(config):  # nothing to recover, and nothing to make for it
        allowlist.load(config.allowlist)  # the wrong folder: exit 4, naming the file
        click.echo(f"no job store at {config.store} yet: nothing to recover")
        return
    c = open_context()
    settled, waiting = control.recover(c)
    click.echo(f"settled {settled} orphaned job(s); {waiting} waiting")
    if waiting:  # say so when they cannot run: nothing runs with a broken allowlist
        allowlist.load(c.config.allowlist)


@cli.command()
@click.option("--older-than", required=True, metavar="DURATION", help="e.g. 7d, 12h, 30m.")
@handled
def prune(older_than: str) -> None:
    """Delete finished jobs (and their output) that ended before DURATION ago."""
    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        raise BadParamsError(str(exc)) from None
    click.echo(f"deleted {len(control.prune(open_context(), seconds, by='cli'))} job(s)")


@cli.command()
@click.option("--requeue-on-stop", is_flag=True,
              help="On SIGTERM/Ctrl-C end the running job and queue it again (default: let "
                   "it finish).")
@click.option("--queue", "queues", metavar="A,B",
              help="Serve only these queues (comma-separated); every queue without it.")
@handled
def worker(requeue_on_stop: bool, queues: str | None) -> None:
    """Run the runner loop in the foreground (for systemd, supervisord, NSSM).

    With every slot taken by runners started on demand, it waits for one of them to
    hand its slot over (and says so); it never exits for want of a slot.
    """
    from bgrun import allowlist
    from bgrun.worker import run_worker

    served = None if queues is None else parse_queue_list(queues)
    config = Config.load()
    if store_missing(config):  # a new store only where an allowlist says "project"
        allowlist.load(config.allowlist)
    run_worker(config, requeue_on_stop=requeue_on_stop, say=click.echo, queues=served)


@cli.command()
@handled
def check() -> None:
    """Check the settings, the allowlist and the store; print what may run.

    Every allow-listed target is imported, in a child process, and each problem is
    printed with its file and line: exit 4 if there is any. Warnings do not fail it.
    """
    from bgrun import allowlist, doctor

    config = Config.load()
    loaded = allowlist.load(config.allowlist)
    rules = loaded.rules
    click.echo(f"allowlist {config.allowlist}: {len(rules)} target(s)")
    for rule in rules.values():
        click.echo(f"  {rule.target}: {', '.join(sorted(rule.methods))}")
    click.echo(f"store {describe_store(config)} ({_store_state(config)}),"
               f" logs {config.log_dir}, concurrency {config.concurrency}")
    for warning in doctor.warnings(config, loaded):
        click.echo(f"warning: {warning}")
    problems = doctor.target_problems(config, loaded)
    for problem in problems:
        click.echo(f"problem: {problem}")
    if problems:
        fail(f"{len(problems)} problem(s) in {config.allowlist}: those jobs cannot run"
             " (listed above)", ExitCode.UNUSABLE)


def _store_state(config: Config) -> str:
    """How many jobs the store holds, its kind and schema, or that there is none yet
    (check makes none)."""
    try:
        if store_missing(config):
            raise NoStoreError("none")
        store = context_for(config, create=False).store
    except NoStoreError:  # (a database bgrun has not used yet: the same)
        return "none yet: the first job queued makes it"
    counts = store.counts()
    return f"{sum(counts.values())} job(s); {store.kind}, schema {store.schema_version()}"


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8787, show_default=True)
@handled
def dashboard(host: str, port: int) -> None:
    """Serve the web dashboard (needs the extra: pip install 'bgrun[dashboard]')."""
    try:
        from bgrun.dashboard.server import serve_dashboard
    except ImportError as exc:
        fail(f"the dashboard needs its extra: pip install 'bgrun[dashboard]' ({exc.name} is "
             "missing)", ExitCode.UNUSABLE)
    serve_dashboard(Config.load(), host, port)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="bgrun")
