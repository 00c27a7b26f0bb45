"""Shared fixtures for the Python-host test suites.

Every check that loads the extension runs in a fresh subprocess:
- the extension's registry is process-wide, so a fresh process gives exact
  counts;
- one extension image must not be loaded into two different SQLite libraries
  in one process (stdlib sqlite3 and apsw), so pytest's own process never
  loads it at all;
- a crash in the extension fails one test instead of killing the run.

Fixtures:
- ``ext_path``: absolute path of dist/insights0.so (built by `make loadable`).
- ``db_path``: a fresh database file path under pytest's tmp dir.
- ``run_py``: run a Python snippet in a subprocess (``/usr/bin/python3`` by
  default, whose stdlib sqlite3 is Debian's 3.40.1) with an optional
  environment (LD_PRELOAD, SQLITE_INSIGHTS_*); the snippet calls
  ``emit(obj)`` and ``run_py`` returns ``obj``.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXT = ROOT / "dist" / "insights0.so"
# Debian's python3: its sqlite3 module can load extensions (the pyenv python3
# first on PATH cannot). The venv running pytest is made from it.
SYSTEM_PYTHON = "/usr/bin/python3"
# The venv's interpreter (same base as SYSTEM_PYTHON, plus apsw).
VENV_PYTHON = sys.executable

RESULT_MARK = "@@INSIGHTS_RESULT@@"

# Helpers available to every snippet.
PRELUDE = '''
import json, os, sys, sqlite3
EXT = {ext!r}
RESULT_MARK = {mark!r}

def load(con):
    """Load the extension into a stdlib sqlite3 or apsw connection."""
    con.enable_load_extension(True)
    con.load_extension(EXT)

def rows(con, sql, *params):
    return [list(r) for r in con.execute(sql, params).fetchall()]

def one(con, sql, *params):
    r = con.execute(sql, params).fetchone()
    return None if r is None else r[0]

def debug(con):
    return json.loads(one(con, "SELECT insights_debug()"))

QUERY_COLS = ["database", "fingerprint", "query", "kind", "tables", "tags", "calls", "errors", "busy",
              "rows_returned", "rows_affected", "last_error"]
ERROR_COLS = ["at", "database", "fingerprint", "query", "kind", "phase", "code", "extended_code",
              "code_name", "message", "sample"]

def dicts(con, cols, table, where="1", *params):
    """Rows of a table as dicts (works for sqlite3 and apsw cursors alike)."""
    sql = "SELECT " + ", ".join(cols) + " FROM " + table + " WHERE " + where
    return [dict(zip(cols, r)) for r in con.execute(sql, params).fetchall()]

def queries(con, where="1", *params):
    return dicts(con, QUERY_COLS, "insights_queries", where, *params)

def errors(con, where="1", *params):
    return dicts(con, ERROR_COLS, "insights_errors", where, *params)

def attempt(con, sql, *params):
    """Run sql; return ['ok', rows] or ['err', type name, message]."""
    try:
        return ["ok", [list(r) for r in con.execute(sql, params).fetchall()]]
    except Exception as e:  # noqa: BLE001 - the type is the point
        return ["err", type(e).__name__, str(e)]

def emit(obj):
    sys.stdout.write(RESULT_MARK + json.dumps(obj) + "\\n")
    sys.stdout.flush()
'''

# Variables that change the extension's behaviour; never inherited by accident.
_SCRUB = ("LD_PRELOAD", "SQLITE_INSIGHTS_ERROR_LOG", "SQLITE_INSIGHTS_AUTOLOAD",
          "SQLITE_INSIGHTS_LIBSQLITE")


def make_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.pop("PYTHONPATH", None)
    env.update(extra or {})
    return env


def run_snippet(code, env=None, python=SYSTEM_PYTHON, timeout=90, cwd=None, args=None):
    """Run a snippet (after PRELUDE) in a subprocess; return CompletedProcess.

    ``args`` (JSON-able) is available to the snippet as ``ARGS``."""
    src = (PRELUDE.format(ext=str(EXT), mark=RESULT_MARK)
           + f"\nARGS = json.loads({json.dumps(args)!r})\n"
           + textwrap.dedent(code))
    return subprocess.run(
        [python, "-c", src],
        env=make_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def parse_result(proc):
    assert proc.returncode == 0, (
        f"subprocess failed with rc={proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    assert lines, f"snippet emitted no result\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
    return json.loads(lines[-1][len(RESULT_MARK):])


@pytest.fixture(scope="session")
def ext_path():
    if not EXT.is_file():
        pytest.fail(f"{EXT} is missing: run `make loadable` first")
    assert EXT.is_absolute()
    return str(EXT)


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "test.db")


@pytest.fixture
def run_py(ext_path):
    """run_py(code, env=None, python=SYSTEM_PYTHON, args=None) -> object passed to emit()."""

    def run(code, env=None, python=SYSTEM_PYTHON, timeout=90, args=None):
        return parse_result(run_snippet(code, env=env, python=python, timeout=timeout, args=args))

    return run


@pytest.fixture
def run_py_raw(ext_path):
    """Like run_py but returns the CompletedProcess (for crash checks)."""

    def run(code, env=None, python=SYSTEM_PYTHON, timeout=90, args=None):
        return run_snippet(code, env=env, python=python, timeout=timeout, args=args)

    return run


@pytest.fixture(scope="session")
def preload_env(ext_path):
    """Environment for preload mode: the extension in LD_PRELOAD."""
    return {"LD_PRELOAD": ext_path}


@pytest.fixture(scope="session")
def venv_python():
    """An interpreter that has apsw (the venv running pytest)."""
    probe = subprocess.run([VENV_PYTHON, "-c", "import apsw"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("apsw is not installed in this interpreter (pip install -r tests/requirements.txt)")
    return VENV_PYTHON
