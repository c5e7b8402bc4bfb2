//! The one launcher of the local tansu broker, used by `orderflow-dev up`, by
//! `orderflow-dev broker` (which scripts/test.sh runs for the test suite) and by the
//! fault-injection tests that stop and restart a broker of their own.
//!
//! The broker is built by scripts/bootstrap.sh from tansu's published source with the patches
//! in scripts/tansu-patches/ (docs/tansu.md says what each fixes).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Where scripts/bootstrap.sh put the broker binary: it exports `ORDERFLOW_TANSU_BIN`.
pub fn binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("ORDERFLOW_TANSU_BIN").map(PathBuf::from).ok_or_else(|| {
        anyhow::anyhow!(
            "ORDERFLOW_TANSU_BIN is not set: run through ./orderflow, or export the path scripts/bootstrap.sh prints"
        )
    })?;
    anyhow::ensure!(
        path.exists(),
        "no tansu binary at {}: run scripts/bootstrap.sh",
        path.display()
    );
    Ok(path)
}

/// How often the tests' brokers compact (tansu's default is ten minutes): often enough
/// that a test which reads a compacted topic meets compaction, as it may on any broker at
/// any time, instead of only when it happens to run at the ten-minute mark of a long run.
pub const TEST_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);

/// One tansu broker with durable sqlite storage in `data_dir`, listening on `address`
/// (`host:port`).
#[derive(Debug, Clone)]
pub struct Tansu {
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    pub address: String,
    /// TLS and SASL SCRAM on the listener; `None`: plaintext, no authentication.
    pub security: Option<BrokerSecurity>,
    /// How often the broker runs its maintenance, which compacts the compacted topics
    /// (`cleanup.policy=compact`: only the newest record of each key is kept); `None`:
    /// tansu's default of ten minutes.
    pub maintenance_interval: Option<Duration>,
}

/// The broker's certificate and key (PEM): with them it serves only TLS and requires every
/// client to log in with SASL SCRAM as a user made by [`Tansu::create_users`].
#[derive(Debug, Clone)]
pub struct BrokerSecurity {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Tansu {
    /// The sqlite storage, relative to the data folder, with the maintenance interval if
    /// one is set (tansu reads it from the storage URL).
    fn storage_url(&self) -> String {
        match self.maintenance_interval {
            Some(every) => format!(
                "sqlite://tansu.db?maintenance_interval={}ms",
                every.as_millis()
            ),
            None => "sqlite://tansu.db".to_owned(),
        }
    }

    /// The command that runs the broker in the foreground, its output going to `log`.
    pub fn command(&self, log: &Path) -> anyhow::Result<std::process::Command> {
        std::fs::create_dir_all(&self.data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let url = format!("tcp://{}", self.address);
        let mut command = std::process::Command::new(&self.binary);
        command
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            // tansu mangles an absolute sqlite path: run it from its data folder with a
            // relative one.
            .args(["--storage-engine", &self.storage_url()])
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(security) = &self.security {
            command
                .arg("--authentication")
                .arg("--cert")
                .arg(&security.cert_file)
                .arg("--key")
                .arg(&security.key_file);
        }
        Ok(command)
    }

    /// Stores SCRAM-SHA-256 and SCRAM-SHA-512 credentials for each `(user, password)` in the
    /// broker's storage, while the broker is stopped. tansu takes new credentials only over
    /// the Kafka protocol (AlterUserScramCredentials), which a broker requiring
    /// authentication refuses before the first user exists: so the storage is opened by a
    /// plaintext broker without authentication, on a private loopback port, for as long as
    /// it takes.
    pub async fn create_users(&self, users: &[(&str, &str)]) -> anyhow::Result<()> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let provisioning = Tansu {
            address: format!("127.0.0.1:{port}"),
            security: None,
            ..self.clone()
        };
        let log = self.data_dir.join("users.log");
        let mut broker = tokio::process::Command::from(provisioning.command(&log)?)
            .kill_on_drop(true)
            .spawn()?;
        let created = async {
            provisioning.wait_listening(Duration::from_secs(30)).await?;
            for (user, password) in users {
                for mechanism in ["scram256", "scram512"] {
                    let output = tokio::process::Command::new(&self.binary)
                        .args(["user", "create", "--broker"])
                        .arg(format!("tcp://{}", provisioning.address))
                        .args(["--mechanism", mechanism, user, password])
                        .output()
                        .await?;
                    anyhow::ensure!(
                        output.status.success(),
                        "tansu could not create the Kafka user {user}: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    );
                }
            }
            Ok(())
        }
        .await;
        broker.kill().await?;
        created
    }

    /// Waits until the broker accepts connections, at most `timeout`.
    pub async fn wait_listening(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if tokio::net::TcpStream::connect(&self.address).await.is_ok() {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the broker did not listen at {} within {timeout:?}",
                self.address
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}
