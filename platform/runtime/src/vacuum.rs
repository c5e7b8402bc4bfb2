//! A service's own vacuum, for servers whose autovacuum is off.
//!
//! The outbox, the dedup records and the notifications queue turn over: their rows are
//! inserted and soon deleted, and PostgreSQL reclaims the dead rows only by `VACUUM`, which its
//! autovacuum daemon runs by itself. An administrator may turn the daemon off (the CI machine
//! this project is measured on has `autovacuum = off`), and then dead rows pile up: in the
//! soak (docs/performance.md, section 19) the order service's outbox held 843,570 of them after
//! 200,000 orders, the relay's read of its head cost 450 pages a round, and the whole system
//! slowed from 140 to about 110 orders/s until a manual `VACUUM` brought it back.
//!
//! So when the server's autovacuum is off ([`SelfVacuum::Auto`], the default), each service
//! does for its own database what the daemon would have done: every `autovacuum_naptime` it
//! reads the statistics of its tables and vacuums each one the daemon would have vacuumed, and
//! analyzes each one the daemon would have analyzed, by the daemon's rule and the server's own
//! thresholds ([`Thresholds::work`]). One table at a time and with `SKIP_LOCKED`, so instances of
//! a service never queue behind each other's vacuum. Reads and writes go on beside it: `VACUUM`
//! without `FULL` takes no lock they need, except the brief exclusive lock with which it cuts
//! empty pages off a table's end, and that it gives up as soon as anyone waits, as the daemon's
//! does. A table the daemon is told to skip (`ALTER TABLE … SET (autovacuum_enabled = false)`)
//! is skipped here too; per-table thresholds are not read (the services set none).
//!
//! A round with work runs it on a connection of its own, opened beside the service's pool (with
//! its settings) and closed after the round, so a long `VACUUM` neither holds a pooled
//! connection nor keeps the pool from closing at shutdown, and the memory a `VACUUM` takes in its backend (a list of dead rows of up to
//! `maintenance_work_mem`, which the backend's allocator keeps after the statement) goes with
//! the backend: in the million-order soak, pooled connections that had vacuumed the
//! notifications table held about 35 MiB each.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// When a service vacuums its own tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SelfVacuum {
    /// Only while the server's `autovacuum` setting is off.
    #[default]
    Auto,
    /// Whatever the server's setting.
    Always,
    /// Never: the administrator vacuums.
    Never,
}

/// The autovacuum daemon's thresholds, as the server is configured: a table needs a vacuum
/// when its dead rows exceed `vacuum_base + vacuum_scale × rows`, or its rows inserted since
/// the last vacuum exceed `insert_base + insert_scale × rows` (a negative `insert_base`
/// disables that rule, as in PostgreSQL), and an analyze when its rows changed since the last
/// analyze exceed `analyze_base + analyze_scale × rows`.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub struct Thresholds {
    pub vacuum_base: f64,
    pub vacuum_scale: f64,
    pub insert_base: f64,
    pub insert_scale: f64,
    pub analyze_base: f64,
    pub analyze_scale: f64,
}

impl Default for Thresholds {
    /// PostgreSQL's defaults (versions 13 to 17).
    fn default() -> Self {
        Thresholds {
            vacuum_base: 50.0,
            vacuum_scale: 0.2,
            insert_base: 1000.0,
            insert_scale: 0.2,
            analyze_base: 50.0,
            analyze_scale: 0.1,
        }
    }
}

/// One table's statistics, from `pg_stat_user_tables` and `pg_class`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TableStats {
    /// Schema-qualified and quoted, ready for a statement.
    pub name: String,
    pub dead_rows: i64,
    pub inserted_since_vacuum: i64,
    pub modified_since_analyze: i64,
    /// The planner's estimate of live rows (`pg_class.reltuples`); negative when the table
    /// was never vacuumed or analyzed, which counts as empty, as the daemon counts it.
    pub rows: f64,
}

/// What a table needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Vacuum,
    Analyze,
    VacuumAnalyze,
}

impl Work {
    fn statement(self, table: &str) -> String {
        match self {
            Work::Vacuum => format!("VACUUM (SKIP_LOCKED) {table}"),
            Work::Analyze => format!("ANALYZE (SKIP_LOCKED) {table}"),
            Work::VacuumAnalyze => format!("VACUUM (SKIP_LOCKED, ANALYZE) {table}"),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Work::Vacuum => "vacuum",
            Work::Analyze => "analyze",
            Work::VacuumAnalyze => "vacuum_analyze",
        }
    }
}

impl Thresholds {
    /// What the autovacuum daemon would do to `table`, if anything.
    pub fn work(&self, table: &TableStats) -> Option<Work> {
        let rows = table.rows.max(0.0);
        let vacuum = table.dead_rows as f64 > self.vacuum_base + self.vacuum_scale * rows
            || (self.insert_base >= 0.0
                && table.inserted_since_vacuum as f64
                    > self.insert_base + self.insert_scale * rows);
        let analyze =
            table.modified_since_analyze as f64 > self.analyze_base + self.analyze_scale * rows;
        match (vacuum, analyze) {
            (true, true) => Some(Work::VacuumAnalyze),
            (true, false) => Some(Work::Vacuum),
            (false, true) => Some(Work::Analyze),
            (false, false) => None,
        }
    }
}

/// The server's autovacuum settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerSettings {
    /// The server's `autovacuum`.
    pub autovacuum: bool,
    /// The server's `autovacuum_naptime`: how long the daemon sleeps between rounds.
    pub naptime: Duration,
    pub thresholds: Thresholds,
}

impl SelfVacuum {
    /// Whether the service vacuums its own tables on a server with these settings.
    pub fn active(self, server: &ServerSettings) -> bool {
        match self {
            SelfVacuum::Auto => !server.autovacuum,
            SelfVacuum::Always => true,
            SelfVacuum::Never => false,
        }
    }
}

const SETTINGS: &str = "SELECT
    current_setting('autovacuum')::bool AS autovacuum,
    (SELECT setting::float8 FROM pg_settings WHERE name = 'autovacuum_naptime') AS naptime_secs,
    current_setting('autovacuum_vacuum_threshold')::float8 AS vacuum_base,
    current_setting('autovacuum_vacuum_scale_factor')::float8 AS vacuum_scale,
    current_setting('autovacuum_vacuum_insert_threshold')::float8 AS insert_base,
    current_setting('autovacuum_vacuum_insert_scale_factor')::float8 AS insert_scale,
    current_setting('autovacuum_analyze_threshold')::float8 AS analyze_base,
    current_setting('autovacuum_analyze_scale_factor')::float8 AS analyze_scale";

#[derive(sqlx::FromRow)]
struct SettingsRow {
    autovacuum: bool,
    naptime_secs: f64,
    #[sqlx(flatten)]
    thresholds: Thresholds,
}

// Every table of the connected database (each service's database is its own), but those the
// daemon is told to skip.
const TABLES: &str = "SELECT
    quote_ident(s.schemaname) || '.' || quote_ident(s.relname) AS name,
    s.n_dead_tup AS dead_rows,
    s.n_ins_since_vacuum AS inserted_since_vacuum,
    s.n_mod_since_analyze AS modified_since_analyze,
    c.reltuples::float8 AS rows
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    WHERE NOT EXISTS (
        SELECT 1 FROM pg_options_to_table(c.reloptions) o
        WHERE CASE WHEN o.option_name = 'autovacuum_enabled' THEN NOT o.option_value::bool END)
    ORDER BY s.n_dead_tup DESC";

/// Reads the server's autovacuum settings.
pub async fn server_settings(pool: &PgPool) -> Result<ServerSettings, sqlx::Error> {
    let row: SettingsRow = sqlx::query_as(SETTINGS).fetch_one(pool).await?;
    Ok(ServerSettings {
        autovacuum: row.autovacuum,
        naptime: Duration::from_secs_f64(row.naptime_secs.max(1.0)),
        thresholds: row.thresholds,
    })
}

/// One round: what each table of the database needs by `thresholds`, done one table at a
/// time on a connection of its own, until done or `shutdown` (which drops the statement in
/// flight: the server finishes it, and nothing waits for it). A table that fails is logged and
/// left for the next round; the others are still done. Returns what was done.
pub async fn round(
    pool: &PgPool,
    thresholds: &Thresholds,
    metrics: &VacuumMetrics,
    shutdown: &CancellationToken,
) -> Result<Vec<(String, Work)>, sqlx::Error> {
    let tables: Vec<TableStats> = sqlx::query_as(TABLES).fetch_all(pool).await?;
    let due: Vec<(TableStats, Work)> = tables
        .into_iter()
        .filter_map(|table| thresholds.work(&table).map(|work| (table, work)))
        .collect();
    let mut done = Vec::new();
    if due.is_empty() {
        return Ok(done);
    }
    // Not from the pool: it neither waits for a free pooled connection nor takes one.
    let mut conn = pool.connect_options().connect().await?;
    for (table, work) in due {
        let started = std::time::Instant::now();
        let statement = work.statement(&table.name);
        let result = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            result = sqlx::query(&statement).execute(&mut conn) => result,
        };
        if let Err(e) = result {
            tracing::warn!(table = %table.name, work = work.as_str(), error = %e, "self-vacuum of a table failed");
            continue;
        }
        tracing::debug!(
            table = %table.name,
            work = work.as_str(),
            dead_rows = table.dead_rows,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "self-vacuum"
        );
        metrics.done(&table.name, work);
        done.push((table.name, work));
    }
    // The backend goes with the connection, and with it the memory its VACUUMs took (a dead
    // row list of up to `maintenance_work_mem`, kept by the allocator after the statement).
    let _ = conn.close().await;
    Ok(done)
}

/// How long to wait when the settings cannot be read: the daemon's default naptime.
const DEFAULT_NAPTIME: Duration = Duration::from_secs(60);

/// Runs a round every `autovacuum_naptime` (the first at once) while `mode` says the service
/// vacuums on this server, until `shutdown`. The settings are read again every round, so a
/// server whose autovacuum is switched on or off is followed.
pub async fn run(
    pool: PgPool,
    mode: SelfVacuum,
    metrics: VacuumMetrics,
    shutdown: CancellationToken,
) {
    if mode == SelfVacuum::Never {
        return;
    }
    let mut was_active = None;
    loop {
        let naptime = match server_settings(&pool).await {
            Ok(server) => {
                let active = mode.active(&server);
                if was_active != Some(active) {
                    if active {
                        tracing::info!(
                            server_autovacuum = server.autovacuum,
                            naptime_secs = server.naptime.as_secs(),
                            "this service vacuums its own tables (--self-vacuum {mode:?})"
                        );
                    } else if was_active.is_some() {
                        tracing::info!("the server's autovacuum is on: self-vacuum pauses");
                    }
                    was_active = Some(active);
                }
                if active
                    && let Err(e) = round(&pool, &server.thresholds, &metrics, &shutdown).await
                {
                    tracing::warn!(error = %e, "self-vacuum round failed");
                }
                server.naptime
            }
            // The next round tries again; nothing depends on a vacuum being prompt.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the server's autovacuum settings");
                DEFAULT_NAPTIME
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(naptime) => {}
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VacuumLabels {
    table: String,
    work: &'static str,
}

/// What the self-vacuum records: `orderflow_self_vacuum_total{table, work}`, the statements
/// it ran.
#[derive(Clone, Default)]
pub struct VacuumMetrics {
    done: Family<VacuumLabels, Counter>,
}

impl VacuumMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = VacuumMetrics::default();
        metrics.register(
            "self_vacuum",
            "VACUUM and ANALYZE statements the service's self-vacuum ran on its own tables, by table and work (a table another instance is vacuuming is skipped by the server and still counted)",
            m.done.clone(),
        );
        m
    }

    fn done(&self, table: &str, work: Work) {
        self.done
            .get_or_create(&VacuumLabels {
                table: table.to_owned(),
                work: work.as_str(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(dead_rows: i64, inserted: i64, modified: i64, rows: f64) -> TableStats {
        TableStats {
            name: "public.outbox".into(),
            dead_rows,
            inserted_since_vacuum: inserted,
            modified_since_analyze: modified,
            rows,
        }
    }

    #[test]
    fn a_table_is_vacuumed_once_its_dead_rows_pass_the_daemons_threshold() {
        let t = Thresholds::default();
        // 50 + 0.2 × 1000 = 250 dead rows.
        assert_eq!(t.work(&table(250, 0, 0, 1000.0)), None);
        assert_eq!(t.work(&table(251, 0, 0, 1000.0)), Some(Work::Vacuum));
        // A table never analyzed (reltuples -1) counts as empty: 50 dead rows.
        assert_eq!(t.work(&table(51, 0, 0, -1.0)), Some(Work::Vacuum));
        assert_eq!(t.work(&table(50, 0, 0, -1.0)), None);
    }

    #[test]
    fn an_insert_only_table_is_vacuumed_by_the_insert_rule_unless_it_is_disabled() {
        let t = Thresholds::default();
        // 1000 + 0.2 × 5000 = 2000 inserted rows.
        assert_eq!(t.work(&table(0, 2000, 0, 5000.0)), None);
        assert_eq!(t.work(&table(0, 2001, 0, 5000.0)), Some(Work::Vacuum));
        let disabled = Thresholds {
            insert_base: -1.0,
            ..t
        };
        assert_eq!(disabled.work(&table(0, 1_000_000, 0, 5000.0)), None);
    }

    #[test]
    fn a_table_changed_past_the_analyze_threshold_is_analyzed_and_both_combine() {
        let t = Thresholds::default();
        // 50 + 0.1 × 1000 = 150 changed rows.
        assert_eq!(t.work(&table(0, 0, 150, 1000.0)), None);
        assert_eq!(t.work(&table(0, 0, 151, 1000.0)), Some(Work::Analyze));
        assert_eq!(
            t.work(&table(10_000, 0, 10_000, 1000.0)),
            Some(Work::VacuumAnalyze)
        );
    }

    #[test]
    fn auto_vacuums_only_where_the_servers_autovacuum_is_off() {
        let server = |autovacuum| ServerSettings {
            autovacuum,
            naptime: Duration::from_secs(60),
            thresholds: Thresholds::default(),
        };
        assert!(SelfVacuum::Auto.active(&server(false)));
        assert!(!SelfVacuum::Auto.active(&server(true)));
        assert!(SelfVacuum::Always.active(&server(true)));
        assert!(!SelfVacuum::Never.active(&server(false)));
    }

    #[test]
    fn each_work_is_one_statement_that_skips_a_locked_table() {
        assert_eq!(
            Work::VacuumAnalyze.statement("public.outbox"),
            "VACUUM (SKIP_LOCKED, ANALYZE) public.outbox"
        );
        assert_eq!(
            Work::Analyze.statement("public.outbox"),
            "ANALYZE (SKIP_LOCKED) public.outbox"
        );
    }
}
