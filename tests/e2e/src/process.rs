//! The whole system as real processes, for fault injection: the `orderflow` binary runs each
//! component, a private tansu broker (durable sqlite storage) serves Kafka, and PostgreSQL is
//! either the shared server (a fresh database per service) or a private cluster that a test
//! may restart. Components can be killed with SIGKILL, stopped with SIGTERM and started again
//! on the same addresses.

use orderflow_dev::tansu::{BrokerSecurity, Tansu};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use orderflow_auth::BearerChannel;
use orderflow_proto::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::v1::order_service_client::OrderServiceClient;
use orderflow_testkit::TestDatabase;
use tokio::process::{Child, Command};

/// A component the harness runs as a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proc {
    Registry,
    Order,
    Payment,
    Inventory,
    Gateway,
    /// Not started with the system: a test that reads timelines starts it.
    History,
    /// Not started with the system: a test that reads the figures starts it.
    Analytics,
    /// Not started with the system; it writes to [`ProcessSystem::notifications_file`].
    Notifications,
}

impl Proc {
    pub const ALL: [Proc; 8] = [
        Proc::Registry,
        Proc::Order,
        Proc::Payment,
        Proc::Inventory,
        Proc::Gateway,
        Proc::History,
        Proc::Analytics,
        Proc::Notifications,
    ];

    fn name(self) -> &'static str {
        match self {
            Proc::Registry => "registry",
            Proc::Order => "order",
            Proc::Payment => "payment",
            Proc::Inventory => "inventory",
            Proc::Gateway => "gateway",
            Proc::History => "history",
            Proc::Analytics => "analytics",
            Proc::Notifications => "notifications",
        }
    }
}

/// A port that is free now and reserved for this test, for a component started later.
///
/// It is drawn below Linux's ephemeral range (32768–60999): a port the kernel hands out can
/// be taken again by any outgoing connection before the component binds it. And it is
/// reserved across processes: nextest runs every test in its own process, so two tests
/// running at once could draw the same free port for components that bind it only later
/// (the multi-instance tests hold ~20 such ports each; one run in three failed with "Address
/// already in use" before the reservation). A reservation is a file created exclusively in
/// a shared folder; it lapses after an hour, far longer than any test.
fn free_port() -> u16 {
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    const LAPSES: Duration = Duration::from_secs(3600);
    let folder = std::env::temp_dir().join("orderflow-test-ports");
    std::fs::create_dir_all(&folder).expect("create the port reservation folder");
    loop {
        let random = u16::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..2].try_into().unwrap());
        let port = FIRST + random % SPAN;
        let reservation = folder.join(port.to_string());
        let lapsed = std::fs::metadata(&reservation)
            .and_then(|m| m.modified())
            .is_ok_and(|at| at.elapsed().unwrap_or_default() > LAPSES);
        if lapsed {
            let _ = std::fs::remove_file(&reservation);
        }
        let reserved = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&reservation)
            .is_ok();
        if reserved && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `orderflow` binary under test: `ORDERFLOW_BIN`, or the workspace's debug build.
pub fn orderflow_bin() -> PathBuf {
    let path = std::env::var_os("ORDERFLOW_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/orderflow"));
    assert!(
        path.exists(),
        "{} does not exist: build it with `cargo build -p orderflow-cli` (./orderflow test does)",
        path.display()
    );
    path
}

/// Sends `signal` (e.g. "TERM", "KILL") to `pid`.
fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
    assert!(status.is_ok(), "kill -{signal} {pid}");
}

/// Waits for `child` to exit, at most `timeout`; returns its exit code if it did.
async fn wait_exit(child: &mut Child, timeout: Duration) -> Option<Option<i32>> {
    tokio::time::timeout(timeout, child.wait())
        .await
        .ok()
        .map(|s| s.expect("wait").code())
}

/// A private tansu broker with durable sqlite storage, restartable on the same port.
pub struct Broker {
    dir: tempdir::TempDir,
    port: u16,
    child: Option<Child>,
    security: Option<BrokerSecurity>,
}

mod tempdir {
    //! A directory removed on drop.
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(prefix: &str) -> TempDir {
            let path = std::env::temp_dir()
                .join(format!("{prefix}-{}", orderflow_testkit::unique_suffix()));
            std::fs::create_dir_all(&path).expect("create temp dir");
            TempDir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }

        /// Keeps the directory (e.g. logs of a failed test) and returns its path.
        pub fn keep(self) -> PathBuf {
            let path = self.0.clone();
            std::mem::forget(self);
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Broker {
    pub async fn start() -> Broker {
        let mut broker = Broker::new(None);
        broker.spawn().await;
        broker
    }

    /// A broker that serves only TLS, with the certificate `credentials` has for `broker`,
    /// and admits only their SCRAM user [`crate::KAFKA_USER`].
    pub async fn start_secured(credentials: &crate::Credentials) -> Broker {
        let (cert_file, key_file) = credentials.tls.identity("broker");
        let mut broker = Broker::new(Some(BrokerSecurity {
            cert_file,
            key_file,
        }));
        broker
            .tansu()
            .create_users(&[(crate::KAFKA_USER, &credentials.kafka_password)])
            .await
            .expect("the broker's users");
        broker.spawn().await;
        broker
    }

    fn new(security: Option<BrokerSecurity>) -> Broker {
        Broker {
            dir: tempdir::TempDir::new("orderflow-broker"),
            port: free_port(),
            child: None,
            security,
        }
    }

    /// The folder of its sqlite storage and its log.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn tansu(&self) -> Tansu {
        Tansu {
            binary: orderflow_dev::tansu::binary().expect("the tansu binary"),
            data_dir: self.dir.path().to_owned(),
            address: self.address(),
            security: self.security.clone(),
            // Compacting often, as the shared test broker does (scripts/test.sh).
            maintenance_interval: Some(orderflow_dev::tansu::TEST_MAINTENANCE_INTERVAL),
        }
    }

    async fn spawn(&mut self) {
        let tansu = self.tansu();
        let command = tansu
            .command(&self.dir.path().join("broker.log"))
            .expect("the broker command");
        let child = Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        tansu
            .wait_listening(Duration::from_secs(30))
            .await
            .expect("the broker listens");
    }

    /// Stops the broker (SIGTERM, or SIGKILL when `kill`) and waits for it to exit.
    pub async fn stop(&mut self, kill: bool) {
        let mut child = self.child.take().expect("broker running");
        send_signal(child.id().expect("pid"), if kill { "KILL" } else { "TERM" });
        if wait_exit(&mut child, Duration::from_secs(20))
            .await
            .is_none()
        {
            child.kill().await.expect("kill broker");
        }
    }

    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker first");
        self.spawn().await;
    }
}

/// A private PostgreSQL cluster on its own port, which a test may restart.
pub struct PgCluster {
    dir: tempdir::TempDir,
    port: u16,
    bin: PathBuf,
}

fn pg_bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

impl PgCluster {
    /// Creates and starts a cluster with trust authentication (as the `postgres` user when
    /// running as root, since PostgreSQL refuses to run as root).
    pub async fn start() -> PgCluster {
        let cluster = PgCluster {
            dir: tempdir::TempDir::new("orderflow-pg"),
            port: free_port(),
            bin: pg_bin_dir(),
        };
        if is_root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster.dir.path())
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "chown the cluster dir to postgres"
            );
        }
        let data = cluster.data_dir();
        cluster
            .pg(&[
                "initdb",
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ])
            .await;
        cluster.ctl("start").await;
        cluster
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// A tool from the cluster's bin directory, run as the `postgres` user when we are root.
    fn tool(&self, tool: &str) -> std::process::Command {
        let program = self.bin.join(tool);
        if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        }
    }

    async fn pg(&self, args: &[&str]) {
        let mut command = Command::from(self.tool(args[0]));
        let output = command
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run a PostgreSQL tool");
        assert!(
            output.status.success(),
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    async fn ctl(&self, action: &str) {
        let data = self.data_dir();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=on",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.pg(&[
            "pg_ctl", "-D", &data, "-o", &options, "-l", &log, "-w", "-m", "fast", action,
        ])
        .await;
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the server (fast shutdown: open connections are dropped) and starts it again.
    pub async fn stop(&self) {
        let data = self.data_dir();
        self.pg(&["pg_ctl", "-D", &data, "-w", "-m", "fast", "stop"])
            .await;
    }

    pub async fn start_again(&self) {
        self.ctl("start").await;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .tool("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Where the services keep their state.
pub enum Databases {
    /// Fresh databases on the shared server, dropped at the end.
    Shared(HashMap<Proc, TestDatabase>),
    /// Databases on a private cluster the test can restart.
    Private(PgCluster),
}

impl Databases {
    pub async fn shared() -> Databases {
        let mut dbs = HashMap::new();
        for p in [
            Proc::Registry,
            Proc::Order,
            Proc::Payment,
            Proc::Inventory,
            Proc::History,
            Proc::Analytics,
            Proc::Notifications,
        ] {
            dbs.insert(p, TestDatabase::create(p.name()).await);
        }
        Databases::Shared(dbs)
    }

    pub async fn private() -> Databases {
        Databases::Private(PgCluster::start().await)
    }

    pub fn url(&self, p: Proc) -> String {
        match self {
            Databases::Shared(dbs) => dbs[&p].url().to_owned(),
            Databases::Private(cluster) => cluster.url(&format!("orderflow_{}", p.name())),
        }
    }

    pub fn cluster(&self) -> &PgCluster {
        match self {
            Databases::Private(cluster) => cluster,
            Databases::Shared(_) => panic!("this system uses the shared PostgreSQL server"),
        }
    }
}

/// How a [`ProcessSystem`] is laid out.
#[derive(Debug, Clone)]
pub struct Options {
    /// Instances of each service (order, payment, inventory) started at first.
    pub instances: u8,
    /// Instances the gateway knows the addresses of (it balances over those that are up),
    /// at least `instances`: room to scale out during a test.
    pub max_instances: u8,
    /// Partitions of every topic.
    pub partitions: i32,
    /// The services' stall threshold, when not their default.
    pub stall_threshold_secs: Option<u64>,
    /// Where every process exports its spans (OTLP/gRPC), when it should.
    pub otlp_endpoint: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            instances: 1,
            max_instances: 1,
            partitions: 1,
            stall_threshold_secs: None,
            otlp_endpoint: None,
        }
    }
}

impl Options {
    /// `n` instances of every service on topics of `partitions` partitions.
    pub fn scaled(n: u8, partitions: i32) -> Options {
        Options {
            instances: n,
            max_instances: n.max(3),
            partitions,
            stall_threshold_secs: None,
            otlp_endpoint: None,
        }
    }
}

/// One process of a component: the component and its instance number (1, 2, …). The
/// registry and the gateway run one instance.
pub type Instance = (Proc, u8);

struct Addresses {
    registry: SocketAddr,
    gateway: SocketAddr,
    /// The order and inventory services' gRPC addresses, one per instance number.
    order_grpc: Vec<SocketAddr>,
    inventory_grpc: Vec<SocketAddr>,
    history_grpc: SocketAddr,
    analytics_grpc: SocketAddr,
    admin: HashMap<Instance, SocketAddr>,
}

/// The system as processes.
pub struct ProcessSystem {
    pub broker: Broker,
    pub databases: Databases,
    pub topic_prefix: String,
    /// How a test reaches this system's broker, topics and consumer groups.
    pub kafka: orderflow_platform::KafkaArgs,
    options: Options,
    addresses: Addresses,
    children: HashMap<Instance, Child>,
    logs: Option<tempdir::TempDir>,
    /// The keys the gateway trusts, and tokens signed with them.
    pub credentials: crate::Credentials,
}

impl Drop for ProcessSystem {
    fn drop(&mut self) {
        // A failed test keeps the components' logs for the reader of the failure.
        if std::thread::panicking()
            && let Some(logs) = self.logs.take()
        {
            // The broker's log too: its directory goes with the broker.
            let _ = std::fs::copy(
                self.broker.dir.path().join("broker.log"),
                logs.path().join("broker.log"),
            );
            eprintln!("component logs kept in {}", logs.keep().display());
        }
    }
}

fn file(path: &Path) -> String {
    path.display().to_string()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const SERVICES: [Proc; 3] = [Proc::Order, Proc::Payment, Proc::Inventory];

impl ProcessSystem {
    /// Starts a broker and one instance of every component, and waits until all are healthy.
    pub async fn start(databases: Databases) -> ProcessSystem {
        ProcessSystem::start_with(databases, Options::default()).await
    }

    /// Starts a broker and the components as `options` says, and waits until all are healthy.
    pub async fn start_with(databases: Databases, options: Options) -> ProcessSystem {
        // Kafka as a deployment runs it: TLS only, and a SCRAM login for every client.
        let credentials = crate::Credentials::new();
        let broker = Broker::start_secured(&credentials).await;
        let max = options.max_instances.max(options.instances).max(1);
        let mut admin: HashMap<Instance, SocketAddr> = HashMap::new();
        for p in Proc::ALL {
            let count = if SERVICES.contains(&p) { max } else { 1 };
            for n in 1..=count {
                admin.insert((p, n), local(free_port()));
            }
        }
        let addresses = Addresses {
            registry: local(free_port()),
            gateway: local(free_port()),
            order_grpc: (0..max).map(|_| local(free_port())).collect(),
            inventory_grpc: (0..max).map(|_| local(free_port())).collect(),
            history_grpc: local(free_port()),
            analytics_grpc: local(free_port()),
            admin,
        };
        let topic_prefix = format!("t{}-", orderflow_testkit::unique_suffix());
        let mut kafka = crate::kafka_args(broker.address(), topic_prefix.clone());
        kafka.partitions = options.partitions;
        kafka.security = credentials.kafka_security();
        let mut system = ProcessSystem {
            broker,
            databases,
            topic_prefix,
            kafka,
            options: options.clone(),
            addresses,
            children: HashMap::new(),
            logs: Some(tempdir::TempDir::new("orderflow-logs")),
            credentials,
        };
        system.start_proc(Proc::Registry).await;
        for p in SERVICES {
            for n in 1..=options.instances.max(1) {
                system.start_instance(p, n).await;
            }
        }
        system.start_proc(Proc::Gateway).await;
        system
    }

    pub fn gateway_url(&self) -> String {
        format!("https://{}", self.addresses.gateway)
    }

    pub fn registry_url(&self) -> String {
        format!("http://{}", self.addresses.registry)
    }

    pub fn database_url(&self, p: Proc) -> String {
        self.databases.url(p)
    }

    /// The file the notifications service's file sink appends to (beside the logs).
    pub fn notifications_file(&self) -> PathBuf {
        self.logs
            .as_ref()
            .expect("the logs folder lives as long as the system")
            .path()
            .join("notifications.jsonl")
    }

    /// A small pool on `p`'s database, for the test's own assertions.
    pub async fn pool(&self, p: Proc) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.database_url(p))
            .await
            .expect("connect to a service database")
    }

    /// A connection to the gateway (over TLS), made when first used.
    pub fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(self.gateway_url())
            .expect("gateway url")
            .tls_config(self.credentials.client_tls())
            .expect("TLS settings")
            .connect_lazy()
    }

    /// The order API as `customer`.
    pub async fn orders(&self, customer: &str) -> OrderServiceClient<BearerChannel> {
        let bearer = self.credentials.issuer.customer(customer);
        OrderServiceClient::new(bearer.on(self.channel()))
    }

    /// The inventory API as an operator.
    pub async fn inventory(&self) -> InventoryServiceClient<BearerChannel> {
        let bearer = self.credentials.issuer.operator();
        InventoryServiceClient::new(bearer.on(self.channel()))
    }

    /// A load generator's view of the gateway: one lazily made connection, with tokens for
    /// every customer of the load.
    pub fn load_gateway(&self) -> crate::load::Gateway {
        crate::load::Gateway::lazy(
            &self.gateway_url(),
            1,
            Some(self.credentials.client_tls()),
            Some(self.credentials.issuer.clone()),
        )
        .expect("gateway url")
    }

    /// The gateway's URLs of an owner service: every instance it may reach.
    fn owner_urls(addresses: &[SocketAddr]) -> String {
        addresses
            .iter()
            .map(|a| format!("https://{a}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The TLS settings of component `name`, in its environment.
    fn tls_env(&self, name: &str) -> Vec<(&'static str, String)> {
        let tls = self.credentials.server_tls(name);
        let mut env = vec![
            (
                "ORDERFLOW_TLS_CERT_FILE",
                file(&tls.cert.expect("a certificate")),
            ),
            ("ORDERFLOW_TLS_KEY_FILE", file(&tls.key.expect("a key"))),
        ];
        if let Some(ca) = tls.client_ca {
            env.push(("ORDERFLOW_TLS_CLIENT_CA_FILE", file(&ca)));
        }
        env
    }

    fn env(&self, (p, n): Instance, instance_id: Option<&str>) -> Vec<(String, String)> {
        let a = &self.addresses;
        let admin = a.admin[&(p, n)].to_string();
        let i = usize::from(n - 1);
        let mut env: Vec<(&str, String)> = vec![
            ("ORDERFLOW_KAFKA_BROKERS", self.broker.address()),
            ("ORDERFLOW_TOPIC_PREFIX", self.topic_prefix.clone()),
            (
                "ORDERFLOW_TOPIC_PARTITIONS",
                self.options.partitions.to_string(),
            ),
            ("ORDERFLOW_REGISTRY_URL", self.registry_url()),
            (
                "ORDERFLOW_REGISTRY_USER_INFO",
                self.credentials.registry_writer.clone(),
            ),
            ("ORDERFLOW_SHUTDOWN_GRACE_SECS", "20".into()),
            ("RUST_LOG", "info".into()),
            ("ORDERFLOW_KAFKA_SECURITY_PROTOCOL", "sasl_ssl".into()),
            ("ORDERFLOW_KAFKA_CA_FILE", file(&self.credentials.tls.ca())),
            ("ORDERFLOW_KAFKA_SASL_USERNAME", crate::KAFKA_USER.into()),
            // From a file, as a deployment mounts secrets.
            (
                "ORDERFLOW_KAFKA_SASL_PASSWORD_FILE",
                file(&self.credentials.kafka_password_file),
            ),
        ];
        // Without one, the instance id is derived from the host and the admin port.
        if let Some(id) = instance_id {
            env.push(("ORDERFLOW_INSTANCE_ID", id.to_owned()));
        }
        // Every instance has its own pool; two multi-instance systems at once must still fit
        // PostgreSQL's default 100 connections (they did not with 10 per pool).
        if SERVICES.contains(&p)
            || matches!(p, Proc::History | Proc::Analytics | Proc::Notifications)
        {
            env.push(("ORDERFLOW_DATABASE_MAX_CONNECTIONS", "4".into()));
        }
        if let Some(endpoint) = &self.options.otlp_endpoint {
            env.push(("ORDERFLOW_OTLP_ENDPOINT", endpoint.clone()));
            // Spans leave every half second rather than every five.
            env.push(("OTEL_BSP_SCHEDULE_DELAY", "500".into()));
        }
        if let Some(secs) = self.options.stall_threshold_secs {
            env.push(("ORDERFLOW_STALL_THRESHOLD_SECS", secs.to_string()));
            env.push(("ORDERFLOW_PROGRESS_INTERVAL_SECS", "1".into()));
        }
        match p {
            Proc::Registry => {
                env.push((
                    "ORDERFLOW_REGISTRY_USERS_FILE",
                    file(&self.credentials.registry_users),
                ));
                env.push(("ORDERFLOW_REGISTRY_LISTEN", a.registry.to_string()));
                env.push(("ORDERFLOW_REGISTRY_DATABASE_URL", self.database_url(p)));
            }
            Proc::Order => {
                env.extend(self.tls_env("order"));
                env.push(("ORDERFLOW_ORDER_DATABASE_URL", self.database_url(p)));
                env.push(("ORDERFLOW_ORDER_GRPC_LISTEN", a.order_grpc[i].to_string()));
                env.push(("ORDERFLOW_ORDER_ADMIN_LISTEN", admin));
            }
            Proc::Payment => {
                env.push(("ORDERFLOW_PAYMENT_DATABASE_URL", self.database_url(p)));
                env.push(("ORDERFLOW_PAYMENT_ADMIN_LISTEN", admin));
            }
            Proc::Inventory => {
                env.extend(self.tls_env("inventory"));
                env.push(("ORDERFLOW_INVENTORY_DATABASE_URL", self.database_url(p)));
                env.push((
                    "ORDERFLOW_INVENTORY_GRPC_LISTEN",
                    a.inventory_grpc[i].to_string(),
                ));
                env.push(("ORDERFLOW_INVENTORY_ADMIN_LISTEN", admin));
            }
            Proc::History => {
                env.extend(self.tls_env("history"));
                env.push(("ORDERFLOW_HISTORY_DATABASE_URL", self.database_url(p)));
                env.push(("ORDERFLOW_HISTORY_GRPC_LISTEN", a.history_grpc.to_string()));
                env.push(("ORDERFLOW_HISTORY_ADMIN_LISTEN", admin));
            }
            Proc::Analytics => {
                env.extend(self.tls_env("analytics"));
                env.push(("ORDERFLOW_ANALYTICS_DATABASE_URL", self.database_url(p)));
                env.push((
                    "ORDERFLOW_ANALYTICS_GRPC_LISTEN",
                    a.analytics_grpc.to_string(),
                ));
                env.push(("ORDERFLOW_ANALYTICS_ADMIN_LISTEN", admin));
            }
            Proc::Notifications => {
                env.push(("ORDERFLOW_NOTIFICATIONS_DATABASE_URL", self.database_url(p)));
                env.push(("ORDERFLOW_NOTIFICATIONS_ADMIN_LISTEN", admin));
                env.push(("ORDERFLOW_NOTIFICATIONS_SINK", "file".into()));
                env.push((
                    "ORDERFLOW_NOTIFICATIONS_FILE",
                    file(&self.notifications_file()),
                ));
            }
            Proc::Gateway => {
                env.push(("ORDERFLOW_GATEWAY_LISTEN", a.gateway.to_string()));
                env.extend(self.tls_env("gateway"));
                let (cert, key) = self.credentials.tls.identity("gateway");
                env.push(("ORDERFLOW_OWNER_CA_FILE", file(&self.credentials.tls.ca())));
                env.push(("ORDERFLOW_OWNER_CERT_FILE", file(&cert)));
                env.push(("ORDERFLOW_OWNER_KEY_FILE", file(&key)));
                env.push((
                    "ORDERFLOW_JWKS_FILE",
                    self.credentials.jwks.display().to_string(),
                ));
                env.push(("ORDERFLOW_GATEWAY_ADMIN_LISTEN", admin));
                env.push(("ORDERFLOW_ORDER_URL", Self::owner_urls(&a.order_grpc)));
                env.push((
                    "ORDERFLOW_INVENTORY_URL",
                    Self::owner_urls(&a.inventory_grpc),
                ));
                env.push((
                    "ORDERFLOW_HISTORY_URL",
                    Self::owner_urls(std::slice::from_ref(&a.history_grpc)),
                ));
                env.push((
                    "ORDERFLOW_ANALYTICS_URL",
                    Self::owner_urls(std::slice::from_ref(&a.analytics_grpc)),
                ));
            }
        }
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// The base URL of `p`'s admin endpoint (`/health`, `/metrics`), its first instance.
    pub fn admin_url(&self, p: Proc) -> String {
        self.admin_url_of((p, 1))
    }

    /// The base URL of an instance's admin endpoint.
    pub fn admin_url_of(&self, (p, n): Instance) -> String {
        match p {
            Proc::Registry => format!("http://{}", self.addresses.registry),
            _ => format!("http://{}", self.addresses.admin[&(p, n)]),
        }
    }

    /// The log file of `p`'s first instance (every run appends to it).
    pub fn log_path(&self, p: Proc) -> PathBuf {
        self.log_path_of((p, 1))
    }

    /// The log file of an instance.
    pub fn log_path_of(&self, (p, n): Instance) -> PathBuf {
        let name = if n == 1 {
            format!("{}.log", p.name())
        } else {
            format!("{}-{n}.log", p.name())
        };
        self.logs.as_ref().expect("logs").path().join(name)
    }

    /// Starts `p` (its first instance) and waits until it reports itself healthy.
    pub async fn start_proc(&mut self, p: Proc) {
        self.start_instance(p, 1).await;
    }

    /// Starts instance `n` of `p`, its id derived from the host and its admin port, and
    /// waits until it reports itself healthy.
    pub async fn start_instance(&mut self, p: Proc, n: u8) {
        self.spawn((p, n), None);
        self.wait_healthy_of((p, n)).await;
    }

    /// Starts instance `n` of `p` with the instance id `id`, and waits until it is healthy.
    pub async fn start_instance_as(&mut self, p: Proc, n: u8, id: &str) {
        self.spawn((p, n), Some(id));
        self.wait_healthy_of((p, n)).await;
    }

    fn spawn(&mut self, instance: Instance, instance_id: Option<&str>) {
        assert!(
            !self.children.contains_key(&instance),
            "{instance:?} is already running"
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path_of(instance))
            .unwrap();
        let mut command = Command::new(orderflow_bin());
        command
            .args(["serve", instance.0.name()])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .envs(self.env(instance, instance_id))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        let child = command.spawn().expect("start a component");
        self.children.insert(instance, child);
    }

    /// Waits until `p` answers 200 on `/health` (failing fast, with its log, if it exited).
    pub async fn wait_healthy(&mut self, p: Proc) {
        self.wait_healthy_of((p, 1)).await;
    }

    /// Waits until an instance answers 200 on `/health` (failing fast if it exited).
    pub async fn wait_healthy_of(&mut self, instance: Instance) {
        let url = format!("{}/health", self.admin_url_of(instance));
        let log = self.log_path_of(instance);
        let children = &mut self.children;
        let died = || {
            let status = children.get_mut(&instance)?.try_wait().ok().flatten()?;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Some(format!(
                "{instance:?} exited ({status}) during start-up; log:\n{}",
                tail(&text)
            ))
        };
        crate::wait_healthy_at(
            &format!("{instance:?}"),
            &url,
            Duration::from_secs(90),
            died,
        )
        .await;
    }

    /// The instances running now.
    pub fn running(&self) -> Vec<Instance> {
        let mut running: Vec<Instance> = self.children.keys().copied().collect();
        running.sort_by_key(|(p, n)| (p.name(), *n));
        running
    }

    /// Kills `p` with SIGKILL: no graceful shutdown, whatever was in flight is cut off.
    pub async fn kill(&mut self, p: Proc) {
        self.kill_instance(p, 1).await;
    }

    /// Kills instance `n` of `p` with SIGKILL.
    pub async fn kill_instance(&mut self, p: Proc, n: u8) {
        let mut child = self.children.remove(&(p, n)).expect("running");
        send_signal(child.id().expect("pid"), "KILL");
        let _ = wait_exit(&mut child, Duration::from_secs(10)).await;
    }

    /// Stops `p` with SIGTERM and returns its exit code (None if it had to be killed).
    pub async fn terminate(&mut self, p: Proc) -> Option<i32> {
        self.terminate_instance(p, 1).await
    }

    /// Stops instance `n` of `p` with SIGTERM and returns its exit code.
    pub async fn terminate_instance(&mut self, p: Proc, n: u8) -> Option<i32> {
        let mut child = self.children.remove(&(p, n)).expect("running");
        send_signal(child.id().expect("pid"), "TERM");
        match wait_exit(&mut child, Duration::from_secs(30)).await {
            Some(code) => code,
            None => {
                child.kill().await.expect("kill");
                None
            }
        }
    }

    /// Sends `signal` ("STOP", "CONT") to instance `n` of `p`, which keeps running.
    pub fn signal_instance(&self, p: Proc, n: u8, signal: &str) {
        let child = self.children.get(&(p, n)).expect("running");
        send_signal(child.id().expect("pid"), signal);
    }
}

/// The last 40 lines of a log.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
