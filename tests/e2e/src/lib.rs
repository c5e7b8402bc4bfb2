//! The whole system in one test process, against the real broker, the real registry (over
//! HTTP) and real PostgreSQL. Each [`System`] has its own databases, topic prefix and
//! consumer groups, so tests run in parallel; components can be stopped and started again.
//!
//! The broker's address comes from `ORDERFLOW_TEST_BROKER` (the README's test command starts
//! a tansu broker and sets it).

pub mod load;
pub mod process;
pub mod scenario;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use orderflow_auth::{AuthArgs, BearerChannel, LocalIssuer, SigningKey};
use orderflow_platform::{CommonArgs, EventBusArgs, KafkaArgs, RetentionArgs};
use orderflow_proto::v1 as pb;
use orderflow_proto::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::v1::order_service_client::OrderServiceClient;
use orderflow_testkit::TestDatabase;
use orderflow_tls::{ClientTls, LocalCa, LocalCaFiles, ServerTls};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;

pub use orderflow_testkit::wait_for;

/// What a test system's components trust, made for it alone: a token signing key (its JWKS
/// in a file) with tokens for any customer and for an operator, and a local CA with a
/// certificate for the gateway and for each service that serves gRPC. Removed when dropped.
pub struct Credentials {
    pub issuer: Arc<LocalIssuer>,
    /// The JWKS the gateway verifies against.
    pub jwks: PathBuf,
    pub tls: LocalCaFiles,
    /// The registry's users file: `services` (write) and `admin`.
    pub registry_users: PathBuf,
    /// `user:password` of the registry user the services and the gateway act as.
    pub registry_writer: String,
    /// `user:password` of the registry's admin (the tests' own calls).
    pub registry_admin: String,
    /// The SCRAM password of [`KAFKA_USER`] on a secured test broker, and a file holding it.
    pub kafka_password: String,
    pub kafka_password_file: PathBuf,
    dir: PathBuf,
}

/// The Kafka user the components log in as on a secured test broker.
pub const KAFKA_USER: &str = "orderflow-services";

impl Credentials {
    pub fn new() -> Credentials {
        let key = SigningKey::generate();
        let dir = std::env::temp_dir().join(format!("orderflow-e2e-credentials-{}", key.kid()));
        std::fs::create_dir_all(&dir).expect("a directory for the test credentials");
        let jwks = dir.join("jwks.json");
        std::fs::write(&jwks, key.jwks().to_string()).expect("write the test JWKS");
        let tls = LocalCa::ensure(
            &dir.join("tls"),
            &[
                "gateway",
                "order",
                "inventory",
                "history",
                "analytics",
                "broker",
                "registry",
            ],
        )
        .expect("the test certificates");
        let registry_writer = format!("services:{}", orderflow_testkit::unique_suffix());
        let registry_admin = format!("admin:{}", orderflow_testkit::unique_suffix());
        let registry_users = dir.join("registry-users");
        std::fs::write(
            &registry_users,
            format!("{registry_writer}:write\n{registry_admin}:admin\n"),
        )
        .expect("write the registry users");
        let kafka_password = orderflow_testkit::unique_suffix();
        let kafka_password_file = dir.join("kafka-password");
        std::fs::write(&kafka_password_file, &kafka_password).expect("write the Kafka password");
        Credentials {
            kafka_password,
            kafka_password_file,
            issuer: Arc::new(LocalIssuer::new(key)),
            jwks,
            tls,
            registry_users,
            registry_writer,
            registry_admin,
            dir,
        }
    }

    /// Client settings for a broker started by `process::Broker::start_secured`: SASL_SSL,
    /// SCRAM-SHA-512 as [`KAFKA_USER`].
    pub fn kafka_security(&self) -> orderflow_platform::config::KafkaSecurityArgs {
        use orderflow_platform::config::{KafkaSecurityArgs, ScramMechanism, SecurityProtocol};
        KafkaSecurityArgs {
            protocol: SecurityProtocol::SaslSsl,
            ca_file: Some(self.tls.ca()),
            mechanism: ScramMechanism::ScramSha512,
            username: Some(KAFKA_USER.into()),
            password: Some(self.kafka_password.as_str().into()),
        }
    }

    /// The registry's users.
    pub fn registry_users(&self) -> orderflow_registry::Users {
        orderflow_registry::Users::read(&self.registry_users).expect("the registry users")
    }

    /// A codec of events through the registry at `url`, as the services' user.
    pub fn codec(&self, registry_url: &str) -> orderflow_events::EventCodec {
        orderflow_events::EventCodec::new(&orderflow_events::RegistryAccess {
            url: registry_url,
            user_info: Some(&self.registry_writer),
            ca_file: Some(&self.tls.ca()),
        })
        .expect("codec")
    }

    /// An HTTP request to the registry, as its admin.
    pub fn as_registry_admin(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let (user, password) = self.registry_admin.split_once(':').expect("user:password");
        request.basic_auth(user, Some(password))
    }

    /// The gateway's authentication settings: these keys, the development issuer and
    /// audience.
    pub fn auth_args(&self) -> AuthArgs {
        AuthArgs::with_jwks_file(self.jwks.clone())
    }

    /// The TLS a component serves with; the services ask callers for a certificate.
    pub fn server_tls(&self, name: &str) -> ServerTls {
        let (cert, key) = self.tls.identity(name);
        ServerTls {
            cert: Some(cert),
            key: Some(key),
            client_ca: (name != "gateway").then(|| self.tls.ca()),
            plaintext: false,
        }
    }

    /// What a client of the gateway trusts.
    pub fn client_tls(&self) -> ClientTlsConfig {
        ClientTls {
            ca: self.tls.ca(),
            identity: None,
        }
        .config()
        .expect("the test CA")
    }

    /// Sets the gateway's TLS: its own certificate, and mutual TLS to the services.
    pub fn secure_gateway(&self, args: &mut orderflow_gateway::GatewayArgs) {
        args.tls = self.server_tls("gateway");
        args.owner_ca = Some(self.tls.ca());
        let (cert, key) = self.tls.identity("gateway");
        args.owner_cert = Some(cert);
        args.owner_key = Some(key);
    }
}

impl Default for Credentials {
    fn default() -> Self {
        Credentials::new()
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The components a [`System`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Order,
    Payment,
    Inventory,
    Gateway,
    /// Not started by [`System::start`]: a test that reads timelines starts it.
    History,
    /// Not started by [`System::start`]: a test that reads the figures starts it.
    Analytics,
    /// Not started by [`System::start`]: a test of notifications sets
    /// [`System::notifications_sink`] and starts it.
    Notifications,
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    admin: SocketAddr,
}

/// A running orderflow.
pub struct System {
    pub kafka: KafkaArgs,
    pub registry_url: String,
    pub gateway_addr: SocketAddr,
    pub order_db: TestDatabase,
    pub payment_db: TestDatabase,
    pub inventory_db: TestDatabase,
    pub history_db: TestDatabase,
    pub analytics_db: TestDatabase,
    pub notifications_db: TestDatabase,
    /// Where the notifications service delivers, and its budget: a file of its own by
    /// default.
    pub notifications_sink: orderflow_notifications::SinkArgs,
    _registry_db: TestDatabase,
    registry_stop: CancellationToken,
    order_grpc: SocketAddr,
    inventory_grpc: SocketAddr,
    history_grpc: SocketAddr,
    analytics_grpc: SocketAddr,
    running: HashMap<Component, Running>,
    /// The payment provider, outside the payment service: it keeps what it captured across
    /// the service's restarts, and a test reads its ledger.
    pub provider: std::sync::Arc<orderflow_payment::provider::SimulatedProvider>,
    configure_gateway: Option<GatewaySettings>,
    /// The keys the gateway trusts, and tokens signed with them.
    pub credentials: Credentials,
    /// Listeners bound for components not started yet.
    reserved: HashMap<SocketAddr, TcpListener>,
}

/// Changes a test makes to the gateway's settings (limits, keepalive).
pub type GatewaySettings = Box<dyn Fn(&mut orderflow_gateway::GatewayArgs) + Send + Sync>;

/// The test broker's address.
pub fn test_broker() -> String {
    std::env::var("ORDERFLOW_TEST_BROKER").expect(
        "ORDERFLOW_TEST_BROKER is not set: run the tests with ./orderflow test, which starts a broker, \
         or point it at a Kafka-compatible broker",
    )
}

async fn bind_any() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port")
}

/// The Kafka settings of a test system: its own topic prefix on `brokers`, one partition and
/// the services' defaults otherwise.
pub fn kafka_args(brokers: String, topic_prefix: String) -> KafkaArgs {
    KafkaArgs {
        brokers,
        topic_prefix,
        partitions: 1,
        fetch_wait_ms: 500,
        fetch_min_bytes: 1,
        linger_ms: 2,
        group_suffix: String::new(),
        // Derived from the host and the admin port, as by default.
        instance_id: String::new(),
        consumer_batch: orderflow_platform::config::DEFAULT_CONSUMER_BATCH,
        debug: None,
        security: Default::default(),
    }
}

impl System {
    /// Starts the registry, the three services and the gateway, and waits until all are healthy.
    pub async fn start() -> System {
        System::start_with(None).await
    }

    /// As [`System::start`], with the gateway's settings changed by `configure_gateway`
    /// (also when it is started again).
    pub async fn start_with(configure_gateway: Option<GatewaySettings>) -> System {
        let prefix = format!("t{}-", orderflow_testkit::unique_suffix());
        System::start_on(kafka_args(test_broker(), prefix), configure_gateway).await
    }

    /// As [`System::start_with`], on the broker and with the Kafka settings of `kafka`.
    pub async fn start_on(kafka: KafkaArgs, configure_gateway: Option<GatewaySettings>) -> System {
        let _unexported = orderflow_platform::telemetry::init("e2e", &Default::default())
            .expect("no endpoint, nothing to refuse");
        let registry_db = TestDatabase::create("registry").await;
        let pool = orderflow_db::connect_and_migrate(
            &orderflow_db::DbSettings::new(registry_db.url()),
            &orderflow_registry::MIGRATOR,
        )
        .await
        .expect("registry database");
        let registry_listener = bind_any().await;
        let registry_url = format!("https://{}", registry_listener.local_addr().unwrap());
        let registry_stop = CancellationToken::new();
        let credentials = Credentials::new();
        let (cert, key) = credentials.tls.identity("registry");
        let registry_tls = orderflow_tls::rustls_server_config(&cert, &key).expect("registry TLS");
        tokio::spawn(orderflow_registry::run(
            orderflow_registry::TlsListener::new(registry_listener, registry_tls)
                .expect("registry listener"),
            pool,
            Some(credentials.registry_users()),
            {
                let stop = registry_stop.clone();
                async move { stop.cancelled().await }
            },
        ));
        // Bound now and held until each component starts: a port picked and let go could be
        // taken meanwhile by any socket of a test running beside this one.
        let reserved: HashMap<SocketAddr, TcpListener> = [
            bind_any().await,
            bind_any().await,
            bind_any().await,
            bind_any().await,
            bind_any().await,
        ]
        .into_iter()
        .map(|l| (l.local_addr().unwrap(), l))
        .collect();
        let [
            order_grpc,
            inventory_grpc,
            history_grpc,
            analytics_grpc,
            gateway_addr,
        ]: [SocketAddr; 5] = reserved
            .keys()
            .copied()
            .collect::<Vec<_>>()
            .try_into()
            .unwrap();
        let mut system = System {
            kafka,
            registry_url,
            gateway_addr,
            order_db: TestDatabase::create("order").await,
            payment_db: TestDatabase::create("payment").await,
            inventory_db: TestDatabase::create("inventory").await,
            history_db: TestDatabase::create("history").await,
            analytics_db: TestDatabase::create("analytics").await,
            notifications_db: TestDatabase::create("notifications").await,
            notifications_sink: orderflow_notifications::SinkArgs {
                kind: orderflow_notifications::SinkKind::File,
                file: std::env::temp_dir().join(format!(
                    "orderflow-e2e-notifications-{}.jsonl",
                    orderflow_testkit::unique_suffix()
                )),
                webhook_url: None,
                webhook_secret: None,
                webhook_timeout_ms: 5_000,
                max_attempts: 10,
                retry_base_ms: 100,
                retry_cap_ms: 2_000,
            },
            _registry_db: registry_db,
            registry_stop,
            order_grpc,
            inventory_grpc,
            history_grpc,
            analytics_grpc,
            running: HashMap::new(),
            provider: Default::default(),
            configure_gateway,
            credentials,
            reserved,
        };
        for component in [
            Component::Order,
            Component::Payment,
            Component::Inventory,
            Component::Gateway,
        ] {
            system.start_component(component).await;
        }
        system
    }

    fn common(&self) -> CommonArgs {
        CommonArgs {
            bus: self.bus(),
            // Published outbox rows are kept, unlike the default: tests here read them back
            // (one OrderCreated per idempotent PlaceOrder) and copy them to deliver an event
            // twice. The process-based fault and scale suites run the default, which deletes
            // each row once the broker acknowledges it.
            retention: RetentionArgs {
                outbox: Duration::from_secs(24 * 3600),
                ..Default::default()
            },
            progress: Default::default(),
            self_vacuum: Default::default(),
            database_max_connections: 10,
        }
    }

    fn bus(&self) -> EventBusArgs {
        EventBusArgs {
            kafka: self.kafka.clone(),
            registry_url: self.registry_url.clone(),
            registry_user_info: Some(self.credentials.registry_writer.as_str().into()),
            registry_ca_file: Some(self.credentials.tls.ca()),
        }
    }

    /// The order service's gRPC URL (the owner the gateway forwards to).
    pub fn order_url(&self) -> String {
        format!("https://{}", self.order_grpc)
    }

    /// The inventory service's gRPC URL.
    pub fn inventory_url(&self) -> String {
        format!("https://{}", self.inventory_grpc)
    }

    /// The history service's gRPC URL.
    pub fn history_url(&self) -> String {
        format!("https://{}", self.history_grpc)
    }

    /// The analytics service's gRPC URL.
    pub fn analytics_url(&self) -> String {
        format!("https://{}", self.analytics_grpc)
    }

    /// The gateway's URL.
    pub fn gateway_url(&self) -> String {
        format!("https://{}", self.gateway_addr)
    }

    /// The base URL of `component`'s admin endpoint (`/health`, `/metrics`).
    pub fn admin_url(&self, component: Component) -> String {
        format!("http://{}", self.running[&component].admin)
    }

    /// Starts one component (again) and waits until its health endpoint answers 200.
    pub async fn start_component(&mut self, component: Component) {
        assert!(
            !self.running.contains_key(&component),
            "{component:?} is already running"
        );
        let stop = CancellationToken::new();
        let admin_listener = bind_any().await;
        let admin = admin_listener.local_addr().unwrap();
        let task = match component {
            Component::Order => {
                let args = orderflow_order::OrderArgs {
                    common: self.common(),
                    database_url: self.order_db.url().into(),
                    grpc_listen: self.order_grpc,
                    admin_listen: admin,
                    tls: self.credentials.server_tls("order"),
                };
                let grpc = self.listener(self.order_grpc).await;
                tokio::spawn(orderflow_order::run(
                    args,
                    grpc,
                    admin_listener,
                    stop.clone(),
                ))
            }
            Component::Payment => {
                let args = orderflow_payment::PaymentArgs {
                    common: self.common(),
                    database_url: self.payment_db.url().into(),
                    admin_listen: admin,
                    charge_attempts: 5,
                    refund_attempts: 8,
                    // Unused: these tests hand the service their own provider.
                    provider_key_retention: orderflow_payment::provider::DEFAULT_KEY_RETENTION,
                };
                tokio::spawn(orderflow_payment::run(
                    args,
                    self.provider.clone(),
                    admin_listener,
                    stop.clone(),
                ))
            }
            Component::Inventory => {
                let args = orderflow_inventory::InventoryArgs {
                    common: self.common(),
                    database_url: self.inventory_db.url().into(),
                    grpc_listen: self.inventory_grpc,
                    admin_listen: admin,
                    tls: self.credentials.server_tls("inventory"),
                };
                let grpc = self.listener(self.inventory_grpc).await;
                tokio::spawn(orderflow_inventory::run(
                    args,
                    grpc,
                    admin_listener,
                    stop.clone(),
                ))
            }
            Component::History => {
                let args = orderflow_history::HistoryArgs {
                    common: self.common(),
                    database_url: self.history_db.url().into(),
                    grpc_listen: self.history_grpc,
                    admin_listen: admin,
                    tls: self.credentials.server_tls("history"),
                };
                let grpc = self.listener(self.history_grpc).await;
                tokio::spawn(orderflow_history::run(
                    args,
                    grpc,
                    admin_listener,
                    stop.clone(),
                ))
            }
            Component::Analytics => {
                let args = orderflow_analytics::AnalyticsArgs {
                    common: self.common(),
                    database_url: self.analytics_db.url().into(),
                    grpc_listen: self.analytics_grpc,
                    admin_listen: admin,
                    tls: self.credentials.server_tls("analytics"),
                };
                let grpc = self.listener(self.analytics_grpc).await;
                tokio::spawn(orderflow_analytics::run(
                    args,
                    grpc,
                    admin_listener,
                    stop.clone(),
                ))
            }
            Component::Notifications => {
                let args = orderflow_notifications::NotificationsArgs {
                    common: self.common(),
                    database_url: self.notifications_db.url().into(),
                    admin_listen: admin,
                    sink: self.notifications_sink.clone(),
                };
                tokio::spawn(orderflow_notifications::run(
                    args,
                    admin_listener,
                    stop.clone(),
                ))
            }
            Component::Gateway => {
                let mut args = orderflow_gateway::GatewayArgs {
                    bus: self.bus(),
                    auth: self.credentials.auth_args(),
                    listen: self.gateway_addr,
                    admin_listen: admin,
                    tls: Default::default(),
                    owner_ca: None,
                    owner_cert: None,
                    owner_key: None,
                    order_url: self.order_url(),
                    inventory_url: self.inventory_url(),
                    history_url: self.history_url(),
                    analytics_url: self.analytics_url(),
                    request_timeout_ms: 10_000,
                    max_concurrent_requests: 1024,
                    max_watch_streams: 10_000,
                    max_watch_streams_per_connection: 100,
                    max_watch_streams_per_caller: 50,
                    rate_limit_per_sec: 50,
                    rate_limit_burst: 100,
                    max_message_bytes: 256 * 1024,
                    max_metadata_bytes: 16 * 1024,
                    keepalive_interval_secs: 30,
                    keepalive_timeout_secs: 10,
                };
                self.credentials.secure_gateway(&mut args);
                if let Some(configure) = &self.configure_gateway {
                    configure(&mut args);
                }
                let listener = self.listener(self.gateway_addr).await;
                tokio::spawn(orderflow_gateway::run(
                    args,
                    listener,
                    admin_listener,
                    stop.clone(),
                ))
            }
        };
        self.running
            .insert(component, Running { stop, task, admin });
        self.wait_healthy(component).await;
    }

    /// The listener for a component's gRPC address: the one bound when the system was made
    /// (held since, so no other socket can take the port meanwhile), or the same address
    /// bound again on a restart.
    async fn listener(&mut self, addr: SocketAddr) -> TcpListener {
        if let Some(listener) = self.reserved.remove(&addr) {
            return listener;
        }
        let mut tries = 0;
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => return l,
                // The previous instance's socket may take a moment to close.
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot bind {addr} again: {e}"),
            }
        }
    }

    /// Waits until `component` reports itself healthy (and fails fast if it died).
    pub async fn wait_healthy(&mut self, component: Component) {
        let url = format!("http://{}/health", self.running[&component].admin);
        let running = &self.running;
        let died = || {
            running[&component]
                .task
                .is_finished()
                .then(|| format!("{component:?} exited during start-up"))
        };
        wait_healthy_at(
            &format!("{component:?}"),
            &url,
            Duration::from_secs(60),
            died,
        )
        .await;
    }

    /// Stops `component` gracefully and waits until it has finished.
    pub async fn stop_component(&mut self, component: Component) {
        let running = self
            .running
            .remove(&component)
            .expect("component is running");
        running.stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), running.task).await;
        match result {
            Ok(Ok(Ok(()))) => {}
            other => panic!("{component:?} did not stop cleanly: {other:?}"),
        }
    }

    /// A new connection to the gateway, over TLS.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.gateway_url())
            .unwrap()
            .tls_config(self.credentials.client_tls())
            .unwrap()
            .connect()
            .await
            .expect("connect to the gateway")
    }

    /// The order API as `customer`.
    pub async fn orders(&self, customer: &str) -> OrderServiceClient<BearerChannel> {
        let bearer = self.credentials.issuer.customer(customer);
        OrderServiceClient::new(bearer.on(self.channel().await))
    }

    /// The figures, as an operator.
    pub async fn stats(
        &self,
    ) -> orderflow_proto::v1::stats_service_client::StatsServiceClient<BearerChannel> {
        let bearer = self.credentials.issuer.operator();
        orderflow_proto::v1::stats_service_client::StatsServiceClient::new(
            bearer.on(self.channel().await),
        )
    }

    /// The inventory API as an operator.
    pub async fn inventory(&self) -> InventoryServiceClient<BearerChannel> {
        let bearer = self.credentials.issuer.operator();
        InventoryServiceClient::new(bearer.on(self.channel().await))
    }

    /// The customer directory as `bearer` (an operator may write it).
    pub async fn customers(
        &self,
        bearer: orderflow_auth::Bearer,
    ) -> orderflow_proto::v1::customer_service_client::CustomerServiceClient<BearerChannel> {
        orderflow_proto::v1::customer_service_client::CustomerServiceClient::new(
            bearer.on(self.channel().await),
        )
    }
}

impl Drop for System {
    fn drop(&mut self) {
        for running in self.running.values() {
            running.stop.cancel();
        }
        self.registry_stop.cancel();
    }
}

/// Waits until consumer group `group` has committed everything on `topics` (no lag on any
/// partition), as `orderflow status` reads it.
pub async fn wait_caught_up(kafka: &KafkaArgs, group: &str, topics: &[String], timeout: Duration) {
    wait_for(
        &format!("group {group} at the end of {topics:?}"),
        timeout,
        || {
            let (kafka, group, topics) = (kafka.clone(), group.to_owned(), topics.to_vec());
            async move {
                let progress = tokio::task::spawn_blocking(move || {
                    orderflow_platform::progress::read(
                        &kafka,
                        &group,
                        &topics,
                        Duration::from_secs(5),
                    )
                })
                .await
                .ok()?
                .ok()?;
                progress.iter().all(|p| p.lag() == 0).then_some(())
            }
        },
    )
    .await;
}

/// Polls `url` until it answers 2xx. `died` is asked between polls and fails the wait at
/// once with its message when the component is gone.
pub async fn wait_healthy_at(
    what: &str,
    url: &str,
    timeout: Duration,
    mut died: impl FnMut() -> Option<String>,
) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let response = client.get(url).timeout(Duration::from_secs(2)).send().await;
        if response.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        if let Some(reason) = died() {
            panic!("{reason}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not healthy at {url} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sets a SKU's stock through the gateway, then waits until the order service's catalogue
/// lists it (asked through `orders`, a client of `customer`), so the test's orders of it are
/// not refused as unknown.
pub async fn set_stock(
    mut inventory: InventoryServiceClient<BearerChannel>,
    (mut orders, customer): (OrderServiceClient<BearerChannel>, &str),
    sku: &str,
    units: i32,
) {
    inventory
        .set_stock(pb::SetStockRequest {
            sku: sku.into(),
            available: units,
        })
        .await
        .expect("SetStock");
    orderflow_dev::load::wait_catalogued(
        &mut orders,
        customer,
        sku,
        orderflow_dev::load::CATALOGUE_PATIENCE,
    )
    .await
    .expect("the SKU reaches the order service's catalogue");
}

/// A SKU's stock, read through the gateway.
pub async fn stock(mut inventory: InventoryServiceClient<BearerChannel>, sku: &str) -> i32 {
    inventory
        .get_stock(pb::GetStockRequest { sku: sku.into() })
        .await
        .expect("GetStock")
        .into_inner()
        .available
}

/// A PlaceOrder request for one line of `quantity` units at 2.50 EUR.
pub fn order_request(
    customer: &str,
    sku: &str,
    quantity: i32,
    payment_method: &str,
) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        customer_id: customer.into(),
        items: vec![pb::OrderLine {
            sku: sku.into(),
            quantity,
            unit_price: Some(pb::Money {
                amount_minor: 250,
                currency: "EUR".into(),
            }),
        }],
        payment_method: payment_method.into(),
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        validate_only: false,
    }
}

pub use orderflow_proto::convert::status_name;

/// Watches an order from `after_version` until its stream ends; returns (version, status).
pub async fn watch_to_end(
    orders: &mut OrderServiceClient<BearerChannel>,
    order_id: &str,
    after_version: i64,
) -> Vec<(i64, &'static str)> {
    let mut stream = orders
        .watch_order(pb::WatchOrderRequest {
            order_id: order_id.into(),
            after_version,
        })
        .await
        .expect("WatchOrder")
        .into_inner();
    let mut seen = Vec::new();
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(update) = stream.next().await {
            let update = update.expect("stream item");
            seen.push((update.version, status_name(update.status)));
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "order {order_id}: stream did not end within 60s; saw {seen:?}"
    );
    seen
}
