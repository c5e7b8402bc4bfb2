//! The order database, all of its SQL: orders, their status history, the outbox writes
//! that go with every change, and the read models of the catalogue and of the customer
//! directory. Rows are read back into domain types; `items` and `missing_items` are stored
//! as JSON in the shape of the Avro records.

use std::collections::HashSet;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use orderflow_db::column;
use orderflow_domain::{
    CatalogueEntry, CustomerEntry, CustomerId, MissingItem, Money, NewOrder, OrderId, OrderLine,
    OrderOutcome, OrderStatus, Sku, Standing, Transition, check_known, check_standing,
};
use orderflow_events::{self as ev, Event, Topics};
use orderflow_platform::trace::TraceParent;
use orderflow_platform::{Outbox, OutboxRows, OutboxSignal};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::error::OrderError;
use crate::metrics::TransitionMetrics;

/// An order as stored.
#[derive(Debug, Clone)]
pub struct OrderRecord {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub items: Vec<OrderLine>,
    pub total: Money,
    pub status: OrderStatus,
    pub version: i64,
    pub status_reason: Option<String>,
    pub missing_items: Vec<MissingItem>,
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

/// What [`Store::place`] did.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The new order, or the one an earlier request with the same idempotency key placed.
    pub record: OrderRecord,
    /// Whether this request placed it.
    pub created: bool,
    /// The events added to the outbox with it: OrderCreated and the first
    /// OrderStatusChanged (none when an earlier request placed it).
    pub events: Vec<Event>,
}

/// Where a page of ListOrders starts: after the order created at this time with this id.
pub type Cursor = (DateTime<Utc>, uuid::Uuid);

/// The order database for the gRPC API. The consumer's writes are `apply_all`,
/// `record_catalogues` and `record_customer`, inside the consumer's transaction.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// Wakes the outbox relay once a placed order is committed.
    outbox_signal: OutboxSignal,
}

const ORDER_COLUMNS: &str = "order_id, customer_id, items, total_minor, currency, status, version, status_reason, missing_items, created_at, updated_at";

/// The columns of a status change as [`Store::with_history`] reads them beside the order's.
const CHANGE_COLUMNS: &str = "version AS change_version, status AS change_status, \
     reason AS change_reason, occurred_at AS change_occurred_at";

/// An order as it is now, and its status changes after some version, in version order.
pub type History = (OrderRecord, Vec<StatusChange>);

/// Adds the change in `row` (a row of [`Store::with_history`] or [`Store::with_history_all`])
/// to `history`, if the row has one: an order without changes after the version asked for
/// reads as one row with the change columns NULL.
fn add_change(
    order_id: OrderId,
    history: &mut History,
    row: &sqlx::postgres::PgRow,
) -> Result<(), OrderError> {
    if let Some(version) = row.try_get::<Option<i64>, _>("change_version")? {
        history.1.push(StatusChange {
            version,
            status: stored_status(order_id, row.try_get("change_status")?)?,
            reason: row.try_get("change_reason")?,
            occurred_at: row.try_get("change_occurred_at")?,
        });
    }
    Ok(())
}

/// Stored data that does not read back as the domain type it was written from.
fn corrupt(order_id: OrderId, what: impl std::fmt::Display) -> OrderError {
    OrderError::Internal(anyhow::anyhow!(
        "order {order_id} has unknown stored {what}"
    ))
}

/// The one reader of a stored status.
fn stored_status(order_id: OrderId, status: &str) -> Result<OrderStatus, OrderError> {
    status
        .parse()
        .map_err(|_| corrupt(order_id, format_args!("status {status:?}")))
}

fn record_from_row(row: &sqlx::postgres::PgRow) -> Result<OrderRecord, OrderError> {
    let order_id = OrderId::from(row.try_get::<uuid::Uuid, _>("order_id")?);
    let json = |column: &str| -> Result<serde_json::Value, OrderError> { Ok(row.try_get(column)?) };
    let items: Vec<ev::OrderLine> = serde_json::from_value(json("items")?)
        .map_err(|e| corrupt(order_id, format_args!("items ({e})")))?;
    let missing: Vec<ev::MissingItem> = serde_json::from_value(json("missing_items")?)
        .map_err(|e| corrupt(order_id, format_args!("missing_items ({e})")))?;
    let currency: String = row.try_get("currency")?;
    Ok(OrderRecord {
        order_id,
        customer_id: CustomerId::parse("customer_id", row.try_get("customer_id")?)
            .map_err(|e| corrupt(order_id, e))?,
        items: ev::convert::order_lines("items", &items).map_err(|e| corrupt(order_id, e))?,
        total: Money::new("total", row.try_get("total_minor")?, &currency)
            .map_err(|e| corrupt(order_id, e))?,
        status: stored_status(order_id, row.try_get("status")?)?,
        version: row.try_get("version")?,
        status_reason: row.try_get("status_reason")?,
        missing_items: ev::convert::missing_items("missing_items", &missing)
            .map_err(|e| corrupt(order_id, e))?,
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

fn status_event(
    order_id: OrderId,
    customer_id: &str,
    version: i64,
    status: OrderStatus,
    reason: Option<String>,
    at: DateTime<Utc>,
) -> Event {
    Event::OrderStatusChanged(ev::OrderStatusChanged {
        event_id: ev::new_event_id(),
        order_id: order_id.to_string(),
        occurred_at: at.timestamp_millis(),
        customer_id: customer_id.to_owned(),
        version,
        status: status.into(),
        reason,
    })
}

/// New orders in one statement: each order (`PENDING`, version 1) whose customer's
/// idempotency key placed none before, its first history row and its events' outbox rows
/// ([`Outbox::INSERT_ROWS`], `$1` to `$4`, keyed by order id); an order whose key placed one
/// before gets none of them. The orders' values are arrays, `$5` to `$12`, their time `$13`.
/// Returns the ids of the orders it placed.
static PLACE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH placed AS (
             INSERT INTO orders (order_id, customer_id, idempotency_key, request_hash, items,
                                 total_minor, currency, payment_method, status, version,
                                 created_at, updated_at)
             SELECT n.*, 'PENDING', 1, $13, $13
             FROM UNNEST($5::uuid[], $6::text[], $7::text[], $8::text[], $9::jsonb[],
                         $10::int8[], $11::text[], $12::text[])
                  AS n(order_id, customer_id, idempotency_key, request_hash, items,
                       total_minor, currency, payment_method)
             ON CONFLICT (customer_id, idempotency_key) DO NOTHING
             RETURNING order_id),
         history AS (
             INSERT INTO order_status_history (order_id, version, status, occurred_at)
             SELECT order_id, 1, 'PENDING', $13 FROM placed),
         events AS (
             {} WHERE r.event_key::uuid = ANY (ARRAY(SELECT order_id FROM placed)))
         SELECT order_id FROM placed",
        Outbox::INSERT_ROWS
    )
});

/// A new order as [`Store::place_all`] writes it: its id, its events, and the values of its
/// row.
struct NewRow<'a> {
    order: &'a NewOrder,
    order_id: OrderId,
    hash: String,
    items: serde_json::Value,
    events: Vec<Event>,
}

impl Store {
    /// A store on `pool` that wakes the relay through `outbox_signal` after each commit.
    pub fn new(pool: PgPool, outbox_signal: OutboxSignal) -> Self {
        Store {
            pool,
            outbox_signal,
        }
    }

    /// Stores a new PENDING order with its OrderCreated and first OrderStatusChanged events,
    /// or returns the order an earlier request with the same idempotency key placed: one
    /// order through [`Store::place_all`], its events carrying `trace`.
    pub async fn place(
        &self,
        order: &NewOrder,
        trace: &TraceParent,
        topics: &Topics,
    ) -> Result<Placed, OrderError> {
        let mut placed = self.place_all(&[(order, trace)], topics).await?;
        placed.pop().expect("one result per order")
    }

    /// Stores new PENDING orders, each with its OrderCreated and first OrderStatusChanged
    /// events (their outbox rows carry the order's trace context), in one statement (`PLACE`),
    /// which needs no transaction of its own; one commit however many orders. Each order's
    /// own answer, in the order given: placed, or the order an earlier request with the same
    /// idempotency key placed, or [`OrderError::IdempotencyConflict`] when that request was a
    /// different order. An order whose key another order of the same call uses is that
    /// order's retry. The error of the call as a whole is the statement's.
    #[tracing::instrument(skip_all, fields(orders = orders.len()))]
    pub async fn place_all(
        &self,
        orders: &[(&NewOrder, &TraceParent)],
        topics: &Topics,
    ) -> Result<Vec<Result<Placed, OrderError>>, OrderError> {
        let now = Utc::now();
        let rows: Vec<NewRow> = orders
            .iter()
            .map(|(order, _)| {
                let order_id = OrderId::generate();
                let items: Vec<ev::OrderLine> = order.items.iter().map(Into::into).collect();
                let events = vec![
                    Event::OrderCreated(ev::OrderCreated {
                        event_id: ev::new_event_id(),
                        order_id: order_id.to_string(),
                        occurred_at: now.timestamp_millis(),
                        customer_id: order.customer_id.to_string(),
                        items: items.clone(),
                        total: order.total.into(),
                        payment_method: order.payment_method.to_string(),
                    }),
                    status_event(
                        order_id,
                        order.customer_id.as_str(),
                        1,
                        OrderStatus::Pending,
                        None,
                        now,
                    ),
                ];
                NewRow {
                    order,
                    order_id,
                    hash: request_hash(order),
                    items: serde_json::to_value(&items).expect("lines serialize"),
                    events,
                }
            })
            .collect();
        // Inserted in key order, so two calls racing on the same keys wait for each other
        // instead of deadlocking.
        let mut by_key: Vec<usize> = (0..rows.len()).collect();
        by_key.sort_by_key(|&i| {
            let order = rows[i].order;
            (order.customer_id.as_str(), order.idempotency_key.as_str())
        });
        let sorted: Vec<&NewRow> = by_key.iter().map(|&i| &rows[i]).collect();
        let caused: Vec<(&[Event], &TraceParent)> = by_key
            .iter()
            .map(|&i| (rows[i].events.as_slice(), orders[i].1))
            .collect();
        let outbox = OutboxRows::of(topics, &caused);
        fn text<'a>(rows: &[&'a NewRow], f: impl Fn(&'a NewRow) -> &'a str) -> Vec<&'a str> {
            rows.iter().map(|row| f(row)).collect()
        }
        let placed = outbox
            .bind(sqlx::query(&PLACE))
            .bind(
                sorted
                    .iter()
                    .map(|row| row.order_id.as_uuid())
                    .collect::<Vec<_>>(),
            )
            .bind(text(&sorted, |row| row.order.customer_id.as_str()))
            .bind(text(&sorted, |row| row.order.idempotency_key.as_str()))
            .bind(text(&sorted, |row| &row.hash))
            .bind(sorted.iter().map(|row| &row.items).collect::<Vec<_>>())
            .bind(
                sorted
                    .iter()
                    .map(|row| row.order.total.amount_minor())
                    .collect::<Vec<_>>(),
            )
            .bind(
                sorted
                    .iter()
                    .map(|row| row.order.total.currency().to_string())
                    .collect::<Vec<_>>(),
            )
            .bind(text(&sorted, |row| row.order.payment_method.as_str()))
            .bind(now)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| row.try_get("order_id"))
            .collect::<Result<HashSet<uuid::Uuid>, _>>()?;
        if !placed.is_empty() {
            self.outbox_signal.committed();
        }
        let mut answers = Vec::with_capacity(rows.len());
        for row in rows {
            answers.push(if placed.contains(&row.order_id.as_uuid()) {
                tracing::info!(order_id = %row.order_id, customer_id = %row.order.customer_id, "order placed");
                Ok(Placed {
                    record: OrderRecord {
                        order_id: row.order_id,
                        customer_id: row.order.customer_id.clone(),
                        items: row.order.items.clone(),
                        total: row.order.total,
                        status: OrderStatus::Pending,
                        version: 1,
                        status_reason: None,
                        missing_items: Vec::new(),
                        created_at: now,
                        updated_at: now,
                    },
                    created: true,
                    events: row.events,
                })
            } else {
                self.placed_before(row.order, &row.hash).await
            });
        }
        Ok(answers)
    }

    /// The order an earlier request with `order`'s idempotency key placed (an insert racing
    /// this one has committed by now: the conflict waited for it), if that request was the
    /// same order (its `hash`).
    async fn placed_before(&self, order: &NewOrder, hash: &str) -> Result<Placed, OrderError> {
        let row = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS}, request_hash FROM orders
             WHERE customer_id = $1 AND idempotency_key = $2"
        ))
        .bind(order.customer_id.as_str())
        .bind(order.idempotency_key.as_str())
        .fetch_one(&self.pool)
        .await?;
        let stored_hash: String = row.try_get("request_hash")?;
        if stored_hash != hash {
            return Err(OrderError::IdempotencyConflict(
                order.idempotency_key.to_string(),
            ));
        }
        Ok(Placed {
            record: record_from_row(&row)?,
            created: false,
            events: Vec::new(),
        })
    }

    /// The order as it is now.
    #[tracing::instrument(skip_all, fields(%order_id))]
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
    #[tracing::instrument(skip_all, fields(%order_id, after))]
    pub async fn with_history(&self, order_id: OrderId, after: i64) -> Result<History, OrderError> {
        let rows = sqlx::query(&format!(
            "SELECT o.*, h.* FROM (SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1) o
             LEFT JOIN (SELECT {CHANGE_COLUMNS}
                        FROM order_status_history WHERE order_id = $1 AND version > $2) h ON true
             ORDER BY h.change_version"
        ))
        .bind(order_id.as_uuid())
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        let first = rows.first().ok_or(OrderError::NotFound(order_id))?;
        let mut history = (record_from_row(first)?, Vec::with_capacity(rows.len()));
        for row in &rows {
            add_change(order_id, &mut history, row)?;
        }
        Ok(history)
    }

    /// Each of `asked` (an order and the version after which its changes are wanted) as
    /// [`Store::with_history`] reads it, in the order given and in one statement, so from one
    /// snapshot: the [`crate::HistoryReader`] reads the orders watched at the same time so.
    /// One order alone is read with [`Store::with_history`], whose plan PostgreSQL keeps per
    /// connection (docs/performance.md, section 41). An order that is not there, or does not
    /// read back, is its own answer's error; a statement that fails is the whole call's.
    #[tracing::instrument(skip_all, fields(orders = asked.len()))]
    pub async fn with_history_all(
        &self,
        asked: &[(OrderId, i64)],
    ) -> Result<Vec<Result<History, OrderError>>, OrderError> {
        if let [(order_id, after)] = asked {
            return Ok(vec![self.with_history(*order_id, *after).await]);
        }
        let ids: Vec<uuid::Uuid> = asked.iter().map(|(id, _)| id.as_uuid()).collect();
        let afters: Vec<i64> = asked.iter().map(|(_, after)| *after).collect();
        // One row per change of each order found (one, with the change columns NULL, if it
        // has none after `after`); an order not found has no row.
        let rows = sqlx::query(&format!(
            "SELECT q.position, o.*, h.*
             FROM UNNEST($1::uuid[], $2::int8[]) WITH ORDINALITY AS q(order_id, after, position)
             JOIN LATERAL (SELECT {ORDER_COLUMNS} FROM orders
                           WHERE orders.order_id = q.order_id) o ON true
             LEFT JOIN LATERAL (SELECT {CHANGE_COLUMNS} FROM order_status_history c
                                WHERE c.order_id = q.order_id AND c.version > q.after) h ON true
             ORDER BY q.position, h.change_version"
        ))
        .bind(&ids)
        .bind(&afters)
        .fetch_all(&self.pool)
        .await?;
        let mut found: Vec<Option<Result<History, OrderError>>> =
            asked.iter().map(|_| None).collect();
        for row in &rows {
            let position: i64 = row.try_get("position")?;
            let i = usize::try_from(position - 1).expect("ordinality counts from 1");
            let answer = found[i]
                .get_or_insert_with(|| record_from_row(row).map(|record| (record, Vec::new())));
            if let Ok(history) = answer
                && let Err(e) = add_change(asked[i].0, history, row)
            {
                *answer = Err(e);
            }
        }
        Ok(found
            .into_iter()
            .zip(asked)
            .map(|(answer, (order_id, _))| answer.unwrap_or(Err(OrderError::NotFound(*order_id))))
            .collect())
    }

    /// A customer's orders, newest first, starting after `cursor`, at most `limit`.
    #[tracing::instrument(skip_all, fields(%customer_id))]
    pub async fn list(
        &self,
        customer_id: &CustomerId,
        cursor: Option<Cursor>,
        limit: i64,
    ) -> Result<Vec<OrderRecord>, OrderError> {
        let rows = match cursor {
            None => sqlx::query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE customer_id = $1 ORDER BY created_at DESC, order_id DESC LIMIT $2"))
                .bind(customer_id.as_str())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
            Some((at, id)) => sqlx::query(&format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE customer_id = $1 AND (created_at, order_id) < ($2, $3)
                 ORDER BY created_at DESC, order_id DESC LIMIT $4"
            ))
            .bind(customer_id.as_str())
            .bind(at)
            .bind(id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?,
        };
        rows.iter().map(record_from_row).collect()
    }

    /// What the order service knows of `order` before placing it, in one statement: whether
    /// its idempotency key placed an order already, which of its SKUs the catalogue lists
    /// (`record_catalogues`) and its customer's standing, if the directory lists the customer
    /// (`record_customer`).
    #[tracing::instrument(skip_all, fields(lines = order.items.len()))]
    pub async fn admission(&self, order: &NewOrder) -> Result<Admission, OrderError> {
        let skus: Vec<&str> = order.items.iter().map(|line| line.sku.as_str()).collect();
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM orders WHERE customer_id = $2 AND idempotency_key = $3)
                        AS placed,
                    ARRAY(SELECT sku FROM catalogue WHERE sku = ANY($1)) AS known,
                    c.blocked, c.reason
             FROM (SELECT 1) one LEFT JOIN customers c ON c.customer_id = $2",
        )
        .bind(&skus)
        .bind(order.customer_id.as_str())
        .bind(order.idempotency_key.as_str())
        .fetch_one(&self.pool)
        .await?;
        admission_from_row(order, &row)
    }

    /// What the order service knows of each of `orders` before placing it, as
    /// [`Store::admission`] says it, in the order given and in one statement: the
    /// [`crate::Placer`] reads the orders it places together so. One order alone is read with
    /// [`Store::admission`]: PostgreSQL plans that statement once per connection, while it
    /// plans this one, over arrays, afresh at every call (about 0.1 ms; docs/performance.md,
    /// section 41), which only a read of two orders or more pays for.
    #[tracing::instrument(skip_all, fields(orders = orders.len()))]
    pub async fn admission_all(&self, orders: &[&NewOrder]) -> Result<Vec<Admission>, OrderError> {
        if let [order] = orders {
            return Ok(vec![self.admission(order).await?]);
        }
        let skus: Vec<&str> = orders
            .iter()
            .flat_map(|order| order.items.iter().map(|line| line.sku.as_str()))
            .collect();
        let customers: Vec<&str> = orders.iter().map(|o| o.customer_id.as_str()).collect();
        let keys: Vec<&str> = orders.iter().map(|o| o.idempotency_key.as_str()).collect();
        // `known` is the catalogue's entries among every SKU of `orders`, the same in each row
        // (an uncorrelated subquery, read once); each order keeps its own of them below.
        let rows = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM orders o
                            WHERE o.customer_id = n.customer_id
                              AND o.idempotency_key = n.idempotency_key) AS placed,
                    ARRAY(SELECT sku FROM catalogue WHERE sku = ANY($1)) AS known,
                    c.blocked, c.reason
             FROM UNNEST($2::text[], $3::text[]) WITH ORDINALITY
                  AS n(customer_id, idempotency_key, position)
             LEFT JOIN customers c ON c.customer_id = n.customer_id
             ORDER BY n.position",
        )
        .bind(&skus)
        .bind(&customers)
        .bind(&keys)
        .fetch_all(&self.pool)
        .await?;
        assert_eq!(rows.len(), orders.len(), "one row per order");
        orders
            .iter()
            .zip(&rows)
            .map(|(order, row)| admission_from_row(order, row))
            .collect()
    }
}

/// `order`'s [`Admission`] from a row of [`Store::admission`] or [`Store::admission_all`]:
/// `placed`, `known` (the catalogue's entries among the SKUs asked about), `blocked` and
/// `reason` (NULL when the directory does not list the customer).
fn admission_from_row(
    order: &NewOrder,
    row: &sqlx::postgres::PgRow,
) -> Result<Admission, OrderError> {
    let known: Vec<String> = row.try_get("known")?;
    let standing = match row.try_get::<Option<bool>, _>("blocked")? {
        None => None,
        Some(false) => Some(Standing::Active),
        // A table constraint: a blocked row has its reason.
        Some(true) => Some(Standing::Blocked {
            reason: row
                .try_get::<Option<String>, _>("reason")?
                .unwrap_or_default(),
        }),
    };
    Ok(Admission {
        placed: row.try_get("placed")?,
        // Each stored SKU was validated when its entry was recorded.
        known_skus: order
            .items
            .iter()
            .filter(|line| known.iter().any(|sku| sku == line.sku.as_str()))
            .map(|line| line.sku.clone())
            .collect(),
        standing,
    })
}

/// What the order service knows of a new order before placing it ([`Store::admission`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Whether the order's idempotency key placed an order already: a retry is answered with
    /// that order (or refused as a conflict), whatever the read models say now.
    pub placed: bool,
    /// The order's SKUs the catalogue lists.
    pub known_skus: HashSet<Sku>,
    /// The customer's standing, if the directory lists the customer.
    pub standing: Option<Standing>,
}

impl Admission {
    /// Lets any retry of a placed order through to [`Store::place`], which answers it; judges
    /// a new one with [`Admission::check_new`].
    pub fn check(&self, order: &NewOrder) -> Result<(), OrderError> {
        if self.placed {
            return Ok(());
        }
        self.check_new(order)
    }

    /// Refuses an order of a blocked customer, then one with a SKU the catalogue does not list.
    pub fn check_new(&self, order: &NewOrder) -> Result<(), OrderError> {
        check_standing(&order.customer_id, self.standing.as_ref())?;
        check_known(order, &self.known_skus)?;
        Ok(())
    }
}

/// Keeps `entry`, published at `occurred_at` as event `event_id`, as its customer's
/// standing unless a newer entry is kept already, by (time, event id; event ids are UUIDv7,
/// so later ones sort later): a redriven dead letter, or an entry that arrived late, never
/// brings back an older standing.
#[tracing::instrument(skip_all, fields(customer_id = %entry.customer_id))]
pub async fn record_customer(
    tx: &mut Transaction<'_, Postgres>,
    entry: &CustomerEntry,
    occurred_at: DateTime<Utc>,
    event_id: uuid::Uuid,
) -> Result<(), OrderError> {
    let reason = match &entry.standing {
        Standing::Active => None,
        Standing::Blocked { reason } => Some(reason.as_str()),
    };
    sqlx::query(
        "INSERT INTO customers (customer_id, blocked, reason, occurred_at, event_id)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (customer_id) DO UPDATE
             SET blocked = EXCLUDED.blocked, reason = EXCLUDED.reason,
                 occurred_at = EXCLUDED.occurred_at, event_id = EXCLUDED.event_id,
                 updated_at = now()
             WHERE (customers.occurred_at, customers.event_id)
                 < (EXCLUDED.occurred_at, EXCLUDED.event_id)",
    )
    .bind(entry.customer_id.as_str())
    .bind(reason.is_some())
    .bind(reason)
    .bind(occurred_at)
    .bind(event_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Keeps each of `entries` as its SKU's catalogue entry unless a newer one (a higher
/// revision) is kept already: a redelivered or replayed entry, or one read late, changes
/// nothing. One statement: of a SKU's entries only the newest revision (of two with one
/// revision, the first) can be kept, so only it is written, and the SKUs in order.
#[tracing::instrument(skip_all, fields(entries = entries.len()))]
pub async fn record_catalogues(
    tx: &mut Transaction<'_, Postgres>,
    entries: &[&CatalogueEntry],
) -> Result<(), OrderError> {
    let mut newest = std::collections::BTreeMap::<&str, &CatalogueEntry>::new();
    for entry in entries {
        let kept = newest.entry(entry.sku.as_str()).or_insert(entry);
        if entry.revision > kept.revision {
            *kept = entry;
        }
    }
    let newest: Vec<&CatalogueEntry> = newest.into_values().collect();
    sqlx::query(
        "INSERT INTO catalogue (sku, available, revision)
         SELECT * FROM UNNEST($1::text[], $2::int4[], $3::int8[]) ORDER BY 1
         ON CONFLICT (sku) DO UPDATE
             SET available = EXCLUDED.available, revision = EXCLUDED.revision, updated_at = now()
             WHERE catalogue.revision < EXCLUDED.revision",
    )
    .bind(column(&newest, |e| e.sku.as_str()))
    .bind(column(&newest, |e| e.available as i32))
    .bind(column(&newest, |e| e.revision))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An order as [`apply_all`] moves it: read once, then changed in memory by each outcome.
struct Moving {
    customer_id: String,
    status: OrderStatus,
    version: i64,
    created_at: DateTime<Utc>,
    /// The newest reason an outcome gave, if any gave one.
    reason: Option<String>,
    moved: bool,
}

/// Applies `outcomes` to their orders inside the consumer's transaction, in order, through
/// the state machine, and returns the OrderStatusChanged events each causes. It does what
/// applying them one at a time does, in three statements however many there are: every
/// order they name is read once, locked in order-id order; the state machine runs in
/// memory, so a later outcome of an order sees what the earlier ones made of it; then every
/// transition's history row and every moved order's newest status are written in one
/// statement. The missing items of an OUT_OF_STOCK outcome are recorded with the order (a
/// statement each; rare); each change is counted in `counted`. An outcome for an unknown
/// order or one its order cannot take fails them all.
#[tracing::instrument(skip_all, fields(outcomes = outcomes.len()))]
pub async fn apply_all(
    tx: &mut Transaction<'_, Postgres>,
    outcomes: &[&OrderOutcome],
    counted: &TransitionMetrics,
) -> Result<Vec<Vec<Event>>, OrderError> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<uuid::Uuid> = outcomes.iter().map(|o| o.order_id.as_uuid()).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = sqlx::query(
        "SELECT order_id, customer_id, status, version, created_at FROM orders
         WHERE order_id = ANY($1) ORDER BY order_id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut orders = std::collections::BTreeMap::new();
    for row in &rows {
        let order_id = OrderId::from(row.try_get::<uuid::Uuid, _>("order_id")?);
        let moving = Moving {
            customer_id: row.try_get("customer_id")?,
            status: stored_status(order_id, row.try_get("status")?)?,
            version: row.try_get("version")?,
            created_at: row.try_get("created_at")?,
            reason: None,
            moved: false,
        };
        orders.insert(order_id.as_uuid(), moving);
    }

    let now = Utc::now();
    // Every transition's history row: order, version, status, reason.
    let mut history: Vec<(uuid::Uuid, i64, &'static str, Option<String>)> = Vec::new();
    let mut caused = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        let order_id = outcome.order_id;
        let order = orders
            .get_mut(&order_id.as_uuid())
            .ok_or(OrderError::NotFound(order_id))?;
        let transitions: Vec<Transition> = orderflow_domain::apply(order.status, &outcome.input)
            .map_err(|source| OrderError::Impossible { order_id, source })?;
        if !outcome.missing.is_empty() {
            let missing: Vec<ev::MissingItem> = outcome.missing.iter().map(Into::into).collect();
            sqlx::query("UPDATE orders SET missing_items = $2 WHERE order_id = $1")
                .bind(order_id.as_uuid())
                .bind(serde_json::to_value(&missing).expect("missing items serialize"))
                .execute(&mut **tx)
                .await?;
        }
        let mut events = Vec::with_capacity(transitions.len());
        for t in transitions {
            order.version += 1;
            events.push(status_event(
                order_id,
                &order.customer_id,
                order.version,
                t.to,
                t.reason.clone(),
                now,
            ));
            tracing::info!(%order_id, from = %order.status, to = %t.to, version = order.version, "order status changed");
            counted.record(
                order.status,
                t.to,
                (now - order.created_at).as_seconds_f64(),
            );
            order.status = t.to;
            order.moved = true;
            // As `status_reason = COALESCE(reason, status_reason)` would keep it, outcome
            // by outcome: the last transition's reason, where it has one.
            if t.reason.is_some() {
                order.reason.clone_from(&t.reason);
            }
            history.push((order_id.as_uuid(), order.version, t.to.as_str(), t.reason));
        }
        caused.push(events);
    }
    if history.is_empty() {
        return Ok(caused);
    }
    // Each moved order's newest status, in order-id order.
    let moved: Vec<(&uuid::Uuid, &Moving)> = orders.iter().filter(|(_, o)| o.moved).collect();
    sqlx::query(
        "WITH history AS (
             INSERT INTO order_status_history (order_id, version, status, reason, occurred_at)
             SELECT order_id, version, status, reason, $1
             FROM UNNEST($2::uuid[], $3::int8[], $4::text[], $5::text[])
                  AS h(order_id, version, status, reason))
         UPDATE orders
         SET status = u.status, version = u.version,
             status_reason = COALESCE(u.reason, orders.status_reason), updated_at = $1
         FROM UNNEST($6::uuid[], $7::text[], $8::int8[], $9::text[])
              AS u(order_id, status, version, reason)
         WHERE orders.order_id = u.order_id",
    )
    .bind(now)
    .bind(column(&history, |(order_id, ..)| *order_id))
    .bind(column(&history, |(_, version, ..)| *version))
    .bind(column(&history, |(_, _, status, _)| *status))
    .bind(column(&history, |(.., reason)| reason.as_deref()))
    .bind(column(&moved, |(order_id, _)| **order_id))
    .bind(column(&moved, |(_, o)| o.status.as_str()))
    .bind(column(&moved, |(_, o)| o.version))
    .bind(column(&moved, |(_, o)| o.reason.as_deref()))
    .execute(&mut **tx)
    .await?;
    Ok(caused)
}
