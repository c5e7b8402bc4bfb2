//! `orderflow schema`: the schema-evolution gate CI runs, and the lock of published versions.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum SchemaCommand {
    /// Check every subject's versions against each other at its compatibility level and
    /// against published.lock; with --registry, also register them all into that registry.
    Check(CheckArgs),
    /// Record newly added versions in published.lock (never rewrites a recorded one).
    Lock(DirArgs),
}

#[derive(Args)]
pub struct DirArgs {
    /// The schemas directory (with schemas.toml).
    #[arg(
        long = "schemas-dir",
        env = "ORDERFLOW_SCHEMAS_DIR",
        default_value = "schemas"
    )]
    pub dir: PathBuf,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// A Confluent-compatible registry to register every version into, in order.
    #[arg(long)]
    pub registry: Option<String>,
    /// Credentials for that registry, `user:password`: a user with the admin role, as the
    /// check sets each subject's compatibility level.
    #[arg(
        long = "registry-user-info",
        env = "ORDERFLOW_REGISTRY_USER_INFO",
        hide_env_values = true
    )]
    pub registry_user_info: Option<orderflow_platform::Secret>,
    /// PEM file of the CA that signed an `https://` registry's certificate.
    #[arg(long = "registry-ca-file", env = "ORDERFLOW_REGISTRY_CA_FILE")]
    pub registry_ca_file: Option<std::path::PathBuf>,
}

/// The schemas directory `up` registers: `ORDERFLOW_SCHEMAS_DIR` or `./schemas`.
pub async fn run(command: SchemaCommand) -> anyhow::Result<()> {
    match command {
        SchemaCommand::Check(args) => {
            let report = orderflow_schema_gate::check_offline(&args.dir.dir)?;
            println!("{report}");
            anyhow::ensure!(report.is_ok(), "schema check failed");
            if let Some(url) = args.registry {
                let registry = orderflow_events::RegistryAccess {
                    url: &url,
                    user_info: args.registry_user_info.as_ref().map(|s| s.expose()),
                    ca_file: args.registry_ca_file.as_deref(),
                };
                let report = orderflow_schema_gate::check_online(&args.dir.dir, &registry).await?;
                println!("{report}");
                anyhow::ensure!(report.is_ok(), "registering the schemas in {url} failed");
            }
            Ok(())
        }
        SchemaCommand::Lock(args) => {
            let added = orderflow_schema_gate::update_lock(&args.dir)?;
            if added.is_empty() {
                println!("published.lock already records every version");
            }
            for file in added {
                println!("recorded {file}");
            }
            Ok(())
        }
    }
}
