//! The events services exchange over Kafka. The Rust types follow the Avro schema files under
//! `schemas/` (the latest version of each record); a test checks every type against its file,
//! so a schema change that the code does not follow fails the build's tests. [`convert`] turns
//! consumed events into domain types and domain values into events.

mod codec;
pub mod convert;
mod types;

pub use codec::{
    CodecError, EventCodec, FixedResolver, RegistryAccess, RegistryResolver, Resolving,
    SchemaResolver, WriterSchema, decode_with_writer, encode_plain,
};
pub use types::*;

use apache_avro::Schema;
use std::sync::LazyLock;

/// The topics events travel on. Names are configurable so tests can use random ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub orders: String,
    pub order_status: String,
    pub payments: String,
    pub inventory: String,
    /// Compacted: the newest [`CatalogueItemChanged`] of each SKU.
    pub catalogue: String,
    /// Compacted: the newest [`CustomerStatusChanged`] of each customer.
    pub customers: String,
}

impl Topics {
    /// The production names, optionally prefixed (`<prefix>orders`, ...).
    pub fn with_prefix(prefix: &str) -> Self {
        Topics {
            orders: format!("{prefix}orders"),
            order_status: format!("{prefix}order-status"),
            payments: format!("{prefix}payments"),
            inventory: format!("{prefix}inventory"),
            catalogue: format!("{prefix}catalogue"),
            customers: format!("{prefix}customers"),
        }
    }

    /// The topic that carries events of `kind`.
    pub fn for_kind(&self, kind: EventKind) -> &str {
        match kind {
            EventKind::OrderCreated => &self.orders,
            EventKind::OrderStatusChanged => &self.order_status,
            EventKind::PaymentProcessed | EventKind::PaymentRefunded => &self.payments,
            EventKind::InventoryUpdated => &self.inventory,
            EventKind::CatalogueItemChanged => &self.catalogue,
            EventKind::CustomerStatusChanged => &self.customers,
        }
    }

    /// Every event topic.
    pub fn all(&self) -> [&str; 6] {
        [
            &self.orders,
            &self.order_status,
            &self.payments,
            &self.inventory,
            &self.catalogue,
            &self.customers,
        ]
    }

    /// The topics of orders' flow: every event on them belongs to one order (its key).
    pub fn order_flow(&self) -> [&str; 4] {
        [
            &self.orders,
            &self.order_status,
            &self.payments,
            &self.inventory,
        ]
    }

    /// The compacted topics: a reader keeps the newest record of each key.
    pub fn compacted(&self) -> [&str; 2] {
        [&self.catalogue, &self.customers]
    }
}

impl Default for Topics {
    fn default() -> Self {
        Topics::with_prefix("")
    }
}

/// Which record an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    OrderCreated,
    OrderStatusChanged,
    PaymentProcessed,
    PaymentRefunded,
    InventoryUpdated,
    CatalogueItemChanged,
    CustomerStatusChanged,
}

/// The schema file each Rust type follows: the newest version of each record.
const SCHEMA_FILES: [(EventKind, &str, &str); 7] = [
    (
        EventKind::OrderCreated,
        "orders/OrderCreated/v1.avsc",
        include_str!("../../../schemas/orders/OrderCreated/v1.avsc"),
    ),
    (
        EventKind::OrderStatusChanged,
        "order-status/OrderStatusChanged/v1.avsc",
        include_str!("../../../schemas/order-status/OrderStatusChanged/v1.avsc"),
    ),
    (
        EventKind::PaymentProcessed,
        "payments/PaymentProcessed/v2.avsc",
        include_str!("../../../schemas/payments/PaymentProcessed/v2.avsc"),
    ),
    (
        EventKind::PaymentRefunded,
        "payments/PaymentRefunded/v1.avsc",
        include_str!("../../../schemas/payments/PaymentRefunded/v1.avsc"),
    ),
    (
        EventKind::InventoryUpdated,
        "inventory/InventoryUpdated/v1.avsc",
        include_str!("../../../schemas/inventory/InventoryUpdated/v1.avsc"),
    ),
    (
        EventKind::CatalogueItemChanged,
        "catalogue/CatalogueItemChanged/v1.avsc",
        include_str!("../../../schemas/catalogue/CatalogueItemChanged/v1.avsc"),
    ),
    (
        EventKind::CustomerStatusChanged,
        "customers/CustomerStatusChanged/v1.avsc",
        include_str!("../../../schemas/customers/CustomerStatusChanged/v1.avsc"),
    ),
];

static PARSED: LazyLock<Vec<Schema>> = LazyLock::new(|| {
    SCHEMA_FILES
        .iter()
        .map(|(_, path, text)| {
            Schema::parse_str(text).unwrap_or_else(|e| panic!("schemas/{path} is invalid: {e}"))
        })
        .collect()
});

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::OrderCreated,
        EventKind::OrderStatusChanged,
        EventKind::PaymentProcessed,
        EventKind::PaymentRefunded,
        EventKind::InventoryUpdated,
        EventKind::CatalogueItemChanged,
        EventKind::CustomerStatusChanged,
    ];

    fn index(self) -> usize {
        EventKind::ALL
            .iter()
            .position(|k| *k == self)
            .expect("listed")
    }

    /// Full Avro name, e.g. `orderflow.events.OrderCreated`.
    pub fn full_name(self) -> &'static str {
        match self {
            EventKind::OrderCreated => "orderflow.events.OrderCreated",
            EventKind::OrderStatusChanged => "orderflow.events.OrderStatusChanged",
            EventKind::PaymentProcessed => "orderflow.events.PaymentProcessed",
            EventKind::PaymentRefunded => "orderflow.events.PaymentRefunded",
            EventKind::InventoryUpdated => "orderflow.events.InventoryUpdated",
            EventKind::CatalogueItemChanged => "orderflow.events.CatalogueItemChanged",
            EventKind::CustomerStatusChanged => "orderflow.events.CustomerStatusChanged",
        }
    }

    pub fn from_full_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.full_name() == name)
    }

    /// The reader (and writer) schema this build uses for the record.
    pub fn schema(self) -> &'static Schema {
        &PARSED[self.index()]
    }

    /// The schema text as in the file, registered with the registry on first use.
    pub fn schema_text(self) -> &'static str {
        SCHEMA_FILES[self.index()].2
    }

    /// Path of the schema file under `schemas/`.
    pub fn schema_path(self) -> &'static str {
        SCHEMA_FILES[self.index()].1
    }

    /// The registry subject under TopicRecordNameStrategy: `<topic>-<record full name>`.
    pub fn subject(self, topics: &Topics) -> String {
        format!("{}-{}", topics.for_kind(self), self.full_name())
    }
}
