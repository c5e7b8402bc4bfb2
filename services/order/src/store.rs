//! The order database: orders, their status history, and the outbox writes that go with
//! every change.

use chrono::{DateTime, Utc};
use orderflow_domain::{NewOrder, OrderId, OrderInput, OrderStatus, Transition};
use orderflow_events::{self as ev, Event, Topics};
use orderflow_platform::trace::TraceParent;
use orderflow_platform::{Outbox, OutboxSignal};
use orderflow_proto::v1 as pb;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::error::OrderError;
use crate::metrics::TransitionMetrics;

/// An order as stored.
#[derive(Debug, Clone)]
pub struct OrderRecord {
    pub order_id: OrderId,
    pub customer_id: String,
    pub items: Vec<ev::OrderLine>,
    pub total_minor: i64,
    pub currency: String,
    pub status: OrderStatus,
    pub version: i64,
    pub status_reason: Option<String>,
    pub missing_items: Vec<ev::MissingItem>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One recorded status change.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub version: i64,
    pub status: OrderStatus,
    pub reason: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// Wakes the outbox relay once a placed order is committed.
    outbox_signal: OutboxSignal,
}

const ORDER_COLUMNS: &str = "order_id, customer_id, items, total_minor, currency, status, version, status_reason, missing_items, created_at, updated_at";

fn stored_status(status: &str) -> Result<OrderStatus, OrderError> {
    OrderStatus::parse(status)
        .ok_or_else(|| OrderError::Internal(anyhow::anyhow!("stored status {status:?}")))
}

fn record_from_row(row: &sqlx::postgres::PgRow) -> Result<OrderRecord, OrderError> {
    let status: String = row.try_get("status")?;
    Ok(OrderRecord {
        order_id: OrderId::from(row.try_get::<uuid::Uuid, _>("order_id")?),
        customer_id: row.try_get("customer_id")?,
        items: serde_json::from_value(row.try_get("items")?)
            .map_err(|e| OrderError::Internal(e.into()))?,
        total_minor: row.try_get("total_minor")?,
        currency: row.try_get("currency")?,
        status: stored_status(&status)?,
        version: row.try_get("version")?,
        status_reason: row.try_get("status_reason")?,
        missing_items: serde_json::from_value(row.try_get("missing_items")?)
            .map_err(|e| OrderError::Internal(e.into()))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A fingerprint of what the client asked for, so a reused idempotency key with a different
/// request is refused instead of silently answered with another order.
fn request_hash(order: &NewOrder) -> String {
    let mut hasher = Sha256::new();
    hasher.update(order.payment_method.as_str());
    for line in &order.items {
        hasher.update(format!(
            "\n{}|{}|{}|{}",
            line.sku,
            line.quantity.get(),
            line.unit_price.amount_minor(),
            line.unit_price.currency()
        ));
    }
    hex::encode(hasher.finalize())
}

fn event_lines(order: &NewOrder) -> Vec<ev::OrderLine> {
    order
        .items
        .iter()
        .map(|l| ev::OrderLine {
            sku: l.sku.to_string(),
            quantity: l.quantity.get() as i32,
            unit_price: ev::Money {
                amount_minor: l.unit_price.amount_minor(),
                currency: l.unit_price.currency().to_string(),
            },
        })
        .collect()
}

fn status_event(
    order_id: OrderId,
    customer_id: &str,
    version: i64,
    status: OrderStatus,
    reason: Option<String>,
    at: DateTime<Utc>,
) -> Event {
    let status = match status {
        OrderStatus::Pending => ev::OrderStatus::Pending,
        OrderStatus::Paid => ev::OrderStatus::Paid,
        OrderStatus::Failed => ev::OrderStatus::Failed,
        OrderStatus::Completed => ev::OrderStatus::Completed,
        OrderStatus::OutOfStock => ev::OrderStatus::OutOfStock,
        OrderStatus::Refunded => ev::OrderStatus::Refunded,
    };
    Event::OrderStatusChanged(ev::OrderStatusChanged {
        event_id: ev::new_event_id(),
        order_id: order_id.to_string(),
        occurred_at: at.timestamp_millis(),
        customer_id: customer_id.to_owned(),
        version,
        status,
        reason,
    })
}

impl Store {
    pub fn new(pool: PgPool, outbox_signal: OutboxSignal) -> Self {
        Store {
            pool,
            outbox_signal,
        }
    }

    /// Stores a new PENDING order with its OrderCreated and first OrderStatusChanged events,
    /// or returns the order an earlier request with the same idempotency key placed.
    pub async fn place(
        &self,
        order: &NewOrder,
        topics: &Topics,
    ) -> Result<(OrderRecord, bool), OrderError> {
        let hash = request_hash(order);
        let mut tx = self.pool.begin().await?;
        let order_id = OrderId::generate();
        let now = Utc::now();
        let items = event_lines(order);
        let inserted = sqlx::query(
            "INSERT INTO orders (order_id, customer_id, idempotency_key, request_hash, items, total_minor, currency,
                                 payment_method, status, version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'PENDING', 1, $9, $9)
             ON CONFLICT (customer_id, idempotency_key) DO NOTHING",
        )
        .bind(order_id.as_uuid())
        .bind(order.customer_id.as_str())
        .bind(order.idempotency_key.as_str())
        .bind(&hash)
        .bind(serde_json::to_value(&items).expect("lines serialize"))
        .bind(order.total.amount_minor())
        .bind(order.total.currency().as_str())
        .bind(order.payment_method.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            let row = sqlx::query(&format!("SELECT {ORDER_COLUMNS}, request_hash FROM orders WHERE customer_id = $1 AND idempotency_key = $2"))
                .bind(order.customer_id.as_str())
                .bind(order.idempotency_key.as_str())
                .fetch_one(&mut *tx)
                .await?;
            let stored_hash: String = row.try_get("request_hash")?;
            if stored_hash != hash {
                return Err(OrderError::IdempotencyConflict(
                    order.idempotency_key.to_string(),
                ));
            }
            return Ok((record_from_row(&row)?, false));
        }
        sqlx::query("INSERT INTO order_status_history (order_id, version, status, occurred_at) VALUES ($1, 1, 'PENDING', $2)")
            .bind(order_id.as_uuid())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let created = Event::OrderCreated(ev::OrderCreated {
            event_id: ev::new_event_id(),
            order_id: order_id.to_string(),
            occurred_at: now.timestamp_millis(),
            customer_id: order.customer_id.to_string(),
            items: items.clone(),
            total: ev::Money {
                amount_minor: order.total.amount_minor(),
                currency: order.total.currency().to_string(),
            },
            payment_method: order.payment_method.to_string(),
        });
        let pending = status_event(
            order_id,
            order.customer_id.as_str(),
            1,
            OrderStatus::Pending,
            None,
            now,
        );
        Outbox::insert(
            &mut tx,
            topics,
            &[created, pending],
            &TraceParent::new_root(),
        )
        .await?;
        tx.commit().await?;
        self.outbox_signal.committed();
        tracing::info!(%order_id, customer_id = %order.customer_id, "order placed");
        Ok((
            OrderRecord {
                order_id,
                customer_id: order.customer_id.to_string(),
                items,
                total_minor: order.total.amount_minor(),
                currency: order.total.currency().to_string(),
                status: OrderStatus::Pending,
                version: 1,
                status_reason: None,
                missing_items: Vec::new(),
                created_at: now,
                updated_at: now,
            },
            true,
        ))
    }

    pub async fn get(&self, order_id: OrderId) -> Result<OrderRecord, OrderError> {
        let row = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1"
        ))
        .bind(order_id.as_uuid())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(OrderError::NotFound(order_id))?;
        record_from_row(&row)
    }

    /// The order and its status changes with a version above `after`, in version order, read
    /// by one statement, so from one snapshot: the changes always reach the order's version.
    /// (Read one after the other, a change committed in between could be in the order row
    /// and missing from the changes, and a watcher would see the order end without it.)
    pub async fn with_history(
        &self,
        order_id: OrderId,
        after: i64,
    ) -> Result<(OrderRecord, Vec<StatusChange>), OrderError> {
        let rows = sqlx::query(&format!(
            "SELECT o.*, h.* FROM (SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1) o
             LEFT JOIN (SELECT version AS change_version, status AS change_status,
                               reason AS change_reason, occurred_at AS change_occurred_at
                        FROM order_status_history WHERE order_id = $1 AND version > $2) h ON true
             ORDER BY h.change_version"
        ))
        .bind(order_id.as_uuid())
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        let first = rows.first().ok_or(OrderError::NotFound(order_id))?;
        let record = record_from_row(first)?;
        let mut changes = Vec::with_capacity(rows.len());
        for r in &rows {
            // No change after `after`: one row, with the change columns NULL.
            let Some(version) = r.try_get::<Option<i64>, _>("change_version")? else {
                continue;
            };
            changes.push(StatusChange {
                version,
                status: stored_status(r.try_get("change_status")?)?,
                reason: r.try_get("change_reason")?,
                occurred_at: r.try_get("change_occurred_at")?,
            });
        }
        Ok((record, changes))
    }

    /// A customer's orders, newest first, starting after `cursor`; one extra row tells
    /// whether another page follows.
    pub async fn list(
        &self,
        customer_id: &str,
        cursor: Option<(DateTime<Utc>, uuid::Uuid)>,
        limit: i64,
    ) -> Result<Vec<OrderRecord>, OrderError> {
        let rows = match cursor {
            None => sqlx::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE customer_id = $1 ORDER BY created_at DESC, order_id DESC LIMIT $2"))
                .bind(customer_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
            Some((at, id)) => sqlx::query(&format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE customer_id = $1 AND (created_at, order_id) < ($2, $3)
                 ORDER BY created_at DESC, order_id DESC LIMIT $4"
            ))
            .bind(customer_id)
            .bind(at)
            .bind(id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?,
        };
        rows.iter().map(record_from_row).collect()
    }

    /// Applies an outcome to an order inside the consumer's transaction. Returns the
    /// OrderStatusChanged events to publish; `missing` is recorded for OUT_OF_STOCK. Each
    /// change is counted in `counted`.
    pub async fn apply(
        tx: &mut Transaction<'_, Postgres>,
        order_id: OrderId,
        input: &OrderInput,
        missing: &[ev::MissingItem],
        counted: &TransitionMetrics,
    ) -> Result<Result<Vec<Event>, String>, sqlx::Error> {
        let Some(row) = sqlx::query(
            "SELECT customer_id, status, version FROM orders WHERE order_id = $1 FOR UPDATE",
        )
        .bind(order_id.as_uuid())
        .fetch_optional(&mut **tx)
        .await?
        else {
            return Ok(Err(format!("unknown order {order_id}")));
        };
        let customer_id: String = row.get("customer_id");
        let status: String = row.get("status");
        let mut version: i64 = row.get("version");
        let Some(current) = OrderStatus::parse(&status) else {
            return Ok(Err(format!(
                "order {order_id} has unknown stored status {status:?}"
            )));
        };
        let transitions: Vec<Transition> = match orderflow_domain::apply(current, input) {
            Ok(t) => t,
            Err(e) => return Ok(Err(format!("order {order_id}: {e}"))),
        };
        if !missing.is_empty() {
            sqlx::query("UPDATE orders SET missing_items = $2 WHERE order_id = $1")
                .bind(order_id.as_uuid())
                .bind(serde_json::to_value(missing).expect("missing items serialize"))
                .execute(&mut **tx)
                .await?;
        }
        let now = Utc::now();
        let mut events = Vec::with_capacity(transitions.len());
        let mut from = current;
        for t in &transitions {
            version += 1;
            sqlx::query("INSERT INTO order_status_history (order_id, version, status, reason, occurred_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(order_id.as_uuid())
                .bind(version)
                .bind(t.to.as_str())
                .bind(&t.reason)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            events.push(status_event(
                order_id,
                &customer_id,
                version,
                t.to,
                t.reason.clone(),
                now,
            ));
            tracing::info!(%order_id, from = %current, to = %t.to, version, "order status changed");
            counted.record(from, t.to);
            from = t.to;
        }
        if let Some(last) = transitions.last() {
            sqlx::query("UPDATE orders SET status = $2, version = $3, status_reason = COALESCE($4, status_reason), updated_at = $5 WHERE order_id = $1")
                .bind(order_id.as_uuid())
                .bind(last.to.as_str())
                .bind(version)
                .bind(&last.reason)
                .bind(now)
                .execute(&mut **tx)
                .await?;
        }
        Ok(Ok(events))
    }
}

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

pub fn pb_status(status: OrderStatus) -> pb::OrderStatus {
    match status {
        OrderStatus::Pending => pb::OrderStatus::Pending,
        OrderStatus::Paid => pb::OrderStatus::Paid,
        OrderStatus::Failed => pb::OrderStatus::Failed,
        OrderStatus::Completed => pb::OrderStatus::Completed,
        OrderStatus::OutOfStock => pb::OrderStatus::OutOfStock,
        OrderStatus::Refunded => pb::OrderStatus::Refunded,
    }
}

impl From<&OrderRecord> for pb::Order {
    fn from(o: &OrderRecord) -> pb::Order {
        let money = |amount_minor| {
            Some(pb::Money {
                amount_minor,
                currency: o.currency.clone(),
            })
        };
        pb::Order {
            order_id: o.order_id.to_string(),
            customer_id: o.customer_id.clone(),
            items: o
                .items
                .iter()
                .map(|l| pb::OrderLine {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                    unit_price: Some(pb::Money {
                        amount_minor: l.unit_price.amount_minor,
                        currency: l.unit_price.currency.clone(),
                    }),
                })
                .collect(),
            total: money(o.total_minor),
            status: pb_status(o.status) as i32,
            version: o.version,
            status_reason: o.status_reason.clone().unwrap_or_default(),
            missing_items: o
                .missing_items
                .iter()
                .map(|m| pb::MissingItem {
                    sku: m.sku.clone(),
                    requested: m.requested,
                    available: m.available,
                })
                .collect(),
            created_at: Some(timestamp(o.created_at)),
            updated_at: Some(timestamp(o.updated_at)),
        }
    }
}

impl StatusChange {
    pub fn to_update(&self, order_id: OrderId) -> pb::OrderUpdate {
        pb::OrderUpdate {
            order_id: order_id.to_string(),
            version: self.version,
            status: pb_status(self.status) as i32,
            reason: self.reason.clone().unwrap_or_default(),
            occurred_at: Some(timestamp(self.occurred_at)),
            order: None,
        }
    }
}
