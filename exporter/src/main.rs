//! `sqlite-insights`: the standalone exporter. Serves the same `/metrics`,
//! JSON API and dashboard as `insights_serve()`, from the sidecar stores of
//! one or more databases, so short-lived processes (CLI jobs, cron, shells)
//! are covered without a server of their own.
//!
//! Rules:
//! - Reads the stores only (read-only connections opened per request), never
//!   the databases themselves (it stats their files for sizes and disk free).
//! - Counters are the stores' totals: every process that flushed to the
//!   store, all time (within the store's retention). Scrape either this
//!   exporter or the processes' own endpoints for a database, not both.
//! - Shares its rendering (exposition.rs), HTTP server (http.rs), histogram
//!   layout, instants (clock.rs) and dashboard with the extension by
//!   compiling the same files.

#[allow(dead_code)]
#[path = "../../src/clock.rs"]
mod clock;
#[allow(dead_code)]
#[path = "../../src/exposition.rs"]
mod exposition;
#[allow(dead_code)]
#[path = "../../src/histogram.rs"]
mod histogram;
#[allow(dead_code)]
#[path = "../../src/http.rs"]
mod http;
mod stores;

use http::{Options, Request, Response, Server};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use stores::DbSpec;

const DEFAULT_LISTEN: &str = "127.0.0.1:9188";

const USAGE: &str = "usage: sqlite-insights [options] DATABASE...

Serves /metrics (Prometheus), the JSON API (/api/...) and the dashboard (/)
from the sqlite-insights stores of the given databases.

A DATABASE is a database path (its store is DATABASE.insights, or found in
--store-dir) or a store path ending in .insights.

options:
  --listen ADDR          address to serve on (default 127.0.0.1:9188; port 0 picks one)
  --token-file PATH      bearer token required from clients (or SQLITE_INSIGHTS_HTTP_TOKEN);
                         needed for a non-loopback --listen
  --top N                per-fingerprint series per database (default 50, 0 = none)
  --store-dir DIR        where the stores are (as SQLITE_INSIGHTS_STORE_DIR)
  --max-connections N    concurrent clients (default 16)
  --timeout-ms N         time a client has to send its request (default 5000)
  --once                 print the metrics once to stdout and exit
  --version              print the version and exit
";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

struct Config {
    listen: String,
    token: Option<String>,
    top: usize,
    store_dir: Option<String>,
    max_connections: usize,
    timeout_ms: u64,
    once: bool,
    dbs: Vec<String>,
}

fn parse_args(args: Vec<String>) -> Result<Config, String> {
    let mut c = Config {
        listen: DEFAULT_LISTEN.into(),
        token: std::env::var("SQLITE_INSIGHTS_HTTP_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        top: 50,
        store_dir: std::env::var("SQLITE_INSIGHTS_STORE_DIR")
            .ok()
            .filter(|d| !d.is_empty()),
        max_connections: 16,
        timeout_ms: 5000,
        once: false,
        dbs: Vec::new(),
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--listen" => c.listen = val("--listen")?,
            "--token-file" => {
                let p = val("--token-file")?;
                let t =
                    std::fs::read_to_string(&p).map_err(|e| format!("--token-file {p}: {e}"))?;
                let t = t.trim().to_string();
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) || t.len() > 256 {
                    return Err(format!(
                        "--token-file {p}: the token must be 1 to 256 printable ASCII characters without spaces"
                    ));
                }
                c.token = Some(t);
            }
            "--top" => {
                c.top = val("--top")?
                    .parse()
                    .map_err(|_| "--top must be a number".to_string())?
            }
            "--store-dir" => c.store_dir = Some(val("--store-dir")?),
            "--max-connections" => {
                c.max_connections = val("--max-connections")?
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--max-connections must be a positive number")?
            }
            "--timeout-ms" => {
                c.timeout_ms = val("--timeout-ms")?
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 100)
                    .ok_or("--timeout-ms must be a number >= 100")?
            }
            "--once" => c.once = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--version" => {
                println!("sqlite-insights {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => c.dbs.push(a),
        }
    }
    if c.dbs.is_empty() {
        return Err("give at least one DATABASE".into());
    }
    Ok(c)
}

fn main() {
    let cfg = match parse_args(std::env::args().skip(1).collect()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sqlite-insights: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let specs: Vec<DbSpec> = cfg
        .dbs
        .iter()
        .map(|d| DbSpec::new(d, cfg.store_dir.as_deref()))
        .collect();
    let state = Arc::new(stores::Exporter {
        dbs: specs,
        top: cfg.top,
    });
    if cfg.once {
        print!("{}", state.metrics());
        return;
    }
    let addr = match http::parse_addr(&cfg.listen) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sqlite-insights: --listen: {e}");
            std::process::exit(2);
        }
    };
    if !addr.ip().is_loopback() && cfg.token.is_none() {
        eprintln!(
            "sqlite-insights: listening on {addr} (not loopback) needs a bearer token: --token-file or SQLITE_INSIGHTS_HTTP_TOKEN"
        );
        std::process::exit(2);
    }
    let opts = Options {
        max_connections: cfg.max_connections,
        timeout: Duration::from_millis(cfg.timeout_ms),
        token: cfg.token.clone(),
    };
    let st = state.clone();
    let server = match Server::start(addr, opts, Arc::new(move |r: &Request| route(&st, r))) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sqlite-insights: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    println!("listening on http://{}", server.addr());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
    eprintln!("sqlite-insights: stopped");
}

fn route(st: &stores::Exporter, req: &Request) -> Response {
    let q = exposition::parse_query(&req.query);
    match req.path.as_str() {
        "/" | "/index.html" => exposition::dashboard_response(),
        "/metrics" => exposition::metrics_response(st.metrics()),
        "/healthz" => Response::text(200, "ok"),
        "/api/info" => Response::json(&st.info()),
        "/api/queries" => st.queries(&q),
        "/api/errors" => st.errors(&q),
        "/api/history" => st.history(&q),
        "/api/events" => Response::json(&st.events(&q)),
        "/api/alerts" => Response::json(&serde_json::json!({ "rules": [], "webhook_dropped": 0 })),
        _ => Response::json_error(404, "not found"),
    }
}
