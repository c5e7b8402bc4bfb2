//! The keys tokens are verified against: a JWKS (RFC 7517) read from a file or a URL, and
//! re-read periodically so a provider's key rotation needs no restart.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use tokio_util::sync::CancellationToken;

/// Where a JWKS is read from.
#[derive(Debug, Clone)]
pub enum KeySource {
    File(PathBuf),
    Url(String),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(path) => write!(f, "JWKS file {}", path.display()),
            KeySource::Url(url) => write!(f, "JWKS URL {url}"),
        }
    }
}

/// One verification key of the set.
pub(crate) struct Key {
    pub kid: Option<String>,
    pub decoding: DecodingKey,
}

/// The current verification keys, replaced whole on each successful re-read.
pub struct KeySet {
    source: KeySource,
    keys: RwLock<Arc<Vec<Key>>>,
}

impl KeySet {
    /// Reads the set once; an error names the source and what is wrong with it.
    pub async fn load(source: KeySource) -> anyhow::Result<Arc<KeySet>> {
        let keys = read(&source).await?;
        Ok(Arc::new(KeySet {
            source,
            keys: RwLock::new(Arc::new(keys)),
        }))
    }

    /// Re-reads the set every `interval` until `shutdown`. A failed read keeps the keys
    /// already loaded (and is logged): a provider that is briefly away rejects no one.
    pub fn refresh_every(self: &Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let set = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                match read(&set.source).await {
                    Ok(keys) => set.replace(keys),
                    Err(e) => tracing::warn!(
                        source = %set.source,
                        error = format!("{e:#}"),
                        "cannot re-read the token keys; keeping the ones loaded"
                    ),
                }
            }
        });
    }

    /// Makes `keys` the current set.
    pub(crate) fn replace(&self, keys: Vec<Key>) {
        *self.keys.write().expect("key set lock") = Arc::new(keys);
    }

    pub(crate) fn current(&self) -> Arc<Vec<Key>> {
        self.keys.read().expect("key set lock").clone()
    }
}

async fn read(source: &KeySource) -> anyhow::Result<Vec<Key>> {
    let text = match source {
        KeySource::File(path) => tokio::fs::read_to_string(path)
            .await
            .with_context(|| format!("cannot read the {source}"))?,
        KeySource::Url(url) => reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("cannot fetch the {source}"))?
            .text()
            .await
            .with_context(|| format!("cannot fetch the {source}"))?,
    };
    parse(&text).with_context(|| format!("the {source} is not a usable JWKS"))
}

/// The signature keys of a JWKS document; keys for encryption, or of a kind that cannot be
/// used, are skipped with a warning. A set with no usable key is an error.
pub(crate) fn parse(text: &str) -> anyhow::Result<Vec<Key>> {
    let set: JwkSet = serde_json::from_str(text).context("not a JWKS document")?;
    let keys: Vec<Key> = set.keys.iter().filter_map(usable).collect();
    anyhow::ensure!(!keys.is_empty(), "it holds no signature key");
    Ok(keys)
}

fn usable(jwk: &Jwk) -> Option<Key> {
    let kid = jwk.common.key_id.clone();
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    match DecodingKey::from_jwk(jwk) {
        Ok(decoding) => Some(Key { kid, decoding }),
        Err(e) => {
            tracing::warn!(kid = ?kid, error = %e, "skipping a JWKS key that cannot verify");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_keys_and_broken_keys_are_skipped_and_an_empty_set_is_refused() {
        let signing = crate::SigningKey::generate();
        let mut jwks = signing.jwks();
        let mut encryption = jwks["keys"][0].clone();
        encryption["use"] = "enc".into();
        encryption["kid"] = "enc".into();
        let mut broken = jwks["keys"][0].clone();
        broken["x"] = "not base64url!".into();
        broken["kid"] = "broken".into();
        jwks["keys"].as_array_mut().unwrap().push(encryption);
        let keys = parse(&jwks.to_string()).expect("one usable key");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some(signing.kid()));

        let only_unusable = serde_json::json!({ "keys": [broken] });
        let error = parse(&only_unusable.to_string())
            .err()
            .expect("no usable key");
        assert!(
            format!("{error:#}").contains("no signature key"),
            "{error:#}"
        );
        let error = parse("{\"not\": 1}").err().expect("not a JWKS");
        assert!(format!("{error:#}").contains("not a JWKS"), "{error:#}");
    }
}
