// node-postgres against a running Tessera coordinator: parameterised queries, prepared
// (named) statements, transactions. Usage: node node_pg.js PORT. Exits non-zero on failure.
const { Client } = require("pg");
const assert = require("assert");

async function main() {
  const client = new Client({ host: "127.0.0.1", port: Number(process.argv[2]), user: "postgres", database: "postgres" });
  await client.connect();
  await client.query("DROP TABLE IF EXISTS nodepg");
  await client.query("CREATE TABLE nodepg (id bigint PRIMARY KEY, name text, ok boolean) PARTITION BY HASH (id)");
  for (let i = 0; i < 10; i++) {
    await client.query("INSERT INTO nodepg VALUES ($1, $2, $3)", [i, `n${i}`, i % 2 === 0]);
  }
  const one = await client.query({ name: "by-id", text: "SELECT name, ok FROM nodepg WHERE id = $1", values: [4] });
  assert.deepStrictEqual(one.rows, [{ name: "n4", ok: true }]);
  const again = await client.query({ name: "by-id", text: "SELECT name, ok FROM nodepg WHERE id = $1", values: [5] });
  assert.deepStrictEqual(again.rows, [{ name: "n5", ok: false }]);
  const agg = await client.query("SELECT count(*)::int AS n, sum(id)::int AS s FROM nodepg WHERE ok");
  assert.deepStrictEqual(agg.rows, [{ n: 5, s: 20 }]);
  await client.query("BEGIN");
  await client.query("DELETE FROM nodepg WHERE id < $1", [5]);
  await client.query("ROLLBACK");
  const count = await client.query("SELECT count(*) AS n FROM nodepg");
  assert.strictEqual(Number(count.rows[0].n), 10);
  await assert.rejects(client.query("INSERT INTO nodepg VALUES (1, 'dup', true)"), (e) => e.code === "23505");
  await client.end();
  console.log("node pg ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
