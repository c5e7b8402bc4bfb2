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

/// Any event. Serialized as JSON (tagged) in the outbox; as Avro on Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "event")]
pub enum Event {
    OrderCreated(OrderCreated),
    OrderStatusChanged(OrderStatusChanged),
    PaymentProcessed(PaymentProcessed),
    PaymentRefunded(PaymentRefunded),
    InventoryUpdated(InventoryUpdated),
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::OrderCreated(_) => EventKind::OrderCreated,
            Event::OrderStatusChanged(_) => EventKind::OrderStatusChanged,
            Event::PaymentProcessed(_) => EventKind::PaymentProcessed,
            Event::PaymentRefunded(_) => EventKind::PaymentRefunded,
            Event::InventoryUpdated(_) => EventKind::InventoryUpdated,
        }
    }

    pub fn event_id(&self) -> &str {
        match self {
            Event::OrderCreated(e) => &e.event_id,
            Event::OrderStatusChanged(e) => &e.event_id,
            Event::PaymentProcessed(e) => &e.event_id,
            Event::PaymentRefunded(e) => &e.event_id,
            Event::InventoryUpdated(e) => &e.event_id,
        }
    }

    /// The order the event is about; also its Kafka key, for per-order ordering.
    pub fn order_id(&self) -> &str {
        match self {
            Event::OrderCreated(e) => &e.order_id,
            Event::OrderStatusChanged(e) => &e.order_id,
            Event::PaymentProcessed(e) => &e.order_id,
            Event::PaymentRefunded(e) => &e.order_id,
            Event::InventoryUpdated(e) => &e.order_id,
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
    InventoryUpdated
);
