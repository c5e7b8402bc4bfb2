//! The pure core of orderflow: value types that are valid by construction, and the order
//! state machine. Nothing here performs I/O, so all of it is unit-tested directly.

pub mod state;
pub mod values;

pub use state::{OrderInput, OrderStatus, Transition, TransitionError, apply};
pub use values::{
    Currency, CustomerId, IdempotencyKey, Money, NewOrder, OrderId, OrderLine, PaymentMethod,
    Quantity, Sku, ValidationError, nest,
};
