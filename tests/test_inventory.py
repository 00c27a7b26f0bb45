"""Inventory: what the extension registers is exactly `REGISTRATIONS` in
src/lib.rs, and every registered name is exercised by some test (sql/*.sql or
a test file under tests/, this file excluded).
"""

import re

import pytest

from conftest import ROOT

LIB_RS = ROOT / "src" / "lib.rs"
THIS = __file__


def parse_registrations():
    src = LIB_RS.read_text()
    m = re.search(r"pub const REGISTRATIONS\s*:\s*&\[Registration\]\s*=\s*&\[(.*?)\];", src, re.S)
    assert m, "REGISTRATIONS list not found in src/lib.rs"
    body = re.sub(r"//[^\n]*", "", m.group(1))
    items = re.findall(r"Registration::(Function|Table)\(\s*\"([^\"]+)\"\s*\)", body)
    # nothing in the list that the pattern above did not understand
    leftovers = re.sub(r"Registration::(Function|Table)\(\s*\"([^\"]+)\"\s*\)\s*,?", "", body).strip()
    assert leftovers == "", f"unparsed REGISTRATIONS entries: {leftovers!r}"
    funcs = sorted(n for k, n in items if k == "Function")
    tables = sorted(n for k, n in items if k == "Table")
    return funcs, tables


FUNCS, TABLES = parse_registrations()
NAMES = FUNCS + TABLES


def test_registrations_parsed():
    assert "insights_version" in FUNCS and "insights_queries" in TABLES
    assert len(NAMES) == len(set(NAMES)), "a name is registered twice"
    assert all(n.startswith("insights_") for n in NAMES)


LIST_SNIPPET = """
con = sqlite3.connect(":memory:")
before = [rows(con, "SELECT DISTINCT name FROM pragma_function_list WHERE name GLOB 'insights_*'"),
          rows(con, "SELECT DISTINCT name FROM pragma_module_list WHERE name GLOB 'insights_*'")]
load(con)
later = sqlite3.connect(":memory:")  # auto-extension connection
def lists(c):
    return [sorted(r[0] for r in rows(c, "SELECT DISTINCT name FROM pragma_function_list WHERE name GLOB 'insights_*'")),
            sorted(r[0] for r in rows(c, "SELECT DISTINCT name FROM pragma_module_list WHERE name GLOB 'insights_*'"))]
emit({"before": before, "loaded": lists(con), "later": lists(later)})
"""


@pytest.fixture(scope="module")
def host_lists(ext_path):
    from conftest import parse_result, run_snippet
    return parse_result(run_snippet(LIST_SNIPPET))


def test_nothing_registered_without_the_extension(host_lists):
    assert host_lists["before"] == [[], []]


@pytest.mark.parametrize("which", ["loaded", "later"])
def test_host_sees_exactly_the_registrations(host_lists, which):
    funcs, tables = host_lists[which]
    assert funcs == FUNCS, "functions registered on the connection differ from REGISTRATIONS"
    assert tables == TABLES, "virtual tables registered on the connection differ from REGISTRATIONS"


def test_apsw_host_sees_exactly_the_registrations(run_py, venv_python):
    r = run_py("""
        import apsw
        con = apsw.Connection(":memory:")
        load(con)
        emit([sorted(r[0] for r in rows(con, "SELECT DISTINCT name FROM pragma_function_list WHERE name GLOB 'insights_*'")),
              sorted(r[0] for r in rows(con, "SELECT DISTINCT name FROM pragma_module_list WHERE name GLOB 'insights_*'"))])
    """, python=venv_python)
    assert r == [FUNCS, TABLES]


def _test_files():
    files = sorted((ROOT / "sql").glob("*.sql"))
    for p in sorted((ROOT / "tests").rglob("*")):
        if not p.is_file() or p.suffix not in (".py", ".rs", ".sql", ".js", ".sh"):
            continue
        parts = set(p.relative_to(ROOT / "tests").parts)
        if parts & {"target", ".venv", "__pycache__", "node_modules"}:
            continue
        if p.resolve() == (ROOT / "tests" / "test_inventory.py").resolve() or p.name == "conftest.py":
            continue
        files.append(p)
    return files


TEST_FILES = _test_files()


def test_test_files_found():
    names = {p.name for p in TEST_FILES}
    assert "test_python_host.py" in names and "test_inventory.py" not in names
    assert any(p.suffix == ".sql" for p in TEST_FILES)


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_name_has_a_test(name):
    pat = re.compile(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])")
    users = [str(p.relative_to(ROOT)) for p in TEST_FILES if pat.search(p.read_text(errors="replace"))]
    assert users, f"{name} is registered but no test under sql/*.sql or tests/ uses it"
