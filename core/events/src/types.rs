//! Rust types of the Avro records. Field names, order and types follow the `.avsc` files;
//! ids are strings (UUID text) and timestamps are epoch milliseconds, as on the wire, and
//! are validated when converted into domain types.

use serde::{Deserialize, Serialize};

use crate::EventKind;

/// An amount in minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: String,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i32,
    pub unit_price: Money,
}

/// `orders`: an order was accepted as PENDING.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub event_id: String,
    pub order_id: String,
    pub occurred_at: i64,
    pub customer_id: String,
    pub items: Vec<OrderLine>,
    pub total: Money,
    pub payment_method: String,
}

/// Symbols of `orderflow.events.OrderStatus`, in schema order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Unknown,
    Pending,
    Paid,
    Failed,
    Completed,
    OutOfStock,
    Refunded,
}

/// `order-status`: an order moved to a new status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderStatusChanged {
    pub event_id: String,
    pub order_id: String,
    pub occurred_at: i64,
    pub customer_id: String,
    pub version: i64,
    pub status: OrderStatus,
    pub reason: Option<String>,
}

/// Symbols of `orderflow.events.PaymentStatus`, in schema order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    Unknown,
    Paid,
    Failed,
}

/// `payments`: an order was charged, or could not be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentProcessed {
    pub event_id: String,
    pub order_id: String,
    pub occurred_at: i64,
    pub payment_id: String,
    pub status: PaymentStatus,
    pub amount: Money,
    pub items: Vec<OrderLine>,
    pub failure_reason: Option<String>,
    /// Added in v2; absent (None) in events written with v1.
    pub provider_reference: Option<String>,
}

/// `payments`: a charge was refunded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub event_id: String,
    pub order_id: String,
    pub occurred_at: i64,
    pub payment_id: String,
    pub refund_id: String,
    pub amount: Money,
    pub reason: String,
}

/// Symbols of `orderflow.events.InventoryStatus`, in schema order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InventoryStatus {
    Unknown,
    Confirmed,
    OutOfStock,
}

/// A SKU and a number of units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLine {
    pub sku: String,
    pub quantity: i32,
}

/// A line that could not be filled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingItem {
    pub sku: String,
    pub requested: i32,
    pub available: i32,
}

/// `inventory`: every line of a paid order was deducted, or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryUpdated {
    pub event_id: String,
    pub order_id: String,
    pub occurred_at: i64,
    pub status: InventoryStatus,
    pub items: Vec<StockLine>,
    pub missing: Vec<MissingItem>,
}

/// `catalogue` (compacted, keyed by SKU): a SKU appeared or its stock level changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogueItemChanged {
    pub event_id: String,
    pub occurred_at: i64,
    pub sku: String,
    pub available: i32,
    pub revision: i64,
}

/// Symbols of `orderflow.events.CustomerStatus`, in schema order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CustomerStatus {
    Unknown,
    Active,
    Blocked,
}

/// `customers` (compacted, keyed by customer id): a customer's standing in the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerStatusChanged {
    pub event_id: String,
    pub occurred_at: i64,
    pub customer_id: String,
    pub status: CustomerStatus,
    pub reason: Option<String>,
}

/// Any event. Serialized as JSON (tagged) in the outbox; as Avro on Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "event")]
pub enum Event {
    OrderCreated(OrderCreated),
    OrderStatusChanged(OrderStatusChanged),
    PaymentProcessed(PaymentProcessed),
    PaymentRefunded(PaymentRefunded),
    InventoryUpdated(InventoryUpdated),
    CatalogueItemChanged(CatalogueItemChanged),
    CustomerStatusChanged(CustomerStatusChanged),
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::OrderCreated(_) => EventKind::OrderCreated,
            Event::OrderStatusChanged(_) => EventKind::OrderStatusChanged,
            Event::PaymentProcessed(_) => EventKind::PaymentProcessed,
            Event::PaymentRefunded(_) => EventKind::PaymentRefunded,
            Event::InventoryUpdated(_) => EventKind::InventoryUpdated,
            Event::CatalogueItemChanged(_) => EventKind::CatalogueItemChanged,
            Event::CustomerStatusChanged(_) => EventKind::CustomerStatusChanged,
        }
    }

    pub fn event_id(&self) -> &str {
        match self {
            Event::OrderCreated(e) => &e.event_id,
            Event::OrderStatusChanged(e) => &e.event_id,
            Event::PaymentProcessed(e) => &e.event_id,
            Event::PaymentRefunded(e) => &e.event_id,
            Event::InventoryUpdated(e) => &e.event_id,
            Event::CatalogueItemChanged(e) => &e.event_id,
            Event::CustomerStatusChanged(e) => &e.event_id,
        }
    }

    /// When the event happened, in epoch milliseconds.
    pub fn occurred_at(&self) -> i64 {
        match self {
            Event::OrderCreated(e) => e.occurred_at,
            Event::OrderStatusChanged(e) => e.occurred_at,
            Event::PaymentProcessed(e) => e.occurred_at,
            Event::PaymentRefunded(e) => e.occurred_at,
            Event::InventoryUpdated(e) => e.occurred_at,
            Event::CatalogueItemChanged(e) => e.occurred_at,
            Event::CustomerStatusChanged(e) => e.occurred_at,
        }
    }

    /// The order the event is about, for the events of an order's flow.
    pub fn order_id(&self) -> Option<&str> {
        match self {
            Event::OrderCreated(e) => Some(&e.order_id),
            Event::OrderStatusChanged(e) => Some(&e.order_id),
            Event::PaymentProcessed(e) => Some(&e.order_id),
            Event::PaymentRefunded(e) => Some(&e.order_id),
            Event::InventoryUpdated(e) => Some(&e.order_id),
            Event::CatalogueItemChanged(_) | Event::CustomerStatusChanged(_) => None,
        }
    }

    /// The event's Kafka key: its order id (so an order's events keep their order), or for a
    /// catalogue entry its SKU and for a directory entry its customer (so compaction keeps
    /// the newest entry of each).
    pub fn key(&self) -> &str {
        match self {
            Event::CatalogueItemChanged(e) => &e.sku,
            Event::CustomerStatusChanged(e) => &e.customer_id,
            other => other
                .order_id()
                .expect("every other event belongs to an order"),
        }
    }
}

/// A fresh event id.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Now, in epoch milliseconds.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

macro_rules! into_event {
    ($($variant:ident),*) => {$(
        impl From<$variant> for Event {
            fn from(e: $variant) -> Event {
                Event::$variant(e)
            }
        }
    )*};
}
into_event!(
    OrderCreated,
    OrderStatusChanged,
    PaymentProcessed,
    PaymentRefunded,
    InventoryUpdated,
    CatalogueItemChanged,
    CustomerStatusChanged
);
