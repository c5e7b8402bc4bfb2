//! How the client commands (`timeline`, `stats`) reach the gateway: its URL, the CA that
//! signed its certificate, and the caller's bearer token.

use std::path::PathBuf;

use orderflow_auth::{Bearer, BearerChannel};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[derive(clap::Args)]
pub struct GatewayClientArgs {
    /// The gateway's URL.
    #[arg(
        long,
        env = "ORDERFLOW_GATEWAY_URL",
        default_value = "https://127.0.0.1:9200"
    )]
    gateway: String,
    /// The CA that signed the gateway's certificate (the system's trust store otherwise).
    #[arg(long, env = "ORDERFLOW_GATEWAY_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// The caller's bearer token (e.g. `orderflow token --customer alice`).
    #[arg(long, env = "ORDERFLOW_TOKEN", hide_env_values = true)]
    token: String,
}

impl GatewayClientArgs {
    /// A connection to the gateway that sends the token with every call.
    pub async fn connect(&self) -> anyhow::Result<BearerChannel> {
        let mut endpoint = Endpoint::from_shared(self.gateway.clone())?;
        if self.gateway.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_enabled_roots();
            if let Some(ca) = &self.ca_file {
                let pem = std::fs::read(ca)
                    .map_err(|e| anyhow::anyhow!("cannot read --ca-file {}: {e}", ca.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the gateway at {}: {e}", self.gateway))?;
        Ok(Bearer::new(&self.token).on(channel))
    }
}

/// A refused call, as a person reads it: its code and message.
pub fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}
