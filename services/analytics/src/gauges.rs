//! The figures as Prometheus gauges on `/metrics`, refreshed from the projection every few
//! seconds: orders per status, payments per outcome, net revenue per currency, stock-outs per
//! SKU.

use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store;

/// How often the gauges are read from the database.
const REFRESH: Duration = Duration::from_secs(5);

type Labelled = Family<Vec<(String, String)>, Gauge>;

/// The gauges, registered in a service's metrics.
#[derive(Clone, Default)]
pub struct Gauges {
    orders: Labelled,
    payments: Labelled,
    revenue: Labelled,
    stock_outs: Labelled,
}

impl Gauges {
    pub fn register(metrics: &orderflow_platform::Metrics) -> Gauges {
        let gauges = Gauges::default();
        metrics.register(
            "analytics_orders",
            "Orders by their current status",
            gauges.orders.clone(),
        );
        metrics.register(
            "analytics_payments",
            "Payments by outcome (paid, declined)",
            gauges.payments.clone(),
        );
        metrics.register(
            "analytics_revenue_minor",
            "Money charged minus money refunded, in minor units, by currency",
            gauges.revenue.clone(),
        );
        metrics.register(
            "analytics_stock_outs",
            "Paid orders a SKU left short",
            gauges.stock_outs.clone(),
        );
        gauges
    }

    /// Sets every gauge from the projection.
    pub async fn refresh(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let figures = store::figures(pool, 0).await?;
        let totals = store::revenue_totals(pool).await?;
        let label = |name: &str, value: &str| vec![(name.to_owned(), value.to_owned())];
        self.orders.clear();
        for (status, n) in &figures.orders {
            self.orders.get_or_create(&label("status", status)).set(*n);
        }
        self.payments
            .get_or_create(&label("outcome", store::PAID))
            .set(figures.paid);
        self.payments
            .get_or_create(&label("outcome", store::DECLINED))
            .set(figures.declined);
        self.revenue.clear();
        for (currency, net) in totals {
            self.revenue
                .get_or_create(&label("currency", &currency))
                .set(net);
        }
        self.stock_outs.clear();
        for (sku, orders, _) in &figures.stock_outs {
            self.stock_outs
                .get_or_create(&label("sku", sku))
                .set(*orders);
        }
        Ok(())
    }

    /// Refreshes the gauges every few seconds until `shutdown`.
    pub async fn run(self, pool: PgPool, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(REFRESH);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            if let Err(e) = self.refresh(&pool).await {
                tracing::debug!(error = %e, "cannot refresh the analytics gauges");
            }
        }
    }
}
