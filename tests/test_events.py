"""Events, migrations and tag activity, through real hosts and real
migration tools (Alembic with SQLAlchemy, Django) installed from PyPI.

The migration tools run unmodified: the extension is put into them with
LD_PRELOAD + SQLITE_INSIGHTS_AUTOLOAD=1 (zero-code mode), and a separate
process reads what they did.
"""

import json
import textwrap

import pytest


def preload(ext_path, **extra):
    env = {"LD_PRELOAD": ext_path, "SQLITE_INSIGHTS_AUTOLOAD": "1"}
    env.update(extra)
    return env


READ = """
con = sqlite3.connect(ARGS["db"])
load(con)
cur = con.execute("SELECT * FROM insights_events ORDER BY at")
names = [d[0] for d in cur.description]
events = [dict(zip(names, r)) for r in cur.fetchall()]
cur = con.execute("SELECT * FROM insights_migrations")
names = [d[0] for d in cur.description]
migrations = [dict(zip(names, r)) for r in cur.fetchall()]
emit({"events": events, "migrations": migrations})
"""


def test_schema_changes_user_version_and_maintenance_events(run_py, db_path):
    got = run_py(
        """
con = sqlite3.connect(ARGS["db"], isolation_level=None)
load(con)
con.execute("SELECT insights_tag('app', 'migrator')")
con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
con.execute("CREATE INDEX t_v ON t(v)")
con.execute("ALTER TABLE t ADD COLUMN w INTEGER")
con.execute("INSERT INTO t(v) VALUES ('x')")
con.execute("PRAGMA user_version = 42")
con.execute("DROP INDEX t_v")
con.execute("ANALYZE")
con.execute("VACUUM")
try:
    con.execute("CREATE TABLE t(x)")   # fails: no event
except sqlite3.OperationalError:
    pass
cur = con.execute("SELECT kind, object, detail, schema_version_before, schema_version_after, user_version_before, user_version_after, tags FROM insights_events ORDER BY at")
emit(cur.fetchall())
""",
        args={"db": db_path},
    )
    kinds = [[k, o, d] for k, o, d, *_ in got]
    assert kinds == [
        ["schema_change", "t", "create table"],
        ["schema_change", "t_v", "create index"],
        ["schema_change", "t", "alter table"],
        ["user_version", None, "0 -> 42"],
        ["schema_change", "t_v", "drop index"],
        ["analyze", None, ""],
        ["vacuum", None, ""],
    ]
    schema = [(b, a) for k, _, _, b, a, *_ in got if k == "schema_change"]
    for before, after in schema:
        assert after == before + 1
    assert schema[0][0] == 0
    uv = [r for r in got if r[0] == "user_version"][0]
    assert (uv[5], uv[6]) == (0, 42)
    assert all(json.loads(r[7]) == {"app": "migrator"} for r in got)


def test_events_survive_a_restart_and_span_processes(run_py, db_path):
    run_py(
        """
con = sqlite3.connect(ARGS["db"])
load(con)
con.execute("CREATE TABLE a(x)")
con.execute("PRAGMA user_version = 3")
con.close()
emit("ok")
""",
        args={"db": db_path},
    )
    run_py(
        """
con = sqlite3.connect(ARGS["db"])
load(con)
con.execute("CREATE TABLE b(x)")
con.close()
emit("ok")
""",
        args={"db": db_path},
    )
    got = run_py(READ, args={"db": db_path})
    ev = [(e["kind"], e["object"]) for e in got["events"]]
    assert ev == [("schema_change", "a"), ("user_version", None), ("schema_change", "b")]
    assert len({e["pid"] for e in got["events"]}) == 2


ALEMBIC_ENV = """
import os, sys
from alembic.config import Config
from alembic import command
root = ARGS["root"]
cfg = Config()
cfg.set_main_option("script_location", os.path.join(root, "migrations"))
cfg.set_main_option("sqlalchemy.url", "sqlite:///" + ARGS["db"])
command.upgrade(cfg, ARGS.get("target", "head"))
emit("upgraded")
"""

REV_A = '''
revision = "aaa111"
down_revision = None
branch_labels = None
depends_on = None
from alembic import op
import sqlalchemy as sa

def upgrade():
    op.create_table("users", sa.Column("id", sa.Integer, primary_key=True), sa.Column("email", sa.String(200)))

def downgrade():
    op.drop_table("users")
'''

REV_B = '''
revision = "bbb222"
down_revision = "aaa111"
branch_labels = None
depends_on = None
from alembic import op
import sqlalchemy as sa

def upgrade():
    op.add_column("users", sa.Column("name", sa.String(50)))
    op.create_index("users_email", "users", ["email"])

def downgrade():
    op.drop_index("users_email")
'''


ALEMBIC_ENV_PY = """
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
engine = engine_from_config(
    config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""


@pytest.fixture
def alembic_project(tmp_path, venv_python):
    root = tmp_path / "proj"
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "migrations" / "env.py").write_text(ALEMBIC_ENV_PY)
    (root / "migrations" / "versions" / "aaa111_users.py").write_text(REV_A)
    (root / "migrations" / "versions" / "bbb222_name.py").write_text(REV_B)
    return root


def test_alembic_migrations_and_their_schema_changes(run_py, ext_path, venv_python, alembic_project, tmp_path):
    db = str(tmp_path / "alembic.db")
    # two separate runs of the real tool, one revision each, extension preloaded
    for target in ("aaa111", "bbb222"):
        assert run_py(
            ALEMBIC_ENV,
            env=preload(ext_path),
            python=venv_python,
            args={"root": str(alembic_project), "db": db, "target": target},
        ) == "upgraded"
    got = run_py(READ, args={"db": db})
    m = {(x["tool"], x["version"]): x for x in got["migrations"]}
    assert set(m) == {("alembic", "aaa111"), ("alembic", "bbb222")}
    assert m[("alembic", "bbb222")]["detail"] == "head"
    assert m[("alembic", "aaa111")]["detail"] == "superseded"
    a = json.loads(m[("alembic", "aaa111")]["schema_changes"])
    b = json.loads(m[("alembic", "bbb222")]["schema_changes"])
    assert ("create table", "users") in [(c["change"], c["object"]) for c in a]
    assert ("create table", "alembic_version") in [(c["change"], c["object"]) for c in a]
    assert [(c["change"], c["object"]) for c in b] == [("alter table", "users"), ("create index", "users_email")]
    assert m[("alembic", "aaa111")]["first_seen"] < m[("alembic", "bbb222")]["first_seen"]
    mig_events = [(e["object"], e["detail"]) for e in got["events"] if e["kind"] == "migration"]
    assert mig_events == [("alembic", "aaa111"), ("alembic", "bbb222")]
    # the tool's own statements were captured too (zero-code mode)
    q = run_py(
        """
con = sqlite3.connect(ARGS["db"])
load(con)
emit(rows(con, "SELECT query, calls FROM insights_queries WHERE query LIKE '%alembic_version%' ORDER BY query"))
""",
        args={"db": db},
    )
    assert any(query.startswith("INSERT INTO alembic_version") for query, _ in q)


DJANGO_RUN = """
import os, sys
sys.path.insert(0, ARGS["root"])
import django
from django.conf import settings
settings.configure(
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ARGS["db"]}},
    INSTALLED_APPS=["shop"],
    USE_TZ=True,
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
)
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
emit("migrated")
"""

DJANGO_FILES = {
    "shop/__init__.py": "",
    "shop/models.py": textwrap.dedent(
        """
        from django.db import models

        class Product(models.Model):
            name = models.CharField(max_length=100)
            price = models.IntegerField(default=0)
        """
    ),
    "shop/migrations/__init__.py": "",
    "shop/migrations/0001_initial.py": textwrap.dedent(
        """
        from django.db import migrations, models

        class Migration(migrations.Migration):
            initial = True
            dependencies = []
            operations = [
                migrations.CreateModel(
                    name="Product",
                    fields=[
                        ("id", models.AutoField(primary_key=True, serialize=False)),
                        ("name", models.CharField(max_length=100)),
                    ],
                ),
            ]
        """
    ),
    "shop/migrations/0002_product_price.py": textwrap.dedent(
        """
        from django.db import migrations, models

        class Migration(migrations.Migration):
            dependencies = [("shop", "0001_initial")]
            operations = [
                migrations.AddField(model_name="product", name="price", field=models.IntegerField(default=0)),
                migrations.AddIndex(model_name="product", index=models.Index(fields=["price"], name="shop_price_idx")),
            ]
        """
    ),
}


def test_django_migrate(run_py, ext_path, venv_python, tmp_path):
    root = tmp_path / "django"
    for rel, body in DJANGO_FILES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body)
    db = str(tmp_path / "django.db")
    assert run_py(DJANGO_RUN, env=preload(ext_path), python=venv_python, args={"root": str(root), "db": db}) == "migrated"
    got = run_py(READ, args={"db": db})
    m = {x["version"]: x for x in got["migrations"] if x["tool"] == "django"}
    assert set(m) == {"shop.0001_initial", "shop.0002_product_price"}
    for v in m.values():
        assert v["applied_at"] and v["applied_at"].endswith("Z")
    first = json.loads(m["shop.0001_initial"]["schema_changes"])
    second = json.loads(m["shop.0002_product_price"]["schema_changes"])
    assert ("create table", "shop_product") in [(c["change"], c["object"]) for c in first]
    assert ("create table", "django_migrations") in [(c["change"], c["object"]) for c in first]
    assert ("create index", "shop_price_idx") in [(c["change"], c["object"]) for c in second]
    assert not any(c["object"] == "shop_price_idx" for c in first)
    # each migration's changes come before the next one's
    assert max(c["at"] for c in first) < min(c["at"] for c in second)


def test_migration_tables_of_other_tools_are_read(run_py, db_path):
    got = run_py(
        """
con = sqlite3.connect(ARGS["db"], isolation_level=None)
con.executescript('''
CREATE TABLE schema_migrations(version TEXT PRIMARY KEY);
INSERT INTO schema_migrations VALUES ('20260101000000'), ('20260201000000');
CREATE TABLE _sqlx_migrations(version BIGINT PRIMARY KEY, description TEXT, installed_on TIMESTAMP, success BOOLEAN, checksum BLOB, execution_time BIGINT);
INSERT INTO _sqlx_migrations VALUES (1, 'init', '2026-11-20 10:00:00', 1, x'00', 5);
CREATE TABLE knex_migrations(id INTEGER PRIMARY KEY, name TEXT, batch INTEGER, migration_time DATETIME);
INSERT INTO knex_migrations VALUES (1, '001_init.js', 1, 1795591800123);
CREATE TABLE flyway_schema_history(installed_rank INT, version TEXT, description TEXT, type TEXT, script TEXT, checksum INT, installed_by TEXT, installed_on TEXT, execution_time INT, success INT);
INSERT INTO flyway_schema_history VALUES (1, '1', 'init', 'SQL', 'V1__init.sql', 0, 'me', '2026-11-21 09:00:00', 3, 1);
''')
load(con)
emit(rows(con, "SELECT tool, version, name, applied_at, detail FROM insights_migrations ORDER BY tool, version"))
""",
        args={"db": db_path},
    )
    assert got == [
        ["flyway", "1", "init", "2026-11-21T09:00:00.000Z", None],
        ["knex", "001_init.js", "001_init.js", "2026-11-25T07:30:00.123Z", "batch 1"],
        ["rails", "20260101000000", None, None, None],
        ["rails", "20260201000000", None, None, None],
        ["sqlx", "1", "init", "2026-11-20T10:00:00.000Z", None],
    ]


TAGS = """
con = sqlite3.connect(ARGS["db"], isolation_level=None)
load(con)
con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
con.execute("SELECT insights_tag('app', 'web')")
for user in ("alice", "bob"):
    con.execute("SELECT insights_tag('user', ?)", (user,))
    n = 3 if user == "alice" else 1
    for i in range(n):
        con.execute("INSERT INTO t(v) VALUES (?)", (user,))
# statement tags (sqlcommenter) win over the connection's for their key
con.execute("SELECT count(*) FROM t /*user='carol',route='%2Freport'*/").fetchall()
con.execute("SELECT insights_tag('user', NULL)")
con.execute("SELECT count(*) FROM t").fetchall()
act = rows(con, "SELECT key, value, calls, errors, rows_affected FROM insights_activity ORDER BY key, value")
current = one(con, "SELECT insights_tag()")
errs = [attempt(con, "SELECT insights_tag('bad key', 'x')"),
        attempt(con, "SELECT insights_tag('k', x'00')"),
        attempt(con, "SELECT insights_tag('k', ?)", "v" * 300),
        attempt(con, "SELECT insights_tag(NULL, 'x')")]
con.close()
emit({"act": act, "current": current, "errs": errs})
"""


def test_tag_attribution_from_both_sources(run_py, db_path):
    got = run_py(TAGS, args={"db": db_path})
    act = {(k, v): (c, e, r) for k, v, c, e, r in got["act"]}
    # alice: her insights_tag call + 3 inserts; bob: his call + 1 insert
    assert act[("user", "alice")] == (4, 0, 3)
    assert act[("user", "bob")] == (2, 0, 1)
    assert act[("user", "carol")] == (1, 0, 0)
    assert act[("route", "/report")] == (1, 0, 0)
    # app=web covers everything from its own insights_tag call on: that call,
    # alice's 4, bob's 2, carol's select, the untagging call, the last count
    assert act[("app", "web")][0] == 1 + 4 + 2 + 1 + 1 + 1
    assert json.loads(got["current"]) == {"app": "web"}
    for e in got["errs"]:
        assert e[0] == "err" and e[2].startswith("insights_tag: "), e
    # persisted: a new process sees the same totals from the store
    again = run_py(
        """
con = sqlite3.connect(ARGS["db"])
load(con)
emit(rows(con, "SELECT key, value, calls FROM insights_activity WHERE key = 'user' ORDER BY value"))
""",
        args={"db": db_path},
    )
    assert again == [["user", "alice", 4], ["user", "bob", 2], ["user", "carol", 1]]


def test_tag_cardinality_is_bounded_and_overflow_counted(run_py, db_path):
    got = run_py(
        """
con = sqlite3.connect(ARGS["db"], isolation_level=None)
load(con)
con.execute("SELECT insights_config('max_tag_values', 5)")
for i in range(20):
    con.execute("SELECT %d /*tenant='t%d'*/" % (i, i)).fetchall()
one(con, "SELECT insights_flush()")
act = rows(con, "SELECT value, calls FROM insights_activity WHERE key = 'tenant' ORDER BY value")
hours = rows(con, "SELECT count(*), sum(calls) FROM insights_activity('hour') WHERE key = 'tenant'")
emit({"act": act, "hours": hours, "dbg": debug(con)})
""",
        args={"db": db_path},
    )
    values = dict(got["act"])
    assert len(values) == 6
    assert values["(other)"] == 15
    assert sum(values.values()) == 20
    assert got["hours"] == [[6, 20]]
