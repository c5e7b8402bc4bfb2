//! The platform's tables (`outbox`, `outbox_quarantine`, `processed_events`), defined once and
//! migrated into every event-driven service's database together with the service's own
//! tables.

use std::borrow::Cow;

use sqlx::migrate::Migrator;

/// The platform's migrations, as written in `migrations/platform/`.
static PLATFORM: Migrator = sqlx::migrate!("../../migrations/platform");

/// Platform migration `n` is recorded in a service's database as version
/// `PLATFORM_VERSION_BASE + n`, so it never collides with the service's own versions, which
/// stay below this.
pub const PLATFORM_VERSION_BASE: i64 = 1_000_000;

/// One migrator for a service's database: the platform's migrations and the service's own
/// (`service`, usually `sqlx::migrate!("../../migrations/<service>")`), sorted by version.
/// The platform's are described as `platform <description>` in `_sqlx_migrations`.
///
/// # Panics
///
/// If a service migration's version is `PLATFORM_VERSION_BASE` or above: a numbering mistake
/// in the service's migrations, caught by the first test that migrates its database.
pub fn with_platform(service: Migrator) -> Migrator {
    let mut migrations = service.migrations.to_vec();
    if let Some(clash) = migrations
        .iter()
        .find(|m| m.version >= PLATFORM_VERSION_BASE)
    {
        panic!(
            "service migration {} ({}) is in the platform's version range (from {PLATFORM_VERSION_BASE})",
            clash.version, clash.description
        );
    }
    migrations.extend(PLATFORM.migrations.iter().map(|m| {
        let mut m = m.clone();
        m.version += PLATFORM_VERSION_BASE;
        m.description = Cow::Owned(format!("platform {}", m.description));
        m
    }));
    migrations.sort_by_key(|m| m.version);
    Migrator {
        migrations: Cow::Owned(migrations),
        // The service's own settings (locking, transactions) apply to the whole set.
        ..service
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_gets_its_own_migrations_and_the_platform_s_sorted_without_clashes() {
        let order = with_platform(sqlx::migrate!("../../migrations/order"));
        let versions: Vec<i64> = order.iter().map(|m| m.version).collect();
        let mut sorted = versions.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(versions, sorted, "versions are sorted and unique");
        assert_eq!(
            versions.first(),
            Some(&1),
            "the order service's own init comes first"
        );
        let platform: Vec<&str> = order
            .iter()
            .filter(|m| m.version > PLATFORM_VERSION_BASE)
            .map(|m| m.description.as_ref())
            .collect();
        assert_eq!(
            platform,
            [
                "platform outbox and processed events",
                "platform outbox quarantine"
            ]
        );
        assert!(
            order.iter().any(|m| m.sql.contains("CREATE TABLE outbox")),
            "the outbox is created"
        );
    }

    #[test]
    fn only_the_platform_defines_the_outbox_and_dedup_tables() {
        for service in [
            sqlx::migrate!("../../migrations/order"),
            sqlx::migrate!("../../migrations/payment"),
            sqlx::migrate!("../../migrations/inventory"),
        ] {
            for m in service.iter() {
                for table in ["outbox", "processed_events"] {
                    assert!(
                        !m.sql.contains(&format!("CREATE TABLE {table} ")),
                        "migration {} ({}) defines {table} again",
                        m.version,
                        m.description
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "in the platform's version range")]
    fn a_service_version_in_the_platform_s_range_is_refused() {
        let mut clashing = sqlx::migrate!("../../migrations/order");
        let mut migrations = clashing.migrations.to_vec();
        migrations[0].version = PLATFORM_VERSION_BASE + 1;
        clashing.migrations = Cow::Owned(migrations);
        with_platform(clashing);
    }
}
