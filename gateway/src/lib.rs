//! The public gRPC gateway: the only door clients use. It validates requests, forwards them
//! to the owning service (orders to the order service, stock to the inventory service),
//! serves WatchOrder streams from the `order-status` topic through an in-memory fan-out, and
//! publishes operators' customer directory entries on the `customers` topic.

mod access;
mod api;
mod config;
mod directory;
mod error;
mod feed;
mod hub;
mod owners;
mod rate;
mod streams;

use std::sync::Arc;
use std::time::Duration;

use orderflow_platform::{Health, Metrics};
use orderflow_proto::internal::v1::analytics_store_client::AnalyticsStoreClient;
use orderflow_proto::internal::v1::history_store_client::HistoryStoreClient;
use orderflow_proto::internal::v1::order_store_client::OrderStoreClient;
use orderflow_proto::v1::customer_service_server::CustomerServiceServer;
use orderflow_proto::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::v1::inventory_service_server::InventoryServiceServer;
use orderflow_proto::v1::order_service_server::OrderServiceServer;
use orderflow_proto::v1::stats_service_server::StatsServiceServer;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tower::ServiceBuilder;

pub use config::GatewayArgs;
pub use error::GatewayError;

pub async fn serve(args: GatewayArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    let admin = TcpListener::bind(args.admin_listen).await?;
    run(args, listener, admin, shutdown).await
}

/// Runs the gateway on the given listeners until `shutdown`; open WatchOrder streams end
/// with UNAVAILABLE and the version to resume from.
pub async fn run(
    args: GatewayArgs,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(args.request_timeout_ms);
    let tls = args
        .tls
        .config("gateway", orderflow_tls::ClientCerts::IfConfigured)?;
    let owner_tls = args.owner_tls().map(|tls| tls.config()).transpose()?;
    let authenticate = access::Authenticate {
        verifier: verifier(&args.auth, shutdown.clone()).await?,
        rate: Arc::new(rate::RateLimiter::new(
            args.rate_limit_per_sec,
            args.rate_limit_burst,
        )),
    };
    let health = Health::new();
    let metrics = Metrics::new();
    let watchers = Gauge::default();
    metrics.register(
        "gateway_watchers",
        "WatchOrder streams open now",
        watchers.clone(),
    );
    let streams_opened = Counter::default();
    metrics.register(
        "gateway_watch_streams_opened",
        "WatchOrder streams opened",
        streams_opened.clone(),
    );
    if let Some(verifier) = &authenticate.verifier {
        let checks = verifier.checks();
        metrics.register(
            "gateway_tokens_remembered",
            "Bearer tokens answered from a token verified before",
            checks.remembered.clone(),
        );
        metrics.register(
            "gateway_tokens_checked_in_full",
            "Bearer tokens whose signature and claims were checked",
            checks.in_full.clone(),
        );
    }
    let hub = hub::Hub::new(watchers);
    let codec = Arc::new(args.bus.codec()?);
    orderflow_platform::kafka::check_credentials(&args.bus.kafka).await?;
    // The feed creates its topic and positions itself in the background (retrying while the
    // broker is away); until then WatchOrder is refused and the order service reported
    // NOT_SERVING, while calls that need no feed are served.
    let (feed_ready, ready) = tokio::sync::watch::channel(false);
    feed::not_ready_yet(&health);
    let customers = directory::CustomerApi::new(&args.bus.kafka, codec.clone())?;
    let feed = tokio::spawn(feed::run(
        args.bus.kafka.clone(),
        codec,
        hub.clone(),
        health.clone(),
        feed_ready,
        shutdown.clone(),
    ));

    let orders = api::OrderApi {
        orders: OrderStoreClient::new(owners::channel(
            &args.order_url,
            timeout,
            owner_tls.clone(),
            shutdown.clone(),
        )?),
        history: HistoryStoreClient::new(owners::channel(
            &args.history_url,
            timeout,
            owner_tls.clone(),
            shutdown.clone(),
        )?),
        hub: hub.clone(),
        feed_ready: ready.clone(),
        streams: streams::StreamLimits::new(
            args.max_watch_streams,
            args.max_watch_streams_per_connection,
            args.max_watch_streams_per_caller,
        ),
        shutdown: shutdown.clone(),
        streams_opened,
    };
    let stats = api::StatsApi {
        analytics: AnalyticsStoreClient::new(owners::channel(
            &args.analytics_url,
            timeout,
            owner_tls.clone(),
            shutdown.clone(),
        )?),
    };
    let inventory = api::InventoryApi {
        inventory: InventoryServiceClient::new(owners::channel(
            &args.inventory_url,
            timeout,
            owner_tls,
            shutdown.clone(),
        )?),
    };

    // Reflection (v1 and v1alpha, so any grpcurl works) over the public API and health.
    let public = orderflow_proto::public_descriptor_set();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(&public)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(&public)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<InventoryServiceServer<api::InventoryApi>>()
        .await;
    health_reporter
        .set_serving::<CustomerServiceServer<directory::CustomerApi>>()
        .await;
    // The order service (WatchOrder) and the server as a whole: SERVING once the status feed
    // is positioned, as `/health` reports.
    health_reporter
        .set_not_serving::<OrderServiceServer<api::OrderApi>>()
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    tokio::spawn({
        let mut ready = ready;
        async move {
            if ready.wait_for(|ready| *ready).await.is_ok() {
                health_reporter
                    .set_serving::<OrderServiceServer<api::OrderApi>>()
                    .await;
                health_reporter
                    .set_service_status("", tonic_health::ServingStatus::Serving)
                    .await;
            }
        }
    });

    let layers = ServiceBuilder::new()
        // One span per call, with method and status in the logs; exported, the root of the
        // order's trace (or a child of the client's, when it passes a `traceparent`).
        .layer(orderflow_platform::trace::grpc_layer())
        // Refuse at once (RESOURCE_EXHAUSTED) rather than queue when at the limit below.
        .load_shed()
        // At most this many calls in progress across all connections.
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            args.max_concurrent_requests,
        ))
        .into_inner();

    let admin_health = health.clone();
    let admin_server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { admin_health.serve(admin, metrics.router(), shutdown).await }
    });
    tracing::info!(addr = %listener.local_addr()?, "gateway ready");
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    let result = server
        // Bounds each call until its response starts; WatchOrder streams outlive it.
        .timeout(timeout)
        // Pings every client connection; one that does not answer in time is closed, which
        // ends its streams: a client that vanished without closing (a dead host, a dropped
        // NAT entry) holds no stream for long.
        .http2_keepalive_interval(Some(Duration::from_secs(args.keepalive_interval_secs)))
        .http2_keepalive_timeout(Some(Duration::from_secs(args.keepalive_timeout_secs)))
        // Bounds what one request's headers may hold (a token is well under 2 KiB).
        .http2_max_header_list_size(args.max_metadata_bytes)
        .layer(layers)
        .add_service(InterceptedService::new(
            OrderServiceServer::new(orders).max_decoding_message_size(args.max_message_bytes),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            InventoryServiceServer::new(inventory)
                .max_decoding_message_size(args.max_message_bytes),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            StatsServiceServer::new(stats).max_decoding_message_size(args.max_message_bytes),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            CustomerServiceServer::new(customers).max_decoding_message_size(args.max_message_bytes),
            authenticate,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), {
            let shutdown = shutdown.clone();
            async move { shutdown.cancelled().await }
        })
        .await;
    let _ = feed.await;
    let _ = admin_server.await;
    Ok(result?)
}

/// The token verifier the settings ask for, with its keys loaded (and re-read in the
/// background); None, loudly, when authentication is switched off.
async fn verifier(
    auth: &orderflow_auth::AuthArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<Arc<orderflow_auth::Verifier>>> {
    if auth.insecure_no_auth {
        tracing::warn!(
            "AUTHENTICATION IS OFF (--insecure-no-auth): any caller may place, read and watch \
             any customer's orders and set stock. Never run this way on a reachable network."
        );
        return Ok(None);
    }
    let keys = orderflow_auth::KeySet::load(auth.key_source()?).await?;
    keys.refresh_every(auth.refresh(), shutdown);
    tracing::info!(
        issuer = %auth.issuer,
        audience = %auth.audience,
        "callers authenticate with bearer tokens"
    );
    Ok(Some(Arc::new(orderflow_auth::Verifier::new(keys, auth))))
}
