//! `orderflow certs`: makes a local certificate authority and one certificate per component,
//! for a deployment without a PKI of its own (the compose file runs it once into a shared
//! volume). The CA's private key is not kept.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct CertsArgs {
    /// The folder to write `ca.pem`, `<name>.pem` and `<name>-key.pem` into (kept as they
    /// are when complete).
    #[arg(long)]
    dir: PathBuf,
    /// The components to make certificates for (each valid for localhost, 127.0.0.1, ::1 and
    /// its own name as a host name).
    #[arg(long, value_delimiter = ',', default_value = "gateway,order,inventory")]
    names: Vec<String>,
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    let files = orderflow_tls::LocalCa::ensure(&args.dir, &names)?;
    println!("{}", files.ca().display());
    Ok(())
}
