//! The inventory database, all of its SQL: stock per SKU and one reservation per settled
//! order. The stock administration reads and writes through [`Store`]; the consumer's work
//! runs inside its transaction through the free functions. `available >= 0` is a table
//! constraint, a backstop behind the rule that decides.
//!
//! Every change of a SKU's stock counts a revision and adds the SKU's new catalogue entry
//! ([`ev::CatalogueItemChanged`]) to the outbox in the same transaction, so the published
//! catalogue follows the stock exactly: no change is published that did not commit, none
//! that committed is left out.

use std::collections::{BTreeMap, HashSet};

use orderflow_domain::{
    MAX_STOCK, Sku, StockDecision, StockDelta, StockLevel, StockRequest, ValidationError, settle,
};
use orderflow_events::{self as ev, Event, Topics};
use orderflow_platform::trace::TraceParent;
use orderflow_platform::{Outbox, OutboxSignal};
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::error::InventoryError;

/// PostgreSQL's code for a violated CHECK constraint.
const CHECK_VIOLATION: &str = "23514";

/// Stock administration over the inventory database.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    topics: Topics,
    /// Wakes the outbox relay once a change is committed.
    outbox_signal: OutboxSignal,
}

/// A SKU's stock after a change: what its catalogue entry publishes.
struct Changed {
    sku: String,
    available: i32,
    revision: i64,
}

impl Changed {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        Ok(Changed {
            sku: row.try_get("sku")?,
            available: row.try_get("available")?,
            revision: row.try_get("revision")?,
        })
    }

    /// The catalogue entries of the stock rows `rows` (each with sku, available, revision).
    fn events(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Event>, sqlx::Error> {
        rows.iter()
            .map(|row| Changed::from_row(row).map(|c| c.event()))
            .collect()
    }

    fn event(&self) -> Event {
        Event::CatalogueItemChanged(ev::CatalogueItemChanged {
            event_id: ev::new_event_id(),
            occurred_at: ev::now_millis(),
            sku: self.sku.clone(),
            available: self.available,
            revision: self.revision,
        })
    }
}

impl Store {
    /// A store on `pool` that publishes catalogue entries to `topics.catalogue`, waking the
    /// relay through `outbox_signal` after each commit.
    pub fn new(pool: PgPool, topics: Topics, outbox_signal: OutboxSignal) -> Self {
        Store {
            pool,
            topics,
            outbox_signal,
        }
    }

    /// Commits `tx` with the catalogue entry of `changed` in its outbox; returns the level.
    async fn commit_change(
        &self,
        mut tx: Transaction<'_, Postgres>,
        changed: Changed,
    ) -> Result<i32, InventoryError> {
        Outbox::insert(
            &mut tx,
            &self.topics,
            &[changed.event()],
            &TraceParent::new_root(),
        )
        .await?;
        tx.commit().await?;
        self.outbox_signal.committed();
        Ok(changed.available)
    }

    /// Publishes the catalogue entry of every SKU stocked before the catalogue existed
    /// (revision 0), once: run at start. Returns how many there were. The rows are locked in
    /// SKU order, the order the consumer locks them in, so a running instance's settlements
    /// wait instead of deadlocking.
    pub async fn announce_unpublished(&self) -> Result<usize, InventoryError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "WITH unpublished AS (
                 SELECT sku FROM stock WHERE revision = 0 ORDER BY sku FOR UPDATE
             )
             UPDATE stock SET revision = 1 FROM unpublished
             WHERE stock.sku = unpublished.sku AND stock.revision = 0
             RETURNING stock.sku, stock.available, stock.revision",
        )
        .fetch_all(&mut *tx)
        .await?;
        let events = Changed::events(&rows)?;
        Outbox::insert(
            &mut tx,
            &self.topics,
            &events,
            &TraceParent::current_or_new(),
        )
        .await?;
        tx.commit().await?;
        if !events.is_empty() {
            self.outbox_signal.committed();
            tracing::info!(skus = events.len(), "catalogue entries announced");
        }
        Ok(events.len())
    }

    /// Units of `sku` available now (0 for a SKU never stocked).
    #[tracing::instrument(skip_all, fields(%sku))]
    pub async fn available(&self, sku: &Sku) -> Result<i32, InventoryError> {
        let available: Option<i32> =
            sqlx::query_scalar("SELECT available FROM stock WHERE sku = $1")
                .bind(sku.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(available.unwrap_or(0))
    }

    /// Sets the units of `sku` available; returns them.
    #[tracing::instrument(skip_all, fields(%sku))]
    pub async fn set(&self, sku: &Sku, level: StockLevel) -> Result<i32, InventoryError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO stock (sku, available, revision) VALUES ($1, $2, 1)
             ON CONFLICT (sku) DO UPDATE SET available = EXCLUDED.available,
                 revision = stock.revision + 1, updated_at = now()
             RETURNING sku, available, revision",
        )
        .bind(sku.as_str())
        .bind(level.get() as i32)
        .fetch_one(&mut *tx)
        .await?;
        let available = self.commit_change(tx, Changed::from_row(&row)?).await?;
        tracing::info!(%sku, available, "stock set");
        Ok(available)
    }

    /// Adds `delta` to the units of `sku` in one statement, so concurrent changes add up;
    /// returns the new level. A change that would leave 0 to [`MAX_STOCK`] changes nothing and
    /// is an error naming `delta`.
    #[tracing::instrument(skip_all, fields(%sku, delta = delta.get()))]
    pub async fn adjust(&self, sku: &Sku, delta: StockDelta) -> Result<i32, InventoryError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO stock (sku, available, revision) VALUES ($1, $2, 1)
             ON CONFLICT (sku) DO UPDATE SET available = stock.available + $2,
                 revision = stock.revision + 1, updated_at = now()
             WHERE stock.available + $2 BETWEEN 0 AND $3
             RETURNING sku, available, revision",
        )
        .bind(sku.as_str())
        .bind(delta.get())
        .bind(MAX_STOCK as i32)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| match &e {
            // A negative delta on a SKU never stocked inserts a negative level.
            sqlx::Error::Database(d) if d.code().as_deref() == Some(CHECK_VIOLATION) => {
                InventoryError::from(ValidationError::new(
                    "delta",
                    format!("would take {sku} below zero"),
                ))
            }
            _ => InventoryError::from(e),
        })?;
        let row = row.ok_or_else(|| {
            ValidationError::new(
                "delta",
                format!("would take {sku} below zero or above {MAX_STOCK}"),
            )
        })?;
        let available = self.commit_change(tx, Changed::from_row(&row)?).await?;
        tracing::info!(%sku, delta = delta.get(), available, "stock adjusted");
        Ok(available)
    }
}

/// What settling one paid order did: the decision, recorded as its reservation, and the
/// catalogue entry of each SKU it deducted (none unless confirmed), in SKU order.
#[derive(Debug)]
pub struct Settlement {
    pub decision: StockDecision,
    pub catalogue: Vec<Event>,
}

/// A stock row as read under lock, and what the orders settled so far took from it.
struct Level {
    available: u32,
    revision: i64,
    /// Units deducted, and revisions counted, by this call.
    deducted: u32,
    deductions: i64,
}

/// Settles the stock of paid orders, in order, with their stock rows locked until the
/// transaction ends: each order is decided by [`settle`] on what the orders before it left,
/// as one transaction per order would decide it. An order settled before (a repeated payment
/// event, or the same order earlier in `requests`) is left alone: `None`. Four statements
/// however many orders: the rows locked in SKU order (so concurrent calls cannot deadlock),
/// which orders were settled (read once the locks are held, so a call that waited sees what
/// the one before it committed), every deduction, every reservation.
#[tracing::instrument(skip_all, fields(orders = requests.len()))]
pub async fn settle_all(
    tx: &mut Transaction<'_, Postgres>,
    requests: &[StockRequest],
) -> Result<Vec<Option<Settlement>>, InventoryError> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let skus: Vec<&str> = requests
        .iter()
        .flat_map(|r| r.units.skus().map(Sku::as_str))
        .collect();
    let rows = sqlx::query(
        "SELECT sku, available, revision FROM stock WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
    )
    .bind(&skus)
    .fetch_all(&mut **tx)
    .await?;
    let ids: Vec<uuid::Uuid> = requests.iter().map(|r| r.order_id.as_uuid()).collect();
    let mut settled: HashSet<uuid::Uuid> =
        sqlx::query_scalar("SELECT order_id FROM reservations WHERE order_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    let mut stock: BTreeMap<String, Level> = BTreeMap::new();
    for row in &rows {
        let available: i32 = row.try_get("available")?;
        stock.insert(
            row.try_get("sku")?,
            Level {
                // Never negative (a table constraint); were it so, it would count as none.
                available: u32::try_from(available).unwrap_or(0),
                revision: row.try_get("revision")?,
                deducted: 0,
                deductions: 0,
            },
        );
    }
    let mut settlements = Vec::with_capacity(requests.len());
    // The reservations' columns.
    let (mut reserved, mut statuses, mut items, mut missing) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for StockRequest { order_id, units } in requests {
        if !settled.insert(order_id.as_uuid()) {
            tracing::info!(%order_id, "stock already settled for this order");
            settlements.push(None);
            continue;
        }
        let available: BTreeMap<Sku, u32> = units
            .skus()
            .filter_map(|sku| stock.get(sku.as_str()).map(|l| (sku.clone(), l.available)))
            .collect();
        let decision = settle(units, &available);
        let mut catalogue = Vec::new();
        if decision == StockDecision::Confirmed {
            for (sku, n) in units.iter() {
                let level = stock
                    .get_mut(sku.as_str())
                    .expect("a confirmed order's SKUs are stocked");
                level.available -= n;
                level.revision += 1;
                level.deducted += n;
                level.deductions += 1;
                catalogue.push(
                    Changed {
                        sku: sku.to_string(),
                        available: level.available as i32,
                        revision: level.revision,
                    }
                    .event(),
                );
            }
        }
        let status = match decision {
            StockDecision::Confirmed => "CONFIRMED",
            StockDecision::OutOfStock { .. } => "OUT_OF_STOCK",
        };
        let lines: Vec<ev::StockLine> = units.iter().map(Into::into).collect();
        let short: Vec<ev::MissingItem> = decision.missing().iter().map(Into::into).collect();
        reserved.push(order_id.as_uuid());
        statuses.push(status);
        items.push(serde_json::to_value(&lines).expect("lines serialize"));
        missing.push(serde_json::to_value(&short).expect("missing serialize"));
        settlements.push(Some(Settlement {
            decision,
            catalogue,
        }));
    }
    // Every SKU deducted, by the units and revisions all of the orders took (at most the
    // units the row held, which an INT holds); the `available >= 0` constraint is still the
    // backstop.
    let (mut deducted, mut units, mut revisions) = (Vec::new(), Vec::new(), Vec::new());
    for (sku, level) in stock.iter().filter(|(_, level)| level.deductions > 0) {
        deducted.push(sku.as_str());
        units.push(level.deducted as i32);
        revisions.push(level.deductions);
    }
    if !deducted.is_empty() {
        sqlx::query(
            "UPDATE stock SET available = available - d.units, revision = revision + d.revisions,
                              updated_at = now()
             FROM UNNEST($1::text[], $2::int4[], $3::int8[]) AS d(sku, units, revisions)
             WHERE stock.sku = d.sku",
        )
        .bind(&deducted)
        .bind(&units)
        .bind(&revisions)
        .execute(&mut **tx)
        .await?;
    }
    if !reserved.is_empty() {
        sqlx::query(
            "INSERT INTO reservations (order_id, status, items, missing)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::jsonb[])",
        )
        .bind(&reserved)
        .bind(&statuses)
        .bind(&items)
        .bind(&missing)
        .execute(&mut **tx)
        .await?;
    }
    Ok(settlements)
}
