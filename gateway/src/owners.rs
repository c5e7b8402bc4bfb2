//! Channels from the gateway to the services that own orders and stock. An owner may run as
//! several instances: the channel balances over those that are up. tonic's balancer cannot
//! tell a dead instance from a live one (its connections are lazy, so a dead one still looks
//! ready and calls to it fail), so a prober connects to each instance every second and adds
//! it to the balancer or removes it: a killed instance costs calls at most that long, and an
//! instance started later (scaling out) is used once it listens.

use std::time::Duration;

use orderflow_platform::trace::{Propagate, TracedChannel};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Uri};

/// How often each instance is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// A channel to the owner at `urls`: one URL, or one per instance, comma-separated; over
/// TLS when `tls` is given (the URLs are then `https://`); calls carry the caller's trace
/// context (`traceparent`). The prober of a balanced channel
/// stops on `shutdown`.
pub fn channel(
    urls: &str,
    timeout: Duration,
    tls: Option<ClientTlsConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<TracedChannel> {
    // Every call carries the caller's trace context, so the owner's spans join its trace.
    Ok(InterceptedService::new(
        balanced(urls, timeout, tls, shutdown)?,
        Propagate,
    ))
}

/// The channel under [`channel`]'s trace propagation.
fn balanced(
    urls: &str,
    timeout: Duration,
    tls: Option<ClientTlsConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<Channel> {
    let endpoints = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            let https = url.starts_with("https://");
            let endpoint = Endpoint::from_shared(url.to_owned())?
                .connect_timeout(Duration::from_secs(2))
                .timeout(timeout)
                .tcp_nodelay(true);
            match (&tls, https) {
                (Some(tls), true) => Ok(endpoint.tls_config(tls.clone())?),
                (None, false) => Ok(endpoint),
                (Some(_), false) => anyhow::bail!(
                    "{url}: with --owner-ca-file the owners are called over TLS; use https://"
                ),
                (None, true) => {
                    anyhow::bail!("{url}: an https:// owner needs --owner-ca-file to verify it")
                }
            }
        })
        .collect::<anyhow::Result<Vec<Endpoint>>>()?;
    match endpoints.as_slice() {
        [] => anyhow::bail!("no URL in {urls:?}"),
        // Lazy: the gateway starts (and reports itself) even while the owner is still starting.
        [one] => Ok(one.connect_lazy()),
        _ => {
            let (channel, changes) = Channel::balance_channel(endpoints.len());
            tokio::spawn(probe(endpoints, changes, shutdown));
            Ok(channel)
        }
    }
}

/// Keeps the balancer's set of instances to those that accept connections.
async fn probe(
    endpoints: Vec<Endpoint>,
    changes: tokio::sync::mpsc::Sender<Change<Uri, Endpoint>>,
    shutdown: CancellationToken,
) {
    let mut present = vec![false; endpoints.len()];
    loop {
        for (endpoint, present) in endpoints.iter().zip(present.iter_mut()) {
            let uri = endpoint.uri().clone();
            let up = match uri.authority() {
                Some(authority) => tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio::net::TcpStream::connect(authority.as_str()),
                )
                .await
                .is_ok_and(|connected| connected.is_ok()),
                None => false,
            };
            if up == *present {
                continue;
            }
            let change = if up {
                tracing::info!(%uri, "owner instance up: balancing to it");
                Change::Insert(uri, endpoint.clone())
            } else {
                tracing::warn!(%uri, "owner instance down: no longer balancing to it");
                Change::Remove(uri)
            };
            if changes.send(change).await.is_err() {
                return; // The channel is gone.
            }
            *present = up;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}
