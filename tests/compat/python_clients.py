"""Python clients against a running Tessera coordinator: psycopg 3, psycopg2, SQLAlchemy 2
(inspect and ORM) and pandas.read_sql. Usage: python_clients.py PORT. Exits non-zero on the
first failed check."""

import sys

PORT = int(sys.argv[1])
DSN = f"host=127.0.0.1 port={PORT} user=postgres dbname=postgres"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def psycopg3():
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS py3")
        conn.execute("CREATE TABLE py3 (id bigint PRIMARY KEY, name text, score double precision) PARTITION BY HASH (id)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO py3 VALUES (%s, %s, %s)", [(i, f"n{i}", i / 2) for i in range(20)])
            cur.execute("SELECT name, score FROM py3 WHERE id = %s", (7,))
            check(cur.fetchone() == ("n7", 3.5), "psycopg3 point read")
            # Server-side binding, binary results.
            cur.execute("SELECT count(*), sum(id) FROM py3 WHERE id >= %s", (10,), binary=True)
            check(cur.fetchone() == (10, 145), "psycopg3 binary aggregate")
    # Transactions: rollback discards, commit keeps.
    with psycopg.connect(DSN) as conn:
        conn.execute("UPDATE py3 SET name = 'x' WHERE id = 1")
        conn.rollback()
        check(conn.execute("SELECT name FROM py3 WHERE id = 1").fetchone()[0] == "n1", "psycopg3 rollback")
        conn.execute("UPDATE py3 SET name = 'y' WHERE id = 1")
        conn.commit()
        check(conn.execute("SELECT name FROM py3 WHERE id = 1").fetchone()[0] == "y", "psycopg3 commit")
    print("psycopg3 ok")


def psycopg2_():
    import psycopg2

    conn = psycopg2.connect(DSN)
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS py2")
    cur.execute("CREATE TABLE py2 (id bigint PRIMARY KEY, tag text)")
    cur.execute("INSERT INTO py2 VALUES (%s, %s), (%s, %s)", (1, "a", 2, "b"))
    conn.commit()
    cur.execute("SELECT tag FROM py2 WHERE id = %(id)s", {"id": 2})
    check(cur.fetchone() == ("b",), "psycopg2 named parameter")
    cur.execute("INSERT INTO py2 VALUES (3, 'c')")
    conn.rollback()
    cur.execute("SELECT count(*) FROM py2")
    check(cur.fetchone() == (2,), "psycopg2 rollback")
    conn.close()
    print("psycopg2 ok")


def sqlalchemy_():
    from sqlalchemy import (create_engine, inspect, text, String, BigInteger, ForeignKey,
                            UniqueConstraint, Index)
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, Session

    engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{PORT}/postgres")

    class Base(DeclarativeBase):
        pass

    class Account(Base):
        __tablename__ = "sa_accounts"
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        owner: Mapped[str] = mapped_column(String(40))
        balance: Mapped[int] = mapped_column(BigInteger, default=0)

    class Entry(Base):
        __tablename__ = "sa_entries"
        __table_args__ = (UniqueConstraint("id", "memo"), Index("sa_entries_account", "account_id"))
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        account_id: Mapped[int] = mapped_column(
            BigInteger, ForeignKey("sa_accounts.id", ondelete="CASCADE"))
        memo: Mapped[str] = mapped_column(String(40))

    with engine.begin() as c:
        c.execute(text("DROP TABLE IF EXISTS sa_entries"))
        c.execute(text("DROP TABLE IF EXISTS sa_accounts"))
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add_all([Account(id=i, owner=f"o{i}", balance=i * 10) for i in range(1, 6)])
        s.commit()
        a = s.get(Account, 3)
        check(a is not None and a.owner == "o3", "ORM get")
        a.balance = 99
        s.commit()
        check(s.get(Account, 3).balance == 99, "ORM update")
        s.delete(s.get(Account, 5))
        s.commit()
        check(s.query(Account).count() == 4, "ORM delete and count")

    insp = inspect(engine)
    check("public" in insp.get_schema_names(), "get_schema_names")
    check("sa_accounts" in insp.get_table_names(), "get_table_names")
    cols = {c["name"]: c for c in insp.get_columns("sa_accounts")}
    check(set(cols) == {"id", "owner", "balance"}, f"get_columns: {cols}")
    check(not cols["id"]["nullable"], "id not nullable")
    pk = insp.get_pk_constraint("sa_accounts")
    check(pk["constrained_columns"] == ["id"] and pk["name"] == "sa_accounts_pkey", f"pk: {pk}")
    idx = {i["name"]: i for i in insp.get_indexes("sa_entries")}
    check(idx.get("sa_entries_account")
          and idx["sa_entries_account"]["column_names"] == ["account_id"]
          and not idx["sa_entries_account"]["unique"], f"get_indexes: {idx}")
    check(idx.get("sa_entries_id_memo_key", {}).get("unique"), f"unique index: {idx}")
    fks = insp.get_foreign_keys("sa_entries")
    check(len(fks) == 1 and fks[0]["referred_table"] == "sa_accounts"
          and fks[0]["constrained_columns"] == ["account_id"]
          and fks[0]["referred_columns"] == ["id"]
          and fks[0]["options"].get("ondelete") == "CASCADE", f"get_foreign_keys: {fks}")
    uqs = insp.get_unique_constraints("sa_entries")
    check([u["column_names"] for u in uqs] == [["id", "memo"]], f"get_unique_constraints: {uqs}")
    # Reflection round trip: a MetaData built from the database knows the relationship.
    from sqlalchemy import MetaData
    md = MetaData()
    md.reflect(engine, only=["sa_accounts", "sa_entries"])
    fk_targets = [fk.target_fullname for fk in md.tables["sa_entries"].foreign_keys]
    check(fk_targets == ["sa_accounts.id"], f"reflected foreign keys: {fk_targets}")
    print("sqlalchemy ok")
    return engine


def pandas_(engine):
    import pandas as pd

    df = pd.read_sql("SELECT id, owner, balance FROM sa_accounts ORDER BY id", engine)
    check(list(df["id"]) == [1, 2, 3, 4], f"pandas rows: {df}")
    check(int(df["balance"].sum()) == 10 + 20 + 99 + 40, "pandas values")
    print("pandas ok")


psycopg3()
psycopg2_()
engine = sqlalchemy_()
pandas_(engine)
print("python clients ok")
