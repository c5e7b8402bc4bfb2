//! `orderflow token`: signs a bearer token with a signing key, for local runs and for tests
//! by hand. The key is the development key `./orderflow up` makes unless `--signing-key` names
//! another (a deployment's tokens come from its identity provider, not from here).

use std::path::PathBuf;

use orderflow_auth::{Claims, DEV_AUDIENCE, DEV_ISSUER, OPERATOR_ROLE, SigningKey};

/// The development signing key `./orderflow up` makes (in its default home), relative to the
/// checkout.
const DEV_SIGNING_KEY: &str = ".orderflow/auth/dev-signing-key.pem";

#[derive(clap::Args)]
pub struct TokenArgs {
    /// The customer the token acts as (its subject).
    #[arg(long)]
    customer: String,
    /// Grant the operator role (stock administration).
    #[arg(long)]
    operator: bool,
    /// How long the token is valid, in seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(i64).range(1..))]
    ttl_secs: i64,
    /// The PKCS#8 PEM key to sign with.
    #[arg(long, env = "ORDERFLOW_SIGNING_KEY_FILE", default_value = DEV_SIGNING_KEY)]
    signing_key: PathBuf,
    /// The issuer (`iss`) to name; the gateway's `--jwt-issuer` must match.
    #[arg(long, default_value = DEV_ISSUER)]
    issuer: String,
    /// The audience (`aud`) to name; the gateway's `--jwt-audience` must match.
    #[arg(long, default_value = DEV_AUDIENCE)]
    audience: String,
}

/// Prints the token on standard output, alone on its line.
pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    orderflow_domain::CustomerId::parse("--customer", &args.customer)?;
    let key = SigningKey::read(&args.signing_key).map_err(|e| {
        e.context("run `./orderflow up` to make the development key, or pass --signing-key")
    })?;
    let mut claims = Claims::new(&args.customer, &args.issuer, &args.audience, args.ttl_secs);
    if args.operator {
        claims = claims.with_role(OPERATOR_ROLE);
    }
    println!("{}", key.sign(&claims));
    Ok(())
}
