//! `insights_info`: one row per monitored database about the registry itself
//! (like pg_stat_statements_info): fingerprints held, the bound, evictions,
//! connections and when the stats were last reset.
//!
//! Rules: read-only; counters are since the last full `insights_reset()`.

use crate::clock;
use crate::config::{self, Key};
use crate::vtab::{int, register, text, text_opt, Scan, Source, Tab};
use rusqlite::types::Value;
use rusqlite::vtab::Module;
use rusqlite::{Connection, Result};
use std::ffi::CStr;
use std::sync::atomic::Ordering;

pub struct Info;

impl Source for Info {
    const NAME: &'static str = "insights_info";
    const SCHEMA: &'static CStr = c"CREATE TABLE x(database TEXT, fingerprints INTEGER, max_queries INTEGER, evictions INTEGER, connections_open INTEGER, connections_peak INTEGER, connections_opened INTEGER, connections_closed INTEGER, stats_reset TEXT)";

    fn rows(_scan: &Scan) -> Result<Vec<Vec<Value>>, String> {
        Ok(crate::registry::registry()
            .databases()
            .into_iter()
            .map(|d| {
                let reset = d.reset_at.load(Ordering::Relaxed);
                vec![
                    text(d.path.clone()),
                    int(d.len() as u64),
                    int(config::get(Key::MaxQueries) as u64),
                    int(d.evictions.load(Ordering::Relaxed)),
                    int(d.connections_open.load(Ordering::Relaxed)),
                    int(d.connections_peak.load(Ordering::Relaxed)),
                    int(d.connections_opened.load(Ordering::Relaxed)),
                    int(d.connections_closed.load(Ordering::Relaxed)),
                    text_opt((reset > 0).then(|| clock::stamp_iso(reset))),
                ]
            })
            .collect())
    }
}

pub fn load(conn: &Connection) -> Result<()> {
    const MODULE: Module<'static, Tab<Info>> = Module::eponymous_only_module();
    register(conn, &MODULE)
}
