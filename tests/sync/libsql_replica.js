// A libSQL embedded replica (npm `libsql`) syncing from a sqld primary, as
// a long-running test process. Usage: node libsql_replica.js <db> <sync url>
// Commands on stdin, one per line; one JSON answer per line:
//   sync            -> {"frame_no": N, "frames_synced": M}  (libSQL's own view)
//   query <sql>     -> {"rows": [...]}
//   close           -> exits
const Database = require("libsql");
const readline = require("readline");
const [path, url] = process.argv.slice(2);
const db = new Database(path, { syncUrl: url });
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
out({ ready: true });
const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  try {
    if (line === "sync") {
      out(db.sync());
    } else if (line.startsWith("query ")) {
      out({ rows: db.prepare(line.slice(6)).all() });
    } else if (line === "close") {
      db.close();
      out({ closed: true });
      process.exit(0);
    } else {
      out({ error: "unknown command " + line });
    }
  } catch (e) {
    out({ error: String(e) });
  }
});
