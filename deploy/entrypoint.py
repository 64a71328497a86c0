#!/usr/bin/env python3
"""Container entrypoint (`spam-entrypoint CMD...`): wait for what CMD needs, then run CMD.

Start order between containers is not guaranteed (podman-compose does not wait
for `condition: service_healthy`, and any container may restart on its own),
so each service lists what it needs in SPAM_WAIT_FOR, separated by spaces:

    db:ENV_VAR          a PostgreSQL URL held in ENV_VAR (never on a command line);
                        waits until the server accepts connections and creates
                        the database when it does not exist yet
    tcp://HOST:PORT     waits until the port accepts connections
    http://HOST:PORT/P  waits for a 2xx answer

SPAM_WAIT_TIMEOUT (seconds, default 300) bounds the wait; when it runs out the
container exits with status 1 and its restart policy tries again. With
SPAM_WAIT_FOR unset the command is exec'd at once, so `docker run IMAGE CMD`
behaves like a plain image.

How CMD runs:

- By default CMD replaces this process (exec): it receives the container's
  signals itself.
- With SPAM_STOP_TIMEOUT=SECONDS, CMD runs as a child in a process group of
  its own and this process stays as its parent: SIGTERM, SIGINT or SIGHUP go
  to the whole group, and whatever is still there SECONDS later is SIGKILLed;
  the exit status is CMD's (128 + N when signal N ended it). This is for
  `dagster code-server start`: on SIGTERM it asks the code server it started
  to shut down, which first waits for every run it launched to finish, and the
  run workers, which are its children, never see the signal. So `docker stop`
  during a run hit the engine's SIGKILL after 10 s and left the run STARTED
  forever, holding its pool's slot. Told here, the run workers stop their runs
  (marked failed, slot freed), and the container is gone before the engine's
  deadline. Give such a service an init as PID 1 (compose `init: true`) to
  reap the group's orphans.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

LOG_EVERY = 10.0  # seconds between "still waiting" lines


def log(message: str) -> None:
    print(f"spam-entrypoint: {message}", file=sys.stderr, flush=True)


def _postgres_dsn(url: str) -> str:
    # SQLAlchemy spellings (postgresql+psycopg2://) are not libpq URIs.
    scheme, sep, rest = url.partition("://")
    return "postgresql://" + rest if sep and scheme.startswith("postgres") else url


def _describe(url: str) -> str:
    """host:port/db without credentials, for logs."""
    parts = urllib.parse.urlsplit(_postgres_dsn(url))
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


def check_db(env_var: str) -> str | None:
    """None when the database is reachable (created if missing), else why not."""
    import psycopg2
    from psycopg2 import errors, sql

    url = os.environ.get(env_var)
    if not url:
        raise SystemExit(f"spam-entrypoint: SPAM_WAIT_FOR names db:{env_var} but ${env_var} is not set")
    dsn = _postgres_dsn(url)
    dbname = urllib.parse.unquote(urllib.parse.urlsplit(dsn).path.lstrip("/"))
    try:
        conn = psycopg2.connect(dsn, dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError as error:
        return str(error).strip().splitlines()[0] if str(error).strip() else "cannot connect"
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if cur.fetchone() is None:
                try:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
                    log(f"created database {dbname!r}")
                except errors.DuplicateDatabase:
                    pass  # another container created it first
    finally:
        conn.close()
    return None


def check_tcp(url: str) -> str | None:
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=3):
            return None
    except OSError as error:
        return str(error)


def check_http(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except (OSError, urllib.error.URLError) as error:
        return str(error)


def checker(target: str):
    if target.startswith("db:"):
        env_var = target[3:]
        return f"postgres {_describe(os.environ.get(env_var, ''))} (${env_var})", lambda: check_db(env_var)
    if target.startswith("tcp://"):
        return target, lambda: check_tcp(target)
    if target.startswith(("http://", "https://")):
        return target, lambda: check_http(target)
    raise SystemExit(f"spam-entrypoint: cannot wait for {target!r} (use db:ENV_VAR, tcp://HOST:PORT or http://...)")


def wait_for(targets: list[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    for target in targets:
        name, check = checker(target)
        started = next_log = time.monotonic()
        while (why := check()) is not None:
            now = time.monotonic()
            if now >= deadline:
                log(f"gave up waiting for {name} after {timeout:.0f} s: {why}")
                return False
            if now >= next_log:
                log(f"waiting for {name}: {why}")
                next_log = now + LOG_EVERY
            time.sleep(1.0)
        log(f"{name} is up ({time.monotonic() - started:.1f} s)")
    return True


def _group_members(pgid: int) -> list[str]:
    """'pid command' of every live process in process group `pgid` (the group this entrypoint started)."""
    import psutil

    members = []
    for process in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(f"{process.pid} {' '.join(process.info['cmdline'] or [])[:120]}")
        except OSError:
            continue  # gone meanwhile
    return members


def run_as_group(argv: list[str], stop_timeout: float) -> int:
    """CMD as a child in its own process group; a stop signal reaches the whole group, SIGKILL after stop_timeout."""
    from spam_assets.supervisor import ChildSpec, StopRequested, Supervisor, describe_status

    with Supervisor(stop_timeout=stop_timeout) as supervisor:
        child = supervisor.start(ChildSpec(argv[0], argv))
        outcome = supervisor.watch()
        if isinstance(outcome, StopRequested):
            log(f"{signal.Signals(outcome.signum).name}: stopping {argv[0]} and its process group "
                f"(SIGKILL after {stop_timeout:g} s)")  # fmt: skip
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
            deadline = time.monotonic() + stop_timeout
            while time.monotonic() < deadline and (child.process.poll() is None or _group_members(child.pid)):
                time.sleep(0.1)
            left = _group_members(child.pid)
            if left:  # name them: what did not stop in time is what to look at
                log(f"still running {stop_timeout:g} s after SIGTERM, killed: " + "; ".join(left))
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
        # leaving the block: the supervisor stops whatever is left (nothing, after the above)
    returncode = child.process.returncode
    if not isinstance(outcome, StopRequested):
        log(f"{argv[0]} {describe_status(returncode)}")
    return 128 - returncode if returncode < 0 else returncode


def main(argv: list[str]) -> int:
    if not argv:
        log("usage: spam-entrypoint CMD [ARG...]")
        return 2
    targets = os.environ.get("SPAM_WAIT_FOR", "").split()
    if targets and not wait_for(targets, float(os.environ.get("SPAM_WAIT_TIMEOUT", "300"))):
        return 1
    stop_timeout = os.environ.get("SPAM_STOP_TIMEOUT", "").strip()
    if stop_timeout:
        try:
            seconds = float(stop_timeout)
        except ValueError:
            log(f"SPAM_STOP_TIMEOUT must be a number of seconds, not {stop_timeout!r}")
            return 2
        try:
            return run_as_group(argv, seconds)
        except FileNotFoundError as error:
            log(f"cannot run {argv[0]!r}: {error}")
            return 127
    try:
        os.execvp(argv[0], argv)
    except OSError as error:
        log(f"cannot run {argv[0]!r}: {error}")
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
