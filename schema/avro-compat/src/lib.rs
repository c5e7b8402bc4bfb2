//! Avro schemas for the registry and the schema gate: a validated model, the normalized form
//! that decides when two texts are the same schema, and the specification's schema-resolution
//! rules with Confluent's compatibility levels on top. Pure: no I/O.

mod compat;
mod level;
mod schema;

pub use compat::{Incompatibility, Rule, can_read, incompatibilities};
pub use level::{CompatibilityLevel, Direction, InvalidLevel, Violation, check_level};
pub use schema::{
    AvroSchema, Field, Logical, Name, NamedKind, NamedType, Node, Primitive, SchemaError,
};

#[cfg(test)]
mod tests;
