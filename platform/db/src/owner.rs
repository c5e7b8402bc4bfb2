//! Each service connects as a role of its own that owns its database and nothing else: not a
//! superuser, unable to create databases or roles, and (CONNECT being revoked from PUBLIC on
//! every service database) unable to even connect to another service's database. What an
//! administrator runs once per service, as `./orderflow up` and the tests do.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

/// A service's database and the role that owns it.
#[derive(Debug, Clone)]
pub struct Owner {
    pub database: String,
    pub role: String,
    /// The role's password (its URL carries it); trust-authenticated servers ignore it.
    pub password: String,
}

impl Owner {
    /// The URL a service connects with: `admin`'s server, as this role, to this database.
    pub fn url(&self, admin: &PgConnectOptions) -> String {
        admin
            .clone()
            .username(&self.role)
            .password(&self.password)
            .database(&self.database)
            .to_url_lossy()
            .to_string()
    }
}

/// Makes `owner.role` (or resets its password and attributes), makes `owner.database` owned by
/// it (or hands an existing one, and every table and sequence in it, over to it), and revokes
/// PUBLIC's rights on the database. Run as a role that may create roles and databases.
pub async fn provision(admin: &PgConnectOptions, owner: &Owner) -> Result<(), sqlx::Error> {
    let role = ident(&owner.role);
    let database = ident(&owner.database);
    let password = literal(&owner.password);
    let mut server = admin.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&owner.role)
            .fetch_one(&mut server)
            .await?;
    let verb = if exists { "ALTER" } else { "CREATE" };
    server
        .execute(
            format!(
                "{verb} ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
                 NOBYPASSRLS PASSWORD {password}"
            )
            .as_str(),
        )
        .await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&owner.database)
            .fetch_one(&mut server)
            .await?;
    if exists {
        server
            .execute(format!("ALTER DATABASE {database} OWNER TO {role}").as_str())
            .await?;
    } else {
        server
            .execute(format!("CREATE DATABASE {database} OWNER {role}").as_str())
            .await?;
    }
    server
        .execute(format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC").as_str())
        .await?;
    server.close().await?;

    // A database made earlier by another role keeps that role's tables: hand them over, so
    // the owner can migrate them.
    let mut inside = admin.clone().database(&owner.database).connect().await?;
    inside
        .execute(format!("ALTER SCHEMA public OWNER TO {role}").as_str())
        .await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
           AND pg_get_userbyid(c.relowner) <> $1",
    )
    .bind(&owner.role)
    .fetch_all(&mut inside)
    .await?;
    for table in tables {
        // Sequences owned by a table's columns follow the table.
        inside
            .execute(format!("ALTER TABLE {table} OWNER TO {role}").as_str())
            .await?;
    }
    inside.close().await
}

/// Drops `role` and `database` (with its connections), as a test's clean-up does.
pub async fn drop_owned(admin: &PgConnectOptions, owner: &Owner) -> Result<(), sqlx::Error> {
    let mut server = admin.clone().database("postgres").connect().await?;
    server
        .execute(
            format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                ident(&owner.database)
            )
            .as_str(),
        )
        .await?;
    server
        .execute(format!("DROP ROLE IF EXISTS {}", ident(&owner.role)).as_str())
        .await?;
    server.close().await
}

/// A quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
