//! The analytics service: figures over every order projected from the events, through the
//! gateway's GetStats (operators only) and as Prometheus gauges; each event counted once even
//! when delivered twice; rebuilt from the log equal to the live figures. It is started beside
//! a running system; no other component knows it is there.

use std::time::Duration;

use orderflow_e2e::scenario::{deliver_again, place, seed_orders};
use orderflow_e2e::{Component, System, order_request, wait_for, watch_to_end};
use orderflow_platform::replay::Start;
use orderflow_proto::v1 as pb;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);

/// Every row of the projection, as text, table by table.
async fn projection(pool: &sqlx::PgPool) -> Vec<String> {
    let mut rows = Vec::new();
    for sql in [
        "SELECT 'status ' || order_id || ' ' || status || ' v' || version || ' ' || changed_at FROM order_status ORDER BY 1",
        "SELECT 'revenue ' || minute || ' ' || currency || ' ' || captured_minor || ' ' || refunded_minor FROM revenue_per_minute ORDER BY 1",
        "SELECT 'orders ' || status || ' ' || orders FROM orders_per_status WHERE orders > 0 ORDER BY 1",
        "SELECT 'payments ' || outcome || ' ' || payments FROM payment_outcomes ORDER BY 1",
        "SELECT 'stock-out ' || sku || ' ' || orders || ' ' || units_short FROM stock_outs ORDER BY 1",
    ] {
        rows.extend(
            sqlx::query_scalar::<_, String>(sql)
                .fetch_all(pool)
                .await
                .expect("the projection"),
        );
    }
    rows
}

fn counts(stats: &pb::Stats) -> Vec<(String, i64)> {
    stats
        .orders
        .iter()
        .map(|c| {
            let name = pb::OrderStatus::try_from(c.status)
                .unwrap()
                .as_str_name()
                .to_owned();
            (name, c.orders)
        })
        .collect()
}

#[tokio::test]
async fn the_seed_scenario_is_counted_once_served_to_operators_and_rebuilt_equal() {
    let mut system = System::start().await;
    system.start_component(Component::Analytics).await;
    seed_orders(&system, "alice", "stats-sku").await;
    let mut orders = system.orders("alice").await;
    // Every payment event delivered a second time, byte for byte, as a redelivery would.
    let payments = deliver_again(&system, &system.kafka.topics().payments).await;
    assert_eq!(payments, 4, "3 charges and a refund");

    let mut stats = system.stats().await;
    let expected = vec![
        ("ORDER_STATUS_FAILED".to_owned(), 1),
        ("ORDER_STATUS_COMPLETED".to_owned(), 1),
        ("ORDER_STATUS_REFUNDED".to_owned(), 1),
    ];
    let figures = wait_for("the three orders counted", WAIT, || {
        let mut stats = stats.clone();
        let expected = expected.clone();
        async move {
            let figures = stats
                .get_stats(pb::GetStatsRequest::default())
                .await
                .ok()?
                .into_inner();
            let mut got = counts(&figures);
            got.sort_by_key(|(name, _)| pb::OrderStatus::from_str_name(name).map(|s| s as i32));
            let refunded = figures
                .revenue
                .iter()
                .map(|r| r.refunded_minor)
                .sum::<i64>();
            (got == expected && refunded > 0).then_some(figures)
        }
    })
    .await;
    let paid = figures.payments.expect("payments");
    assert_eq!(
        (paid.paid, paid.declined),
        (2, 1),
        "each payment once: {paid:?}"
    );
    assert!((paid.decline_rate - 1.0 / 3.0).abs() < 1e-9);
    let captured: i64 = figures.revenue.iter().map(|r| r.captured_minor).sum();
    let refunded: i64 = figures.revenue.iter().map(|r| r.refunded_minor).sum();
    // 3 and 8 units at 2.50 EUR charged; the 8 refunded.
    assert_eq!((captured, refunded), (2750, 2000));
    assert!(figures.revenue.iter().all(|r| r.currency == "EUR"));
    assert_eq!(
        figures.stock_outs,
        vec![pb::StockOut {
            sku: "stats-sku".into(),
            orders: 1,
            units_short: 1,
        }]
    );

    // Operators only; a bad window is refused by name.
    let customer = orderflow_proto::v1::stats_service_client::StatsServiceClient::new(
        system
            .credentials
            .issuer
            .customer("alice")
            .on(system.channel().await),
    )
    .clone()
    .get_stats(pb::GetStatsRequest::default())
    .await
    .expect_err("a customer");
    assert_eq!(customer.code(), Code::PermissionDenied);
    let window = stats
        .get_stats(pb::GetStatsRequest {
            revenue_minutes: 5000,
        })
        .await
        .expect_err("a week of minutes");
    assert_eq!(window.code(), Code::InvalidArgument);
    assert!(
        window.message().contains("revenue_minutes"),
        "{}",
        window.message()
    );

    // The same figures as gauges.
    let metrics = format!("{}/metrics", system.admin_url(Component::Analytics));
    wait_for("the gauges", WAIT, || async {
        let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
        // Whole lines: the names are exactly the documented ones, prefixed once.
        let lines: Vec<&str> = text.lines().collect();
        [
            r#"orderflow_analytics_orders{status="COMPLETED"} 1"#,
            r#"orderflow_analytics_payments{outcome="declined"} 1"#,
            r#"orderflow_analytics_revenue_minor{currency="EUR"} 750"#,
            r#"orderflow_analytics_stock_outs{sku="stats-sku"} 1"#,
        ]
        .iter()
        .all(|gauge| lines.contains(gauge))
        .then_some(())
    })
    .await;

    // Rebuilt from the log: the same rows, the redelivered events counted once again.
    let pool = sqlx::PgPool::connect(system.analytics_db.url())
        .await
        .unwrap();
    let live = projection(&pool).await;
    system.stop_component(Component::Analytics).await;
    let kafka = system.kafka.clone();
    let group = kafka.group("analytics");
    wait_for("the analytics group to be empty", WAIT, || async {
        (orderflow_platform::replay::group_members(&kafka, &group)
            .await
            .ok()?
            == 0)
            .then_some(())
    })
    .await;
    let codec = system.credentials.codec(&system.registry_url);
    let from_time = orderflow_analytics::replay::rebuild(
        &kafka,
        &codec,
        &pool,
        Start::Time(chrono::Utc::now()),
        |_, _| {},
    )
    .await
    .expect_err("sums are rebuilt from the beginning only");
    assert!(
        format!("{from_time:#}").contains("--from-beginning"),
        "{from_time:#}"
    );
    let summary =
        orderflow_analytics::replay::rebuild(&kafka, &codec, &pool, Start::Beginning, |_, _| {})
            .await
            .expect("rebuild");
    assert_eq!(projection(&pool).await, live);
    assert_eq!(summary.skipped, 0);
    assert!(
        summary.messages > summary.events,
        "{summary:?}: the redelivered copies are skipped"
    );

    // It continues after the rebuild.
    system.start_component(Component::Analytics).await;
    let next = place(
        &system,
        order_request("alice", "stats-sku", 1, "pm_card_visa"),
    )
    .await;
    watch_to_end(&mut orders, &next.order_id, next.version).await;
    wait_for("the next order counted", WAIT, || {
        let mut stats = stats.clone();
        async move {
            let figures = stats
                .get_stats(pb::GetStatsRequest::default())
                .await
                .ok()?
                .into_inner();
            counts(&figures)
                .contains(&("ORDER_STATUS_COMPLETED".to_owned(), 2))
                .then_some(())
        }
    })
    .await;
}
