//! Running the whole system on this machine: `up` starts what is not already running (the
//! tansu broker with durable sqlite storage, the registry with every schema registered, the
//! services and the gateway), `down` stops it, `status` shows it. State lives in
//! `$ORDERFLOW_HOME` (default `.orderflow/`): pid files, logs and the broker's data.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use orderflow_platform::KafkaArgs;
use orderflow_platform::config::{self, ServeArgs};

#[derive(Debug, Clone, Args)]
pub struct HomeArgs {
    /// Where pid files, logs and broker data live.
    #[arg(long, env = "ORDERFLOW_HOME", default_value = ".orderflow")]
    pub home: PathBuf,
}

/// The production `orderflow` binary that runs each component: `ORDERFLOW_BIN`, else the one
/// built beside this binary.
fn orderflow_binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("ORDERFLOW_BIN") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?.with_file_name("orderflow"),
    };
    anyhow::ensure!(
        path.exists(),
        "no orderflow binary at {}: build it with `cargo build --release -p orderflow-cli` (./orderflow does)",
        path.display()
    );
    Ok(path)
}

/// Settings of `orderflow-dev broker`.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Where the broker keeps its sqlite storage and its log.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The address to listen on (`host:port`).
    #[arg(long)]
    pub listen: String,
    /// How often the broker compacts the compacted topics (and does its other
    /// maintenance), e.g. `10s`; tansu's default is every ten minutes.
    #[arg(long, value_parser = config::parse_duration, conflicts_with = "for_tests")]
    pub maintenance_interval: Option<Duration>,
    /// A broker for the test suite: it compacts as often as the fault tests' brokers do
    /// (`TEST_MAINTENANCE_INTERVAL` in dev/src/tansu.rs), so that every test meets
    /// compaction, as on any broker, rather than only those that happen to run at the
    /// ten-minute mark.
    #[arg(long)]
    pub for_tests: bool,
}

impl BrokerArgs {
    /// The maintenance period asked for: the test brokers' with `--for-tests`, else
    /// `--maintenance-interval`, else tansu's default (`None`).
    fn maintenance_interval(&self) -> Option<Duration> {
        if self.for_tests {
            Some(crate::tansu::TEST_MAINTENANCE_INTERVAL)
        } else {
            self.maintenance_interval
        }
    }
}

/// Runs a tansu broker in the foreground until SIGTERM or Ctrl-C, then stops it.
pub async fn broker(args: BrokerArgs) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(&args.data_dir)?;
    let maintenance_interval = args.maintenance_interval();
    let tansu = crate::tansu::Tansu {
        binary: crate::tansu::binary()?,
        data_dir: data_dir.clone(),
        address: args.listen,
        security: None,
        maintenance_interval,
    };
    let mut child = tokio::process::Command::from(tansu.command(&data_dir.join("broker.log"))?)
        .kill_on_drop(true)
        .spawn()?;
    tansu.wait_listening(Duration::from_secs(30)).await?;
    say(format!("broker (tansu) listening at {}", tansu.address));
    let shutdown = orderflow_platform::shutdown::on_signal();
    tokio::select! {
        status = child.wait() => anyhow::bail!("the broker exited: {}", status?),
        _ = shutdown.cancelled() => {
            if let Some(pid) = child.id() {
                signal(pid, "TERM");
            }
            let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
            Ok(())
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// The tansu broker binary (scripts/bootstrap.sh builds and caches it).
    #[arg(long, env = "ORDERFLOW_TANSU_BIN")]
    pub tansu_bin: Option<PathBuf>,
    /// Use a broker that is already running at the configured address instead of tansu.
    #[arg(long)]
    pub external_broker: bool,
    /// Instances of each service (order, payment, inventory). Instance k > 1 listens on the
    /// first instance's ports plus 10 × (k − 1); the gateway balances over all of them.
    #[arg(long, env = "ORDERFLOW_INSTANCES", default_value_t = 1)]
    pub instances: u8,
    /// Partitions of each event topic `up` creates (topics that exist keep theirs), so that
    /// several instances share the work.
    // Its own id: `bench` also takes the services' Kafka settings, whose `partitions` is
    // `--topic-partitions`.
    #[arg(
        long = "partitions",
        id = "up-partitions",
        env = "ORDERFLOW_UP_PARTITIONS",
        default_value_t = 6
    )]
    pub partitions: i32,
}

/// One process `up` manages.
struct Component {
    /// `order` for a service's first instance, `order-2` for its second, and so on.
    name: String,
    /// Arguments after the orderflow binary (or the tansu binary for the broker).
    args: Vec<String>,
    /// How to tell that it is up.
    probe: Probe,
}

enum Probe {
    Http(String),
    Tcp(String),
}

impl Probe {
    async fn ok(&self) -> bool {
        match self {
            Probe::Http(url) => reqwest::Client::new()
                .get(url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
            Probe::Tcp(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
        }
    }

    fn describe(&self) -> &str {
        match self {
            Probe::Http(url) | Probe::Tcp(url) => url,
        }
    }
}

/// Each component's effective settings: its flags' defaults, the configuration file and the
/// environment, the same layers `orderflow serve <name>` reads in the child process, so `up`
/// probes exactly where the child listens.
fn settings<T: Args>(name: &'static str) -> anyhow::Result<T> {
    let no_flags: [&str; 0] = [];
    let sources = config::Sources::process(no_flags);
    Ok(config::load::<ServeArgs<T>>(name, &sources)?.component)
}

/// The notifications service's database, as its settings name it (`up` connects to it as the
/// server's administrator to provision it; so does the benchmark's notifications check).
pub fn notifications_database_url() -> anyhow::Result<orderflow_platform::Secret> {
    Ok(settings::<orderflow_notifications::NotificationsArgs>("notifications")?.database_url)
}

/// The history service's database, as its settings (flags' defaults, environment) name it.
pub fn history_database_url() -> anyhow::Result<orderflow_platform::Secret> {
    Ok(settings::<orderflow_history::HistoryArgs>("history")?.database_url)
}

/// The Kafka settings the services use (the order service's, read as it reads them), with
/// the local broker's TLS and the operator's login when `up` secured it.
fn kafka_settings(home: &Path) -> anyhow::Result<KafkaArgs> {
    let mut kafka = settings::<orderflow_order::OrderArgs>("order")?
        .common
        .bus
        .kafka;
    secure_for_tools(home, &mut kafka)?;
    Ok(kafka)
}

/// Gives `kafka` the login of the local tools (`status`, `bench`) to the broker `up` secured
/// in `home`; leaves settings that name their own security, or an unsecured broker, alone.
pub fn secure_for_tools(home: &Path, kafka: &mut KafkaArgs) -> anyhow::Result<()> {
    LocalKafka::secure(home, kafka, LocalKafka::OPERATOR)
}

/// The local broker's security: it serves only TLS (its certificate from the local CA) and
/// admits only SCRAM users `up` makes, one per component and one for the tools (`status`,
/// `bench`, `dlq`), their passwords in `<home>/secrets/kafka-<name>-password`. tansu has no
/// ACLs, so the users are not limited to their topics (compose's Apache Kafka is).
struct LocalKafka;

impl LocalKafka {
    /// The user of `orderflow status`, `bench` and the `dlq` tools.
    const OPERATOR: &str = "operator";
    /// Every user, by component.
    const USERS: [&str; 8] = [
        "order",
        "payment",
        "inventory",
        "history",
        "analytics",
        "notifications",
        "gateway",
        LocalKafka::OPERATOR,
    ];

    /// The file that lists the users once they are stored in the broker: its presence means
    /// the local broker is secured.
    fn marker(home: &Path) -> PathBuf {
        home.join("secrets/kafka-users")
    }

    /// The name of `user`'s password in `<home>/secrets` ([`secret`]).
    fn password_name(user: &str) -> String {
        format!("kafka-{user}-password")
    }

    fn password_file(home: &Path, user: &str) -> PathBuf {
        home.join("secrets").join(LocalKafka::password_name(user))
    }

    fn username(user: &str) -> String {
        format!("orderflow-{user}")
    }

    /// Whether the Kafka settings are the defaults `up` may secure (nothing configured).
    fn applies(kafka: &KafkaArgs) -> bool {
        kafka.security.protocol == orderflow_platform::config::SecurityProtocol::Plaintext
            && kafka.security.username.is_none()
    }

    /// Stores every user in the stopped broker's storage when the marker does not list them.
    async fn ensure_users(home: &Path, tansu: &crate::tansu::Tansu) -> anyhow::Result<()> {
        let listed = LocalKafka::USERS.join("\n");
        if std::fs::read_to_string(LocalKafka::marker(home)).is_ok_and(|m| m.trim() == listed) {
            return Ok(());
        }
        let mut users = Vec::new();
        for user in LocalKafka::USERS {
            let password = secret(home, &LocalKafka::password_name(user))?;
            users.push((LocalKafka::username(user), password));
        }
        let pairs: Vec<(&str, &str)> = users
            .iter()
            .map(|(name, password)| (name.as_str(), password.as_str()))
            .collect();
        tansu.create_users(&pairs).await?;
        write_private(&LocalKafka::marker(home), &listed)?;
        say(format!(
            "Kafka users stored in the broker: {}",
            users
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(())
    }

    /// Gives `kafka` the local broker's TLS and `user`'s login, when `up` secured the broker
    /// and nothing else is configured.
    fn secure(home: &Path, kafka: &mut KafkaArgs, user: &str) -> anyhow::Result<()> {
        if !LocalKafka::applies(kafka) || !LocalKafka::marker(home).exists() {
            return Ok(());
        }
        let password = std::fs::read_to_string(LocalKafka::password_file(home, user))
            .with_context(|| format!("the local Kafka password of {user}"))?;
        kafka.security = orderflow_platform::config::KafkaSecurityArgs {
            protocol: orderflow_platform::config::SecurityProtocol::SaslSsl,
            ca_file: Some(LocalTls::files(home).ca()),
            mechanism: orderflow_platform::config::ScramMechanism::ScramSha512,
            username: Some(LocalKafka::username(user)),
            password: Some(password.trim().into()),
        };
        Ok(())
    }

    /// The environment that gives component `user` its login to the secured local broker
    /// (the password by file, never on a command line).
    fn env(home: &Path, user: &str) -> Vec<(&'static str, String)> {
        vec![
            ("ORDERFLOW_KAFKA_SECURITY_PROTOCOL", "sasl_ssl".into()),
            ("ORDERFLOW_KAFKA_CA_FILE", path(&LocalTls::files(home).ca())),
            ("ORDERFLOW_KAFKA_SASL_USERNAME", LocalKafka::username(user)),
            (
                "ORDERFLOW_KAFKA_SASL_PASSWORD_FILE",
                path(&LocalKafka::password_file(home, user)),
            ),
        ]
    }
}

fn serve(component: &str) -> Vec<String> {
    vec!["serve".into(), component.into()]
}

/// The services that consume events (order, payment and inventory run as several instances),
/// with their input topics.
const SERVICES: [&str; 6] = [
    "order",
    "payment",
    "inventory",
    "history",
    "analytics",
    "notifications",
];

/// Makes each service's database owned by a role of its own (`orderflow_<service>`, not a
/// superuser, its password kept in `<home>/secrets`), for every service whose database URL
/// is the default's, as the `postgres` superuser; returns the URL each such service connects
/// with. A service given other credentials is left as configured.
async fn owned_databases(
    home: &Path,
) -> anyhow::Result<std::collections::HashMap<&'static str, orderflow_platform::Secret>> {
    let urls = [
        (
            "registry",
            settings::<orderflow_registry::RegistryArgs>("registry")?.database_url,
        ),
        (
            "order",
            settings::<orderflow_order::OrderArgs>("order")?.database_url,
        ),
        (
            "payment",
            settings::<orderflow_payment::PaymentArgs>("payment")?.database_url,
        ),
        (
            "inventory",
            settings::<orderflow_inventory::InventoryArgs>("inventory")?.database_url,
        ),
        (
            "history",
            settings::<orderflow_history::HistoryArgs>("history")?.database_url,
        ),
        (
            "analytics",
            settings::<orderflow_analytics::AnalyticsArgs>("analytics")?.database_url,
        ),
        (
            "notifications",
            settings::<orderflow_notifications::NotificationsArgs>("notifications")?.database_url,
        ),
    ];
    let mut owned = std::collections::HashMap::new();
    for (service, url) in urls {
        let admin: sqlx::postgres::PgConnectOptions = url.expose().parse()?;
        let Some(database) = admin.get_database().map(str::to_owned) else {
            continue;
        };
        if admin.get_username() != "postgres" {
            continue;
        }
        let owner = orderflow_db::Owner {
            database,
            role: format!("orderflow_{service}"),
            password: secret(home, &format!("{service}-database-password"))?,
        };
        orderflow_db::provision(&admin, &owner)
            .await
            .with_context(|| format!("cannot set up the {service} database and its role"))?;
        owned.insert(service, orderflow_platform::Secret::new(owner.url(&admin)));
    }
    let mut roles: Vec<String> = owned.keys().map(|s| format!("orderflow_{s}")).collect();
    roles.sort();
    say(format!(
        "databases owned by their services' roles: {}",
        roles.join(", ")
    ));
    Ok(owned)
}

/// The registry's users `up` makes: the services' (write: they register their schemas) and
/// an admin (`up` sets the subjects' levels), in `<home>/secrets/registry-users`.
struct RegistryUsers {
    /// `user:password` of the services' user.
    writer: String,
    /// `user:password` of the admin.
    admin: String,
}

impl RegistryUsers {
    fn file(home: &Path) -> PathBuf {
        home.join("secrets/registry-users")
    }

    fn ensure(home: &Path) -> anyhow::Result<RegistryUsers> {
        let users = RegistryUsers {
            writer: format!(
                "orderflow-services:{}",
                secret(home, "registry-services-password")?
            ),
            admin: format!(
                "orderflow-admin:{}",
                secret(home, "registry-admin-password")?
            ),
        };
        write_private(
            &RegistryUsers::file(home),
            &format!(
                "# orderflow up: the registry's users (name:password:role)\n{}:write\n{}:admin\n",
                users.writer, users.admin
            ),
        )?;
        Ok(users)
    }
}

/// The secret named `name` in `<home>/secrets`, made (random, readable by its owner only)
/// when absent.
fn secret(home: &Path, name: &str) -> anyhow::Result<String> {
    let path = home.join("secrets").join(name);
    if let Ok(value) = std::fs::read_to_string(&path) {
        return Ok(value.trim().to_owned());
    }
    let value = uuid::Uuid::new_v4().simple().to_string();
    write_private(&path, &value)?;
    Ok(value)
}

/// Writes `text` to `path` (its folder made if absent), readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The certificates `up` makes (`<home>/tls`), and the flags that give them to a component
/// whose settings name none of their own.
struct LocalTls {
    files: orderflow_tls::LocalCaFiles,
}

impl LocalTls {
    /// Components with a certificate of the local CA.
    const NAMES: [&str; 6] = [
        "gateway",
        "order",
        "inventory",
        "history",
        "analytics",
        "broker",
    ];

    fn dir(home: &Path) -> PathBuf {
        home.join("tls")
    }

    /// The names of the files `ensure` makes (they need not exist yet).
    fn files(home: &Path) -> orderflow_tls::LocalCaFiles {
        orderflow_tls::LocalCaFiles::at(&LocalTls::dir(home))
    }

    /// Makes the CA and the certificates when any is missing.
    fn ensure(home: &Path) -> anyhow::Result<()> {
        orderflow_tls::LocalCa::ensure(&LocalTls::dir(home), &LocalTls::NAMES)?;
        Ok(())
    }

    /// Flags for `name` to serve TLS with its local certificate; the services also ask
    /// their callers for one. None when its settings name a certificate or plaintext.
    fn serve(&self, name: &str, settings: &orderflow_tls::ServerTls) -> Vec<String> {
        if settings.plaintext || settings.cert.is_some() {
            return Vec::new();
        }
        let (cert, key) = self.files.identity(name);
        let mut args = vec![
            "--tls-cert-file".into(),
            path(&cert),
            "--tls-key-file".into(),
            path(&key),
        ];
        if name != "gateway" && settings.client_ca.is_none() {
            args.extend(["--tls-client-ca-file".into(), path(&self.files.ca())]);
        }
        args
    }

    /// The URL of a service's gRPC API at `addr`.
    fn url(&self, addr: SocketAddr, settings: &orderflow_tls::ServerTls) -> String {
        let scheme = if settings.plaintext { "http" } else { "https" };
        format!("{scheme}://{addr}")
    }
}

/// What a client of the gateway at `url` trusts: for an `https://` URL, the local CA `up`
/// made in `home`.
pub fn client_tls(
    home: &Path,
    url: &str,
) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    if !url.starts_with("https://") {
        return Ok(None);
    }
    let tls = orderflow_tls::ClientTls {
        ca: LocalTls::files(home).ca(),
        identity: None,
    };
    let config = tls
        .config()
        .map_err(|e| e.context("run `./orderflow up` first: it makes the local CA"))?;
    Ok(Some(config))
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// `addr` moved by `10 × (instance − 1)` ports: where instance `instance` listens.
fn shifted(addr: SocketAddr, instance: u8) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port() + 10 * u16::from(instance - 1))
}

/// Every process of the system, registry first and gateway last, with `instances` of each
/// service.
fn components(instances: u8, home: &Path) -> anyhow::Result<Vec<Component>> {
    let instances = instances.max(1);
    let registry = settings::<orderflow_registry::RegistryArgs>("registry")?;
    let order = settings::<orderflow_order::OrderArgs>("order")?;
    let payment = settings::<orderflow_payment::PaymentArgs>("payment")?;
    let inventory = settings::<orderflow_inventory::InventoryArgs>("inventory")?;
    let history = settings::<orderflow_history::HistoryArgs>("history")?;
    let analytics = settings::<orderflow_analytics::AnalyticsArgs>("analytics")?;
    let notifications = settings::<orderflow_notifications::NotificationsArgs>("notifications")?;
    let gateway = settings::<orderflow_gateway::GatewayArgs>("gateway")?;
    let health = |addr: SocketAddr| Probe::Http(format!("http://{addr}/health"));
    // The files only: `up` makes them; `down` and `status` list components without them.
    let tls = LocalTls {
        files: LocalTls::files(home),
    };
    let mut registry_args = serve("registry");
    if registry.users_file.is_none() && !registry.insecure_no_auth {
        registry_args.extend(["--users-file".into(), path(&RegistryUsers::file(home))]);
    }
    let mut components = vec![Component {
        name: "registry".into(),
        args: registry_args,
        probe: health(registry.listen),
    }];
    let mut order_urls = Vec::new();
    let mut inventory_urls = Vec::new();
    for k in 1..=instances {
        let name = |service: &str| {
            if k == 1 {
                service.to_owned()
            } else {
                format!("{service}-{k}")
            }
        };
        // The first instance takes its settings as they are; the others move its ports.
        let moved = |args: &mut Vec<String>, flag: &str, addr: SocketAddr| {
            if k > 1 {
                args.extend([flag.to_owned(), shifted(addr, k).to_string()]);
            }
        };
        let mut args = serve("order");
        moved(&mut args, "--admin-listen", order.admin_listen);
        moved(&mut args, "--grpc-listen", order.grpc_listen);
        args.extend(tls.serve("order", &order.tls));
        order_urls.push(tls.url(shifted(order.grpc_listen, k), &order.tls));
        components.push(Component {
            name: name("order"),
            args,
            probe: health(shifted(order.admin_listen, k)),
        });
        let mut args = serve("payment");
        moved(&mut args, "--admin-listen", payment.admin_listen);
        components.push(Component {
            name: name("payment"),
            args,
            probe: health(shifted(payment.admin_listen, k)),
        });
        let mut args = serve("inventory");
        moved(&mut args, "--admin-listen", inventory.admin_listen);
        moved(&mut args, "--grpc-listen", inventory.grpc_listen);
        args.extend(tls.serve("inventory", &inventory.tls));
        inventory_urls.push(tls.url(shifted(inventory.grpc_listen, k), &inventory.tls));
        components.push(Component {
            name: name("inventory"),
            args,
            probe: health(shifted(inventory.admin_listen, k)),
        });
    }
    // One history, one analytics and one notifications instance: the first two serve reads
    // only, and each group spreads the work over more instances the same way if they are
    // started by hand.
    let mut args = serve("history");
    args.extend(tls.serve("history", &history.tls));
    let history_url = tls.url(history.grpc_listen, &history.tls);
    components.push(Component {
        name: "history".into(),
        args,
        probe: health(history.admin_listen),
    });
    let mut args = serve("analytics");
    args.extend(tls.serve("analytics", &analytics.tls));
    let analytics_url = tls.url(analytics.grpc_listen, &analytics.tls);
    components.push(Component {
        name: "analytics".into(),
        args,
        probe: health(analytics.admin_listen),
    });
    // The notifications go to a file beside the logs, unless another sink or file is set.
    let mut args = serve("notifications");
    if notifications.sink.kind == orderflow_notifications::SinkKind::File
        && notifications.sink.file == Path::new(orderflow_notifications::DEFAULT_FILE)
    {
        args.extend(["--file".into(), path(&notifications_file(home))]);
    }
    components.push(Component {
        name: "notifications".into(),
        args,
        probe: health(notifications.admin_listen),
    });
    let mut args = serve("gateway");
    // Tokens signed with the development key, unless the gateway is set up otherwise.
    let auth = &gateway.auth;
    if auth.jwks_file.is_none() && auth.jwks_url.is_none() && !auth.insecure_no_auth {
        let jwks = home.join(orderflow_auth::DEV_JWKS_FILE);
        args.extend(["--jwks-file".into(), path(&jwks)]);
    }
    args.extend(tls.serve("gateway", &gateway.tls));
    if gateway.owner_ca.is_none() && !order.tls.plaintext {
        let (cert, key) = tls.files.identity("gateway");
        args.extend(["--owner-ca-file".into(), path(&tls.files.ca())]);
        args.extend(["--owner-cert-file".into(), path(&cert)]);
        args.extend(["--owner-key-file".into(), path(&key)]);
    }
    args.extend(["--order-url".into(), order_urls.join(",")]);
    args.extend(["--inventory-url".into(), inventory_urls.join(",")]);
    args.extend(["--history-url".into(), history_url]);
    args.extend(["--analytics-url".into(), analytics_url]);
    components.push(Component {
        name: "gateway".into(),
        args,
        probe: health(gateway.admin_listen),
    });
    Ok(components)
}

/// The `/metrics` endpoint of each service and the gateway of the local system in `home`
/// (every instance `up` started there), by component name, for the benchmark's reads.
pub fn metrics_endpoints(home: &Path) -> anyhow::Result<Vec<(String, String)>> {
    Ok(components(started_instances(home), home)?
        .into_iter()
        .filter_map(|c| match c.probe {
            Probe::Http(url) => {
                Some((c.name, url.strip_suffix("/health")?.to_owned() + "/metrics"))
            }
            Probe::Tcp(_) => None,
        })
        .collect())
}

/// Where the notifications of a local system go (the file sink's file).
pub fn notifications_file(home: &Path) -> PathBuf {
    home.join("notifications.jsonl")
}

/// The instances of each service that `up` started, from the pid files it left.
fn started_instances(home: &Path) -> u8 {
    let names = std::fs::read_dir(home.join("run"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".pid")
                .map(str::to_owned)
        })
        .collect::<Vec<_>>();
    names
        .iter()
        .filter_map(|n| n.rsplit_once('-')?.1.parse::<u8>().ok())
        .max()
        .unwrap_or(1)
}

fn say(message: impl AsRef<str>) {
    eprintln!("[orderflow] {}", message.as_ref());
}

fn pid_file(home: &Path, name: &str) -> PathBuf {
    home.join("run").join(format!("{name}.pid"))
}

fn read_pid(home: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(pid_file(home, name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; its state letter is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Starts `command` detached from this terminal (its own process group, no stdin) and
/// records its pid under `<home>/run/<name>.pid`.
fn spawn(home: &Path, name: &str, mut command: std::process::Command) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(home.join("run"))?;
    let child = command
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {name} ({:?}): {e}", command.get_program()))?;
    std::fs::write(pid_file(home, name), child.id().to_string())?;
    Ok(child.id())
}

/// `program args`, its output appended to `<home>/logs/<name>.log`.
fn logged(
    home: &Path,
    name: &str,
    program: &Path,
    args: &[String],
) -> anyhow::Result<std::process::Command> {
    std::fs::create_dir_all(home.join("logs"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("logs").join(format!("{name}.log")))?;
    let mut command = std::process::Command::new(program);
    command.args(args).stdout(log.try_clone()?).stderr(log);
    Ok(command)
}

async fn wait_until(
    what: &str,
    probe: &Probe,
    pid: Option<u32>,
    log: &Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_note = Instant::now();
    while started.elapsed() < timeout {
        if probe.ok().await {
            return Ok(());
        }
        if let Some(pid) = pid.filter(|p| !alive(*p)) {
            anyhow::bail!(
                "{what} (pid {pid}) exited during start-up; see {}",
                log.display()
            );
        }
        if last_note.elapsed() > Duration::from_secs(5) {
            say(format!(
                "  still waiting for {what} at {} ({}s)",
                probe.describe(),
                started.elapsed().as_secs()
            ));
            last_note = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!(
        "{what} did not become healthy at {} within {timeout:?}; see {}",
        probe.describe(),
        log.display()
    )
}

fn broker_address(kafka: &KafkaArgs) -> String {
    kafka
        .brokers
        .split(',')
        .next()
        .unwrap_or("127.0.0.1:9092")
        .trim()
        .to_owned()
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let home = std::path::absolute(&args.home.home)?;
    std::fs::create_dir_all(&home)?;
    let configured = settings::<orderflow_order::OrderArgs>("order")?
        .common
        .bus
        .kafka;
    // The local broker is secured unless the Kafka settings name a broker's security of their
    // own, or the broker is someone else's.
    let secure_broker = !args.external_broker && LocalKafka::applies(&configured);
    if !secure_broker {
        let _ = std::fs::remove_file(LocalKafka::marker(&home));
    }
    let orderflow = orderflow_binary()?;
    // The local CA first: the broker serves TLS with its certificate.
    LocalTls::ensure(&home)?;

    // 1. The broker.
    let broker = broker_address(&configured);
    let broker_probe = Probe::Tcp(broker.clone());
    if broker_probe.ok().await {
        say(format!("broker already running at {broker}"));
    } else if args.external_broker {
        anyhow::bail!("no broker answers at {broker} (--external-broker was given)");
    } else {
        let binary = match args.tansu_bin.clone() {
            Some(binary) => binary,
            None => crate::tansu::binary()?,
        };
        let (cert_file, key_file) = LocalTls::files(&home).identity("broker");
        let tansu = crate::tansu::Tansu {
            binary,
            data_dir: home.join("broker"),
            address: broker.clone(),
            security: secure_broker.then_some(crate::tansu::BrokerSecurity {
                cert_file,
                key_file,
            }),
            maintenance_interval: None,
        };
        if secure_broker {
            LocalKafka::ensure_users(&home, &tansu).await?;
        }
        let log = home.join("logs/broker.log");
        std::fs::create_dir_all(home.join("logs"))?;
        let pid = spawn(&home, "broker", tansu.command(&log)?)?;
        say(format!(
            "starting broker (tansu, durable sqlite storage in {}) at {broker}{}",
            tansu.data_dir.display(),
            if secure_broker {
                ", TLS and SCRAM logins only"
            } else {
                ""
            }
        ));
        wait_until(
            "broker",
            &broker_probe,
            Some(pid),
            &log,
            Duration::from_secs(30),
        )
        .await?;
    }

    // 2. Topics (the services also create what they need; doing it here shows it early).
    let mut kafka = configured;
    secure_for_tools(&home, &mut kafka)?;
    let topics = kafka.topics();
    let names: Vec<String> = topics.all().iter().map(|t| t.to_string()).collect();
    let mut with_partitions = kafka.clone();
    with_partitions.partitions = args.partitions;
    orderflow_platform::kafka::ensure_topics(&with_partitions, &names).await?;
    say(format!(
        "topics ready ({} partitions where `up` created them): {}",
        args.partitions,
        names.join(", ")
    ));

    // 3. The development signing key the gateway trusts (`orderflow token` signs with it).
    let key = home.join(orderflow_auth::DEV_SIGNING_KEY_FILE);
    let signing =
        orderflow_auth::SigningKey::ensure(&key, &home.join(orderflow_auth::DEV_JWKS_FILE))?;
    say(format!(
        "development signing key {} (kid {}): `./orderflow token --customer alice` prints a token",
        key.display(),
        signing.kid()
    ));

    // 4. Each service's database, owned by a role of its own; the registry's users; the
    //    local CA and the components' certificates.
    let databases = owned_databases(&home).await?;
    let registry_users = RegistryUsers::ensure(&home)?;

    // 5. The registry, then the schemas, then the services that need both.
    let components = components(args.instances, &home)?;
    for component in &components {
        if component.probe.ok().await {
            say(format!("{} already running", component.name));
        } else {
            let mut command = logged(&home, &component.name, &orderflow, &component.args)?;
            // The name before any instance number: `order-2` is an order service.
            let service = component.name.split('-').next().unwrap_or_default();
            if let Some(url) = databases.get(service) {
                // In the environment, not on the command line: it holds a password.
                let variable = format!("ORDERFLOW_{}_DATABASE_URL", service.to_uppercase());
                command.env(variable, url.expose());
            }
            // The registry user the services and the gateway act as, unless one is configured.
            if component.name != "registry"
                && std::env::var_os("ORDERFLOW_REGISTRY_USER_INFO").is_none()
            {
                command.env("ORDERFLOW_REGISTRY_USER_INFO", &registry_users.writer);
            }
            // Its own login to the secured local broker.
            if kafka.security.principal().is_some() && component.name != "registry" {
                command.envs(LocalKafka::env(&home, service));
            }
            let pid = spawn(&home, &component.name, command)?;
            say(format!("starting {} (pid {pid})", component.name));
            let log = home.join("logs").join(format!("{}.log", component.name));
            wait_until(
                &component.name,
                &component.probe,
                Some(pid),
                &log,
                Duration::from_secs(90),
            )
            .await?;
        }
        if component.name == "registry" {
            let registry = settings::<orderflow_registry::RegistryArgs>("registry")?;
            let url = format!("http://{}", registry.listen);
            let schemas = orderflow_schema_gate::schemas_dir();
            let registry = orderflow_events::RegistryAccess {
                url: &url,
                user_info: Some(&registry_users.admin),
                ca_file: None,
            };
            let report = orderflow_schema_gate::check_online(&schemas, &registry).await?;
            anyhow::ensure!(
                report.is_ok(),
                "registering the schemas in {url} failed:\n{report}"
            );
            say(format!("schemas registered in {url}:\n{report}"));
        }
    }
    let gateway = settings::<orderflow_gateway::GatewayArgs>("gateway")?;
    say("orderflow is up");
    println!("gateway: {}", gateway.listen);
    let ca = args.home.home.join("tls/ca.pem");
    println!(
        "try:     grpcurl -cacert {} {} list",
        ca.display(),
        gateway.listen
    );
    println!("         ./orderflow token --customer alice   (a bearer token for the calls)");
    println!("         ./orderflow demo");
    println!("logs:    {}", home.join("logs").display());
    Ok(())
}

pub async fn down(args: HomeArgs) -> anyhow::Result<()> {
    let home = std::path::absolute(&args.home)?;
    // Front to back: the gateway stops taking requests first, the broker goes last.
    let mut names: Vec<String> = components(started_instances(&home), &home)?
        .into_iter()
        .map(|c| c.name)
        .rev()
        .collect();
    names.push("broker".into());
    for name in &names {
        let Some(pid) = read_pid(&home, name) else {
            continue;
        };
        if !alive(pid) {
            let _ = std::fs::remove_file(pid_file(&home, name));
            continue;
        }
        say(format!("stopping {name} (pid {pid})"));
        signal(pid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if alive(pid) {
            say(format!("{name} did not stop within 30s; killing it"));
            signal(pid, "KILL");
        }
        let _ = std::fs::remove_file(pid_file(&home, name));
    }
    say("orderflow is down");
    Ok(())
}

fn signal(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

pub async fn status(args: HomeArgs) -> anyhow::Result<()> {
    let home = std::path::absolute(&args.home)?;
    let kafka = kafka_settings(&home)?;
    let mut rows = vec![(
        "broker".to_owned(),
        read_pid(&home, "broker"),
        Probe::Tcp(broker_address(&kafka)),
    )];
    for c in components(started_instances(&home), &home)? {
        let pid = read_pid(&home, &c.name);
        rows.push((c.name, pid, c.probe));
    }
    let mut healthy = true;
    for (name, pid, probe) in rows {
        let ok = probe.ok().await;
        healthy &= ok;
        let pid = pid
            .filter(|p| alive(*p))
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{name:<13} pid {pid:<8} {:<9} {}",
            if ok { "healthy" } else { "DOWN" },
            probe.describe()
        );
    }
    // Each service group's progress on every partition of its inputs, as the services
    // themselves watch it (a stalled partition also turns their /health degraded).
    println!();
    let topics = kafka.topics();
    for service in SERVICES {
        let group = kafka.group(service);
        let inputs = input_topics(service, &topics);
        let reading = kafka.clone();
        let read_group = group.clone();
        let progress = tokio::task::spawn_blocking(move || {
            orderflow_platform::progress::read(
                &reading,
                &read_group,
                &inputs,
                Duration::from_secs(5),
            )
        })
        .await?;
        match progress {
            Ok(partitions) => {
                let lag: i64 = partitions.iter().map(|p| p.lag()).sum();
                let per_partition: Vec<String> = partitions
                    .iter()
                    .map(|p| format!("{}/{}:{}", p.topic, p.partition, p.lag()))
                    .collect();
                println!("group {group:<10} lag {lag:<6} {}", per_partition.join(" "));
            }
            Err(e) => println!("group {group:<10} lag unknown ({e})"),
        }
    }
    if !healthy {
        anyhow::bail!("some components are not healthy");
    }
    Ok(())
}

/// The topics `service` consumes, as its library subscribes to them.
fn input_topics(service: &str, topics: &orderflow_events::Topics) -> Vec<String> {
    match service {
        "order" => orderflow_order::input_topics(topics),
        "payment" => orderflow_payment::input_topics(topics),
        "history" => orderflow_history::input_topics(topics),
        "analytics" => orderflow_analytics::input_topics(topics),
        "notifications" => orderflow_notifications::input_topics(topics),
        _ => orderflow_inventory::input_topics(topics),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        broker: BrokerArgs,
    }

    fn parse(extra: &[&str]) -> Result<BrokerArgs, clap::Error> {
        let args = ["broker", "--data-dir", "d", "--listen", "127.0.0.1:1"];
        Cli::try_parse_from(args.iter().chain(extra)).map(|cli| cli.broker)
    }

    #[test]
    fn a_test_broker_compacts_as_often_as_the_fault_tests_brokers() {
        let args = parse(&["--for-tests"]).unwrap();
        assert_eq!(
            args.maintenance_interval(),
            Some(crate::tansu::TEST_MAINTENANCE_INTERVAL)
        );
    }

    #[test]
    fn the_maintenance_interval_is_tansus_default_unless_asked_for() {
        assert_eq!(parse(&[]).unwrap().maintenance_interval(), None);
        let args = parse(&["--maintenance-interval", "10s"]).unwrap();
        assert_eq!(args.maintenance_interval(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn a_test_broker_and_another_interval_are_refused_together() {
        let error = parse(&["--for-tests", "--maintenance-interval", "10s"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
