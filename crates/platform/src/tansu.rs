//! A repair for the local broker's storage. tansu 0.6.0's sqlite schema has no index on
//! `header (topition, offset_id)`, and it fetches each record's headers with a query on those
//! columns: every fetched record scans the whole header table. Every orderflow event carries
//! a `traceparent` header, so fetches slow down as the broker fills (6 ms per record at 30k
//! stored messages), until one fetch outlasts the consumer's session and the consumer group
//! rebalances without end. The index makes the lookup a search (docs/performance.md).
//!
//! Only for the local tansu broker (`orderflow up`, the tests); Apache Kafka and other
//! brokers need nothing of the kind.

use std::path::Path;
use std::process::Command;

/// The statement that adds the missing index; safe to run again.
pub const HEADER_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS orderflow_header_record ON header (topition, offset_id)";

/// Adds the index to the tansu sqlite database at `db` (the broker must have created its
/// tables, i.e. be listening). Uses the `sqlite3` command (scripts/bootstrap.sh installs it),
/// waiting up to 10 s for the broker's own writes.
pub fn index_headers(db: &Path) -> anyhow::Result<()> {
    let output = Command::new("sqlite3")
        .arg("-cmd")
        .arg(".timeout 10000")
        .arg(db)
        .arg(HEADER_INDEX)
        .output()
        .map_err(|e| {
            anyhow::anyhow!("cannot run sqlite3 (scripts/bootstrap.sh installs it): {e}")
        })?;
    anyhow::ensure!(
        output.status.success(),
        "cannot index the broker's headers in {}: {}",
        db.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}
