//! The pure core of orderflow: value types that are valid by construction, the order state
//! machine, the stock rules, and the outcomes services report to each other. Nothing here
//! performs I/O or knows a wire format (the proto and events crates convert into these types),
//! so all of it is unit-tested directly.

pub mod catalogue;
pub mod customers;
pub mod outcome;
pub mod state;
pub mod stock;
pub mod values;

pub use catalogue::{CatalogueEntry, check_known};
pub use customers::{Blocked, CustomerEntry, NO_REASON, Standing, check_standing};
pub use outcome::{OrderOutcome, PaymentOutcome, PaymentResult};
pub use state::{OrderInput, OrderStatus, Transition, TransitionError, UnknownStatus, apply};
pub use stock::{
    MAX_STOCK, MissingItem, RequestedUnits, StockDecision, StockDelta, StockLevel, StockRequest,
    StockSettlement, describe_missing, settle,
};
pub use values::{
    Currency, CustomerId, IdempotencyKey, Money, NewOrder, OrderId, OrderLine, PaymentMethod,
    PlacedOrder, Quantity, Sku, ValidationError,
};
