//! The inventory database, all of its SQL: stock per SKU and one reservation per settled
//! order. The stock administration reads and writes through [`Store`]; the consumer's work
//! runs inside its transaction through the free functions. `available >= 0` is a table
//! constraint, a backstop behind the rule that decides.
//!
//! Every change of a SKU's stock counts a revision and adds the SKU's new catalogue entry
//! ([`ev::CatalogueItemChanged`]) to the outbox in the same transaction, so the published
//! catalogue follows the stock exactly: no change is published that did not commit, none
//! that committed is left out.

use std::collections::BTreeMap;

use orderflow_domain::{
    MAX_STOCK, OrderId, RequestedUnits, Sku, StockDecision, StockDelta, StockLevel, ValidationError,
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

/// Whether the order's stock was settled already (a repeated payment event).
#[tracing::instrument(skip_all, fields(%order_id))]
pub async fn is_settled(
    tx: &mut Transaction<'_, Postgres>,
    order_id: OrderId,
) -> Result<bool, InventoryError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM reservations WHERE order_id = $1)")
            .bind(order_id.as_uuid())
            .fetch_one(&mut **tx)
            .await?,
    )
}

/// The units available of each requested SKU, with their rows locked until the transaction
/// ends. Rows are locked in SKU order, so concurrent orders cannot deadlock. A SKU never
/// stocked has no row and is left out.
#[tracing::instrument(skip_all, fields(skus = requested.len()))]
pub async fn lock_available(
    tx: &mut Transaction<'_, Postgres>,
    requested: &RequestedUnits,
) -> Result<BTreeMap<Sku, u32>, InventoryError> {
    let skus: Vec<&str> = requested.skus().map(Sku::as_str).collect();
    let rows =
        sqlx::query("SELECT sku, available FROM stock WHERE sku = ANY($1) ORDER BY sku FOR UPDATE")
            .bind(&skus)
            .fetch_all(&mut **tx)
            .await?;
    let mut levels: BTreeMap<&str, u32> = BTreeMap::new();
    for row in &rows {
        let available: i32 = row.try_get("available")?;
        // Never negative (a table constraint); were it so, it would count as none.
        levels.insert(row.try_get("sku")?, u32::try_from(available).unwrap_or(0));
    }
    Ok(requested
        .skus()
        .filter_map(|sku| levels.get(sku.as_str()).map(|n| (sku.clone(), *n)))
        .collect())
}

/// Locks the stock rows of `skus` (any order, repeats allowed) until the transaction ends,
/// in SKU order, the order [`lock_available`] locks in, so transactions that lock some of the
/// same rows wait for each other instead of deadlocking. A SKU never stocked has no row.
#[tracing::instrument(skip_all, fields(skus = skus.len()))]
pub async fn lock_skus(
    tx: &mut Transaction<'_, Postgres>,
    skus: &[&str],
) -> Result<(), InventoryError> {
    if skus.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT 1 FROM stock WHERE sku = ANY($1) ORDER BY sku FOR UPDATE")
        .bind(skus)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Deducts every requested unit. Call only for a confirmed decision, with the rows locked.
/// Returns the catalogue entry of each SKU deducted, for the caller to publish in `tx`.
#[tracing::instrument(skip_all, fields(skus = requested.len()))]
pub async fn deduct(
    tx: &mut Transaction<'_, Postgres>,
    requested: &RequestedUnits,
) -> Result<Vec<Event>, InventoryError> {
    let (skus, units): (Vec<&str>, Vec<i32>) = requested
        .iter()
        // RequestedUnits holds at most i32::MAX units per SKU.
        .map(|(sku, units)| (sku.as_str(), units as i32))
        .unzip();
    let rows = sqlx::query(
        "UPDATE stock SET available = available - d.quantity, revision = revision + 1,
                          updated_at = now()
         FROM UNNEST($1::text[], $2::int[]) AS d(sku, quantity) WHERE stock.sku = d.sku
         RETURNING stock.sku, stock.available, stock.revision",
    )
    .bind(&skus)
    .bind(&units)
    .fetch_all(&mut **tx)
    .await?;
    Ok(Changed::events(&rows)?)
}

/// Records the order's decision, which also marks its stock settled.
#[tracing::instrument(skip_all, fields(%order_id))]
pub async fn record_reservation(
    tx: &mut Transaction<'_, Postgres>,
    order_id: OrderId,
    requested: &RequestedUnits,
    decision: &StockDecision,
) -> Result<(), InventoryError> {
    let status = match decision {
        StockDecision::Confirmed => "CONFIRMED",
        StockDecision::OutOfStock { .. } => "OUT_OF_STOCK",
    };
    let lines: Vec<ev::StockLine> = requested.iter().map(Into::into).collect();
    let missing: Vec<ev::MissingItem> = decision.missing().iter().map(Into::into).collect();
    sqlx::query(
        "INSERT INTO reservations (order_id, status, items, missing) VALUES ($1, $2, $3, $4)",
    )
    .bind(order_id.as_uuid())
    .bind(status)
    .bind(serde_json::to_value(&lines).expect("lines serialize"))
    .bind(serde_json::to_value(&missing).expect("missing serialize"))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
