//! The self-vacuum against real PostgreSQL, as the service's own role, on the order service's
//! real tables: it vacuums the outbox whose rows were deleted, by the daemon's rule, and leaves
//! a table with a few dead rows, and one the daemon is told to skip, alone.
//!
//! Where the server's autovacuum is on, its daemon would race the tests for the churned
//! tables: [`keep_the_daemon_away`] raises the daemon's per-table thresholds, which the
//! self-vacuum does not read.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use orderflow_platform::metrics::Metrics;
use orderflow_platform::migrations::with_platform;
use orderflow_platform::vacuum::{self, SelfVacuum, Thresholds, VacuumMetrics, Work};
use orderflow_testkit::TestDatabase;
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

static ORDER_MIGRATIONS: LazyLock<Migrator> =
    LazyLock::new(|| with_platform(sqlx::migrate!("../../migrations/order")));

async fn order_database(db: &TestDatabase) -> PgPool {
    orderflow_db::connect_and_migrate(&orderflow_db::DbSettings::new(db.url()), &ORDER_MIGRATIONS)
        .await
        .expect("order database")
}

/// Per-table thresholds no table here reaches, for the daemon (where it runs) only.
async fn keep_the_daemon_away(conn: &mut PgConnection, table: &str) {
    sqlx::query(&format!(
        "ALTER TABLE {table} SET (autovacuum_vacuum_threshold = 2000000000,
            autovacuum_analyze_threshold = 2000000000, autovacuum_vacuum_insert_threshold = -1)"
    ))
    .execute(&mut *conn)
    .await
    .expect("per-table thresholds");
}

/// Inserts `rows` outbox rows and deletes them on one connection, then has that connection
/// report its statistics (a backend sends them when idle, at most once a second otherwise).
async fn churn(conn: &mut PgConnection, table: &str, rows: i64) {
    sqlx::query(&format!(
        "INSERT INTO {table} (topic, event_key, payload)
         SELECT 'orders', 'k' || i, '{{}}' FROM generate_series(1, $1) i"
    ))
    .bind(rows)
    .execute(&mut *conn)
    .await
    .expect("insert rows");
    sqlx::query(&format!("DELETE FROM {table}"))
        .execute(&mut *conn)
        .await
        .expect("delete rows");
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .expect("flush statistics");
}

/// `(dead rows, vacuums, analyzes)` of `table`, as the statistics show them.
async fn stats(pool: &PgPool, table: &str) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT n_dead_tup, vacuum_count, analyze_count FROM pg_stat_user_tables
         WHERE relname = $1",
    )
    .bind(table)
    .fetch_one(pool)
    .await
    .expect("table statistics")
}

/// Polls `stats` of `table` until `done` holds, for at most 20 s.
async fn wait_for(pool: &PgPool, table: &str, done: impl Fn((i64, i64, i64)) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = stats(pool, table).await;
        if done(now) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "statistics of {table} never reached the expected state: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_round_vacuums_and_analyzes_the_churned_outbox_and_leaves_a_quiet_table_alone() {
    let db = TestDatabase::create("vacuum").await;
    let pool = order_database(&db).await;
    let mut conn = PgConnection::connect(db.url()).await.expect("connect");
    // Copies of the outbox's shape: one only sees a few rows come and go, the other is one the
    // daemon is told to skip.
    for sql in [
        "CREATE TABLE quiet (LIKE outbox INCLUDING ALL)",
        "CREATE TABLE opted_out (LIKE outbox INCLUDING ALL) WITH (autovacuum_enabled = off)",
    ] {
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .expect("create a table");
    }
    keep_the_daemon_away(&mut conn, "outbox").await;
    keep_the_daemon_away(&mut conn, "quiet").await;
    churn(&mut conn, "outbox", 5_000).await;
    churn(&mut conn, "quiet", 10).await;
    churn(&mut conn, "opted_out", 5_000).await;
    wait_for(&pool, "outbox", |(dead, ..)| dead == 5_000).await;
    wait_for(&pool, "quiet", |(dead, ..)| dead == 10).await;
    wait_for(&pool, "opted_out", |(dead, ..)| dead == 5_000).await;

    let metrics = Metrics::new();
    let done = vacuum::round(
        &pool,
        &Thresholds::default(),
        &VacuumMetrics::register(&metrics),
        &CancellationToken::new(),
    )
    .await
    .expect("a round");

    // 5,000 dead rows against the daemon's 50 (the table holds none), 10,000 changed rows
    // against its 50; the quiet table's 10 dead rows are below both, and the opted-out one is
    // skipped whatever it holds.
    assert_eq!(done, [("public.outbox".to_owned(), Work::VacuumAnalyze)]);
    wait_for(&pool, "outbox", |(dead, vacuums, analyzes)| {
        dead == 0 && vacuums == 1 && analyzes == 1
    })
    .await;
    assert_eq!(stats(&pool, "quiet").await, (10, 0, 0));
    assert_eq!(stats(&pool, "opted_out").await, (5_000, 0, 0));
    assert!(
        metrics.render().contains(
            r#"orderflow_self_vacuum_total{table="public.outbox",work="vacuum_analyze"} 1"#
        ),
        "{}",
        metrics.render()
    );
}

#[tokio::test]
async fn the_service_loop_reads_the_servers_settings_and_vacuums_until_shutdown() {
    let db = TestDatabase::create("vacuum_loop").await;
    let pool = order_database(&db).await;
    let server = vacuum::server_settings(&pool).await.expect("settings");
    let setting = |name: &'static str| {
        let pool = pool.clone();
        async move {
            let value: String =
                sqlx::query_scalar("SELECT setting FROM pg_settings WHERE name = $1")
                    .bind(name)
                    .fetch_one(&pool)
                    .await
                    .expect("a setting");
            value.parse::<f64>().expect("a number")
        }
    };
    let t = server.thresholds;
    for (read, name) in [
        (t.vacuum_base, "autovacuum_vacuum_threshold"),
        (t.vacuum_scale, "autovacuum_vacuum_scale_factor"),
        (t.insert_base, "autovacuum_vacuum_insert_threshold"),
        (t.insert_scale, "autovacuum_vacuum_insert_scale_factor"),
        (t.analyze_base, "autovacuum_analyze_threshold"),
        (t.analyze_scale, "autovacuum_analyze_scale_factor"),
    ] {
        assert_eq!(read, setting(name).await, "{name}");
    }
    assert_eq!(
        server.naptime.as_secs_f64(),
        setting("autovacuum_naptime").await
    );

    let mut conn = PgConnection::connect(db.url()).await.expect("connect");
    keep_the_daemon_away(&mut conn, "outbox").await;
    churn(&mut conn, "outbox", 1_000).await;
    wait_for(&pool, "outbox", |(dead, ..)| dead == 1_000).await;

    // `always`, so that the loop works whatever this server's autovacuum setting is; its
    // first round runs at once.
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(vacuum::run(
        pool.clone(),
        SelfVacuum::Always,
        VacuumMetrics::register(&Metrics::new()),
        shutdown.clone(),
    ));
    wait_for(&pool, "outbox", |(dead, vacuums, _)| {
        dead == 0 && vacuums == 1
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the loop stops on shutdown")
        .expect("the loop does not panic");

    // `never` returns at once, whatever is due.
    churn(&mut conn, "outbox", 1_000).await;
    tokio::time::timeout(
        Duration::from_secs(1),
        vacuum::run(
            pool.clone(),
            SelfVacuum::Never,
            VacuumMetrics::register(&Metrics::new()),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("never returns at once");
    wait_for(&pool, "outbox", |(dead, ..)| dead == 1_000).await;
    assert_eq!(stats(&pool, "outbox").await.1, 1);
}
