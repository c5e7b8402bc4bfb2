//! Confluent's compatibility levels, applied to a new schema and a subject's earlier versions.

use std::fmt;
use std::str::FromStr;

use crate::compat::{Incompatibility, incompatibilities};
use crate::schema::AvroSchema;

/// A subject's compatibility level, with Confluent Schema Registry's semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompatibilityLevel {
    /// No check.
    None,
    /// The new schema can read data written with the latest version.
    Backward,
    /// The new schema can read data written with every earlier version.
    BackwardTransitive,
    /// The latest version can read data written with the new schema.
    Forward,
    /// Every earlier version can read data written with the new schema.
    ForwardTransitive,
    /// Backward and forward, against the latest version.
    Full,
    /// Backward and forward, against every earlier version.
    FullTransitive,
}

impl CompatibilityLevel {
    pub const ALL: [CompatibilityLevel; 7] = [
        CompatibilityLevel::None,
        CompatibilityLevel::Backward,
        CompatibilityLevel::BackwardTransitive,
        CompatibilityLevel::Forward,
        CompatibilityLevel::ForwardTransitive,
        CompatibilityLevel::Full,
        CompatibilityLevel::FullTransitive,
    ];

    /// The level's name as the REST API spells it, e.g. `FULL_TRANSITIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityLevel::None => "NONE",
            CompatibilityLevel::Backward => "BACKWARD",
            CompatibilityLevel::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityLevel::Forward => "FORWARD",
            CompatibilityLevel::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityLevel::Full => "FULL",
            CompatibilityLevel::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether the new schema must read older data.
    pub fn checks_backward(self) -> bool {
        use CompatibilityLevel::*;
        matches!(self, Backward | BackwardTransitive | Full | FullTransitive)
    }

    /// Whether older schemas must read the new schema's data.
    pub fn checks_forward(self) -> bool {
        use CompatibilityLevel::*;
        matches!(self, Forward | ForwardTransitive | Full | FullTransitive)
    }

    /// Whether every earlier version is checked, rather than only the latest.
    pub fn is_transitive(self) -> bool {
        use CompatibilityLevel::*;
        matches!(
            self,
            BackwardTransitive | ForwardTransitive | FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no compatibility level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid compatibility level '{0}': expected one of NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE"
)]
pub struct InvalidLevel(pub String);

impl FromStr for CompatibilityLevel {
    type Err = InvalidLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CompatibilityLevel::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| InvalidLevel(s.to_owned()))
    }
}

/// Which way data would fail to flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The new schema cannot read data written with the earlier version.
    Backward,
    /// The earlier version cannot read data written with the new schema.
    Forward,
}

/// One incompatibility between the new schema and one earlier version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The earlier version involved.
    pub version: u32,
    pub direction: Direction,
    pub incompatibility: Incompatibility,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.direction {
            Direction::Backward => write!(
                f,
                "the new schema cannot read data written with version {}: {}",
                self.version, self.incompatibility
            ),
            Direction::Forward => write!(
                f,
                "version {} cannot read data written with the new schema: {}",
                self.version, self.incompatibility
            ),
        }
    }
}

/// Checks `new` against a subject's earlier versions (`(version, schema)`, oldest first) at
/// `level`; returns every violation, none when the new schema is acceptable.
pub fn check_level(
    level: CompatibilityLevel,
    new: &AvroSchema,
    earlier: &[(u32, &AvroSchema)],
) -> Vec<Violation> {
    let against: &[(u32, &AvroSchema)] = if level.is_transitive() {
        earlier
    } else {
        earlier.last().map(std::slice::from_ref).unwrap_or(&[])
    };
    let mut violations = Vec::new();
    for &(version, old) in against {
        if level.checks_backward() {
            violations.extend(
                incompatibilities(new, old)
                    .into_iter()
                    .map(|incompatibility| Violation {
                        version,
                        direction: Direction::Backward,
                        incompatibility,
                    }),
            );
        }
        if level.checks_forward() {
            violations.extend(
                incompatibilities(old, new)
                    .into_iter()
                    .map(|incompatibility| Violation {
                        version,
                        direction: Direction::Forward,
                        incompatibility,
                    }),
            );
        }
    }
    violations
}
