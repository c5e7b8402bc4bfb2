//! TLS for the gRPC APIs, on rustls through tonic: what a server presents (and whether it
//! asks its clients for a certificate), what a client trusts and presents, each read from PEM
//! files; the same for the registry's HTTP API ([`rustls_server_config`]); and [`LocalCa`],
//! the certificate authority `./orderflow up` and the tests make for a machine of their own. Nothing cryptographic is written here.

mod local_ca;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

pub use local_ca::{LocalCa, LocalCaFiles};

/// How a gRPC server meets its clients: TLS with its certificate, optionally asking each
/// client for a certificate signed by a given CA; or, asked for explicitly, plaintext.
#[derive(Debug, Clone, Default, Args)]
pub struct ServerTls {
    /// The PEM certificate chain this server presents.
    #[arg(long = "tls-cert-file", env = "ORDERFLOW_TLS_CERT_FILE")]
    pub cert: Option<PathBuf>,
    /// The PEM private key of that certificate.
    #[arg(long = "tls-key-file", env = "ORDERFLOW_TLS_KEY_FILE")]
    pub key: Option<PathBuf>,
    /// A PEM CA certificate: clients must present a certificate it signed (mutual TLS).
    #[arg(long = "tls-client-ca-file", env = "ORDERFLOW_TLS_CLIENT_CA_FILE")]
    pub client_ca: Option<PathBuf>,
    /// Serve without TLS. For local development on one machine only; logged as a warning.
    #[arg(long = "plaintext", env = "ORDERFLOW_PLAINTEXT")]
    pub plaintext: bool,
}

/// Whether a server must ask its clients for certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// Only when a client CA is configured (the public gateway).
    IfConfigured,
    /// Always: an internal API that only known components may call.
    Required,
}

impl ServerTls {
    /// The server's TLS settings, or None when plaintext was asked for; an error names what
    /// is missing or unreadable. `what` names the server in messages and logs.
    pub fn config(
        &self,
        what: &str,
        client_certs: ClientCerts,
    ) -> anyhow::Result<Option<ServerTlsConfig>> {
        if self.plaintext {
            tracing::warn!(
                server = what,
                "serving PLAINTEXT (--plaintext): anyone on the network path can read and alter \
                 the traffic. For local development only."
            );
            return Ok(None);
        }
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            anyhow::bail!(
                "the {what} serves TLS: set --tls-cert-file and --tls-key-file \
                 (or --plaintext for local development)"
            );
        };
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
            read(cert, "TLS certificate")?,
            read(key, "TLS key")?,
        ));
        match (&self.client_ca, client_certs) {
            (Some(ca), _) => {
                config = config.client_ca_root(Certificate::from_pem(read(ca, "client CA")?));
            }
            (None, ClientCerts::Required) => anyhow::bail!(
                "the {what} accepts only callers with a certificate: set --tls-client-ca-file \
                 (or --plaintext for local development)"
            ),
            (None, ClientCerts::IfConfigured) => {}
        }
        Ok(Some(config))
    }
}

/// The rustls configuration of a server that is not tonic's (the registry's HTTP API):
/// presents the PEM certificate chain `cert` with the PEM key `key`, over HTTP/1.1.
pub fn rustls_server_config(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<std::sync::Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(&read(cert, "TLS certificate")?)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("no PEM certificate in {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
    let private_key = PrivateKeyDer::from_pem_slice(&read(key, "TLS key")?)
        .with_context(|| format!("no PEM private key in {}", key.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .with_context(|| format!("{} does not match {}", key.display(), cert.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(std::sync::Arc::new(config))
}

/// What a client trusts (the CA of its servers) and presents (its own certificate, for
/// servers that ask for one).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    pub fn config(&self) -> anyhow::Result<ClientTlsConfig> {
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&self.ca, "CA")?));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(
                read(cert, "client certificate")?,
                read(key, "client key")?,
            ));
        }
        Ok(config)
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (LocalCaFiles, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "orderflow-tls-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let files = LocalCa::ensure(&dir, &["server"]).unwrap();
        (files, dir)
    }

    #[test]
    fn a_server_without_certificates_must_ask_for_plaintext() {
        let error = ServerTls::default()
            .config("gateway", ClientCerts::IfConfigured)
            .unwrap_err();
        assert!(error.to_string().contains("--tls-cert-file"), "{error}");
        let plaintext = ServerTls {
            plaintext: true,
            ..Default::default()
        };
        assert!(
            plaintext
                .config("gateway", ClientCerts::Required)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn an_internal_server_requires_a_client_ca() {
        let (files, dir) = files();
        let (cert, key) = files.identity("server");
        let tls = ServerTls {
            cert: Some(cert),
            key: Some(key),
            ..Default::default()
        };
        assert!(tls.config("gateway", ClientCerts::IfConfigured).is_ok());
        let error = tls
            .config("order service", ClientCerts::Required)
            .unwrap_err();
        assert!(
            error.to_string().contains("--tls-client-ca-file"),
            "{error}"
        );
        let missing = ServerTls {
            cert: Some(dir.join("nope.pem")),
            ..tls
        };
        let error = missing
            .config("gateway", ClientCerts::IfConfigured)
            .unwrap_err();
        assert!(format!("{error:#}").contains("nope.pem"), "{error:#}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
