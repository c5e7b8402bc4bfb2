//! The inventory service's reaction to payments: for a PAID order, deduct every line or
//! none. Rows are locked in SKU order (no deadlocks between concurrent orders) and the
//! `available >= 0` constraint backs the check, so stock never goes below zero.

use std::collections::BTreeMap;

use async_trait::async_trait;
use orderflow_domain::{OrderId, Quantity, Sku};
use orderflow_events::{self as ev, Event};
use orderflow_platform::{HandleError, Handler, MessageContext};
use sqlx::{Postgres, Row, Transaction};

pub struct InventoryHandler;

/// The requested units per SKU (an order may name a SKU on several lines).
fn requested_units(items: &[ev::OrderLine]) -> Result<BTreeMap<Sku, i64>, HandleError> {
    if items.is_empty() {
        return Err(HandleError::invalid("paid order has no items"));
    }
    let mut wanted = BTreeMap::new();
    for (i, line) in items.iter().enumerate() {
        let sku = Sku::parse(&format!("items[{i}].sku"), &line.sku)
            .map_err(|e| HandleError::invalid(e.to_string()))?;
        let quantity = Quantity::parse(&format!("items[{i}].quantity"), i64::from(line.quantity))
            .map_err(|e| HandleError::invalid(e.to_string()))?;
        *wanted.entry(sku).or_insert(0i64) += i64::from(quantity.get());
    }
    Ok(wanted)
}

#[async_trait]
impl Handler for InventoryHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &Event,
        _ctx: &MessageContext,
    ) -> Result<Vec<Event>, HandleError> {
        let Event::PaymentProcessed(payment) = event else {
            return Ok(Vec::new());
        };
        match payment.status {
            ev::PaymentStatus::Paid => {}
            ev::PaymentStatus::Failed => return Ok(Vec::new()),
            ev::PaymentStatus::Unknown => {
                return Err(HandleError::invalid(
                    "payment status UNKNOWN (written by a newer schema?)",
                ));
            }
        }
        let order_id = OrderId::parse("order_id", &payment.order_id)
            .map_err(|e| HandleError::invalid(e.to_string()))?;
        let wanted = requested_units(&payment.items)?;
        let done: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM reservations WHERE order_id = $1)")
                .bind(order_id.as_uuid())
                .fetch_one(&mut **tx)
                .await?;
        if done {
            tracing::info!(%order_id, "stock already settled for this order");
            return Ok(Vec::new());
        }
        let skus: Vec<&str> = wanted.keys().map(Sku::as_str).collect();
        let rows = sqlx::query(
            "SELECT sku, available FROM stock WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
        )
        .bind(&skus)
        .fetch_all(&mut **tx)
        .await?;
        let available: BTreeMap<String, i64> = rows
            .iter()
            .map(|r| {
                (
                    r.get::<String, _>("sku"),
                    i64::from(r.get::<i32, _>("available")),
                )
            })
            .collect();
        let missing: Vec<ev::MissingItem> = wanted
            .iter()
            .filter_map(|(sku, &want)| {
                let have = available.get(sku.as_str()).copied().unwrap_or(0);
                (have < want).then(|| ev::MissingItem {
                    sku: sku.to_string(),
                    requested: want as i32,
                    available: have as i32,
                })
            })
            .collect();
        let lines: Vec<ev::StockLine> = wanted
            .iter()
            .map(|(sku, &q)| ev::StockLine {
                sku: sku.to_string(),
                quantity: q as i32,
            })
            .collect();
        let status = if missing.is_empty() {
            let quantities: Vec<i32> = wanted.values().map(|&q| q as i32).collect();
            sqlx::query(
                "UPDATE stock SET available = available - d.quantity, updated_at = now()
                 FROM UNNEST($1::text[], $2::int[]) AS d(sku, quantity) WHERE stock.sku = d.sku",
            )
            .bind(&skus)
            .bind(&quantities)
            .execute(&mut **tx)
            .await?;
            ev::InventoryStatus::Confirmed
        } else {
            ev::InventoryStatus::OutOfStock
        };
        sqlx::query(
            "INSERT INTO reservations (order_id, status, items, missing) VALUES ($1, $2, $3, $4)",
        )
        .bind(order_id.as_uuid())
        .bind(if missing.is_empty() {
            "CONFIRMED"
        } else {
            "OUT_OF_STOCK"
        })
        .bind(serde_json::to_value(&lines).expect("lines serialize"))
        .bind(serde_json::to_value(&missing).expect("missing serialize"))
        .execute(&mut **tx)
        .await?;
        tracing::info!(%order_id, ?status, missing = missing.len(), "stock settled");
        Ok(vec![Event::InventoryUpdated(ev::InventoryUpdated {
            event_id: ev::new_event_id(),
            order_id: payment.order_id.clone(),
            occurred_at: ev::now_millis(),
            status,
            items: lines,
            missing,
        })])
    }
}
