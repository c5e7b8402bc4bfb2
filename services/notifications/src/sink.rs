//! Where notifications go: a [`Sink`] is given one notification at a time and says whether it
//! was taken, should be tried again later, or is refused for good.
//!
//! - [`Webhook`]: an HTTP POST of the JSON body, signed (see [`sign`]) so the receiver can
//!   tell it came from here and was not changed. 2xx is delivered; 408, 425, 429, 5xx, a
//!   timeout or no connection is retried; any other answer is a refusal.
//! - [`File`]: one JSON line per notification appended to a file, for local runs.
//!
//! A delivery can be repeated (the process dies after the receiver took it and before the
//! row is marked), so every delivery carries the notification's id: a receiver keeps the ids
//! it has seen and drops a repeat, as with any webhook.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use orderflow_platform::Secret;
use ring::hmac;
use uuid::Uuid;

use crate::config::{SinkArgs, SinkKind};

/// The header that carries the notification's id, the same on every delivery of it.
pub const DELIVERY_HEADER: &str = "orderflow-delivery";
/// The header that carries the signature: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "orderflow-signature";
/// The header that says which attempt this is, from 1.
pub const ATTEMPT_HEADER: &str = "orderflow-attempt";

/// One notification on its way.
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    pub id: Uuid,
    /// From 1.
    pub attempt: u32,
    pub body: &'a serde_json::Value,
}

/// Why a delivery did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Try again later: the receiver is down, slow or busy.
    #[error("{0}")]
    Retry(String),
    /// Trying again will not help: the receiver refused this notification.
    #[error("{0}")]
    Refused(String),
}

/// A place notifications are delivered to.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// What it is, for logs and health: `webhook https://...`, `file /var/...`.
    fn describe(&self) -> String;
    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<(), DeliveryError>;

    /// Delivers a round's notifications and returns each one's outcome, in order. The
    /// default delivers them one by one, concurrently; a sink that takes many at once for
    /// the price of one (a file: one write and one flush to disk) overrides it.
    async fn deliver_all(&self, deliveries: &[Delivery<'_>]) -> Vec<Result<(), DeliveryError>> {
        futures::future::join_all(deliveries.iter().map(|d| self.deliver(d))).await
    }
}

/// The sink `args` configure, or why it cannot be used.
pub fn from_args(args: &SinkArgs) -> anyhow::Result<Box<dyn Sink>> {
    Ok(match args.kind {
        SinkKind::File => Box::new(File::new(args.file.clone())),
        SinkKind::Webhook => {
            let url = args.webhook_url.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "--sink webhook needs --webhook-url (ORDERFLOW_NOTIFICATIONS_WEBHOOK_URL)"
                )
            })?;
            let secret = args.webhook_secret.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "--sink webhook needs --webhook-secret (ORDERFLOW_NOTIFICATIONS_WEBHOOK_SECRET) to sign with"
                )
            })?;
            Box::new(Webhook::new(
                url,
                secret,
                Duration::from_millis(args.webhook_timeout_ms.max(1)),
            )?)
        }
    })
}

/// The signature header's value for `body` sent at `timestamp` (unix seconds):
/// `t=<timestamp>,v1=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`. The timestamp is
/// signed with the body, so a receiver that refuses old timestamps refuses replays.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!(
        "t={timestamp},v1={}",
        hex::encode(hmac::sign(&key, &signed_text(timestamp, body)).as_ref())
    )
}

fn signed_text(timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut text = format!("{timestamp}.").into_bytes();
    text.extend_from_slice(body);
    text
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is not `t=<unix seconds>,v1=<hex>`")]
    Malformed,
    #[error("the signature was made {age} s from now, more than the {tolerance} s allowed")]
    Stale { age: i64, tolerance: i64 },
    #[error("the signature does not match the body")]
    Mismatch,
}

/// What a receiver does with a delivery: checks `header` against `body` and the shared
/// secret, and that it was signed within `tolerance` seconds of `now` (unix seconds).
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut mac = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => mac = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(mac)) = (timestamp, mac) else {
        return Err(SignatureError::Malformed);
    };
    let age = now.abs_diff(timestamp);
    if age > tolerance.unsigned_abs() {
        return Err(SignatureError::Stale {
            age: i64::try_from(age).unwrap_or(i64::MAX),
            tolerance,
        });
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &signed_text(timestamp, body), &mac).map_err(|_| SignatureError::Mismatch)
}

/// Delivers by HTTP POST to one URL.
pub struct Webhook {
    url: String,
    secret: Secret,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(url: &str, secret: Secret, timeout: Duration) -> anyhow::Result<Webhook> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("--webhook-url {url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            anyhow::bail!("--webhook-url {url:?} must be http or https");
        }
        if secret.expose().len() < 16 {
            anyhow::bail!("--webhook-secret must be at least 16 characters");
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect would resend the POST as a bodiless GET, perhaps to another host
            // with the signature; a 3xx is the receiver's misconfiguration, refused below.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Webhook {
            url: url.to_owned(),
            secret,
            client,
        })
    }
}

#[async_trait]
impl Sink for Webhook {
    fn describe(&self) -> String {
        format!("webhook {}", self.url)
    }

    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<(), DeliveryError> {
        let body = serde_json::to_vec(delivery.body).expect("JSON serializes");
        let signature = sign(
            self.secret.expose().as_bytes(),
            chrono::Utc::now().timestamp(),
            &body,
        );
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, delivery.id.to_string())
            .header(ATTEMPT_HEADER, delivery.attempt.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| DeliveryError::Retry(format!("{}: {e}", self.url)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let mut said = format!("{} answered {status}", self.url);
        if let Some(location) = response.headers().get(reqwest::header::LOCATION) {
            said.push_str(&format!(
                " (a redirect to {}: not followed; configure the final URL)",
                location.to_str().unwrap_or("?")
            ));
        }
        if status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429) {
            Err(DeliveryError::Retry(said))
        } else {
            Err(DeliveryError::Refused(said))
        }
    }
}

/// Appends one JSON line per notification to a file.
pub struct File {
    path: PathBuf,
}

impl File {
    pub fn new(path: PathBuf) -> File {
        File { path }
    }
}

#[async_trait]
impl Sink for File {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<(), DeliveryError> {
        let mut outcomes = self.deliver_all(std::slice::from_ref(delivery)).await;
        outcomes.pop().expect("one outcome per delivery")
    }

    /// One line per notification, all of them appended with one write and flushed to disk
    /// with one `fdatasync`, on one blocking thread: the file takes all of them or, for an
    /// error, none is counted delivered (a line written before the error is delivered again;
    /// a receiver drops repeats by id).
    async fn deliver_all(&self, deliveries: &[Delivery<'_>]) -> Vec<Result<(), DeliveryError>> {
        if deliveries.is_empty() {
            return Vec::new();
        }
        let mut lines = Vec::new();
        for delivery in deliveries {
            serde_json::to_writer(&mut lines, delivery.body).expect("JSON serializes");
            lines.push(b'\n');
        }
        let path = self.path.clone();
        let appended = tokio::task::spawn_blocking(move || append(&path, &lines))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let outcome =
            appended.map_err(|e| DeliveryError::Retry(format!("{}: {e}", self.path.display())));
        deliveries.iter().map(|_| outcome.clone()).collect()
    }
}

/// Appends `lines` to the file at `path` with one write and flushes them to disk. The file is
/// opened for each call, so a rotated file is followed. A file that does not end with a line
/// break (a write cut short, by a full disk say) gets one first, so the cut line stays alone
/// and the lines appended after it are whole.
fn append(path: &std::path::Path, lines: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = file.metadata()?.len();
    let mut last = [b'\n'];
    if len > 0 {
        file.read_exact_at(&mut last, len - 1)?;
    }
    if last[0] != b'\n' {
        file.write_all(b"\n")?;
    }
    file.write_all(lines)?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a-shared-secret-of-some-length";

    #[test]
    fn a_signed_body_verifies_and_any_change_does_not() {
        let body = br#"{"status":"PAID"}"#;
        let header = sign(SECRET, 1_764_590_400, body);
        assert!(header.starts_with("t=1764590400,v1="), "{header}");
        assert_eq!(verify(SECRET, &header, body, 1_764_590_410, 300), Ok(()));
        assert_eq!(
            verify(
                SECRET,
                &header,
                br#"{"status":"REFUNDED"}"#,
                1_764_590_410,
                300
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                b"another-secret-entirely",
                &header,
                body,
                1_764_590_410,
                300
            ),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed too: moving it breaks the signature.
        let moved = header.replace("t=1764590400", "t=1764590401");
        assert_eq!(
            verify(SECRET, &moved, body, 1_764_590_410, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn an_old_or_malformed_signature_is_refused_with_the_reason() {
        let body = b"{}";
        let header = sign(SECRET, 1_764_590_400, body);
        assert_eq!(
            verify(SECRET, &header, body, 1_764_590_400 + 301, 300),
            Err(SignatureError::Stale {
                age: 301,
                tolerance: 300
            })
        );
        assert_eq!(
            verify(SECRET, "v1=00", body, 0, 300),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(SECRET, "t=1,v1=zz", body, 1, 300),
            Err(SignatureError::Malformed)
        );
        // A hostile timestamp is only stale, whatever its size.
        let far = format!("t={},v1=00", i64::MIN);
        assert!(matches!(
            verify(SECRET, &far, body, i64::MAX, 300),
            Err(SignatureError::Stale { .. })
        ));
    }

    #[tokio::test]
    async fn the_file_sink_appends_one_line_per_notification() {
        let path =
            std::env::temp_dir().join(format!("orderflow-notifications-{}.jsonl", Uuid::new_v4()));
        let sink = File::new(path.clone());
        for n in 1..=2 {
            let body = serde_json::json!({ "n": n });
            sink.deliver(&Delivery {
                id: Uuid::new_v4(),
                attempt: 1,
                body: &body,
            })
            .await
            .unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(text, "{\"n\":1}\n{\"n\":2}\n");
    }

    #[tokio::test]
    async fn the_file_sink_appends_a_round_in_order_or_fails_every_line_of_it() {
        let path =
            std::env::temp_dir().join(format!("orderflow-notifications-{}.jsonl", Uuid::new_v4()));
        let sink = File::new(path.clone());
        let bodies: Vec<serde_json::Value> =
            (1..=3).map(|n| serde_json::json!({ "n": n })).collect();
        let round: Vec<Delivery<'_>> = bodies
            .iter()
            .map(|body| Delivery {
                id: Uuid::new_v4(),
                attempt: 1,
                body,
            })
            .collect();
        assert_eq!(sink.deliver_all(&round).await, vec![Ok(()); 3]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
        assert_eq!(
            sink.deliver_all(&[]).await,
            vec![],
            "an empty round writes nothing"
        );

        // A line cut short by an earlier write stays alone; the round after it is whole.
        std::fs::write(&path, "{\"n\":0}\n{\"cut").unwrap();
        assert_eq!(sink.deliver_all(&round[..1]).await, vec![Ok(())]);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(text, "{\"n\":0}\n{\"cut\n{\"n\":1}\n");

        // A file that cannot be written: every delivery of the round is to be tried again,
        // and the error names the file.
        let nowhere = path.join("not-a-directory").join("x.jsonl");
        let outcomes = File::new(nowhere.clone()).deliver_all(&round).await;
        assert_eq!(outcomes.len(), 3);
        for outcome in outcomes {
            match outcome {
                Err(DeliveryError::Retry(why)) => {
                    assert!(why.contains(&nowhere.display().to_string()), "{why}")
                }
                other => panic!("expected a retry, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_webhook_without_a_usable_url_or_secret_does_not_start() {
        let secret = || Secret::new("a-shared-secret-of-some-length");
        let err = Webhook::new("ftp://x", secret(), Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(err.to_string().contains("must be http or https"), "{err}");
        let err = Webhook::new("not a url", secret(), Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(err.to_string().contains("is not a URL"), "{err}");
        let err = Webhook::new("http://x", Secret::new("short"), Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(err.to_string().contains("at least 16 characters"), "{err}");
    }
}
