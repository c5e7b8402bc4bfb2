//! The development signing key: an ES256 (ECDSA P-256) key that `./orderflow up` makes, kept
//! as a PKCS#8 PEM file beside its public JWKS, and used by `orderflow token` and the tests to
//! sign tokens. Generation is ring's; signing is jsonwebtoken's.

use std::fs;
use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The claims of a token the gateway accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The customer the caller acts as.
    pub sub: String,
    pub iss: String,
    pub aud: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: i64,
    /// Issued at, in seconds since the Unix epoch.
    pub iat: i64,
    /// Roles granted (the operator role allows stock administration).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl Claims {
    /// Claims for `customer`, valid for `ttl_secs` from now, with the given roles.
    pub fn new(customer: &str, issuer: &str, audience: &str, ttl_secs: i64) -> Claims {
        let now = now();
        Claims {
            sub: customer.into(),
            iss: issuer.into(),
            aud: audience.into(),
            exp: now + ttl_secs,
            iat: now,
            roles: Vec::new(),
        }
    }

    pub fn with_role(mut self, role: &str) -> Claims {
        self.roles.push(role.into());
        self
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// An ES256 signing key and its key id (derived from the public key, so it is stable).
pub struct SigningKey {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
    kid: String,
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> SigningKey {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .expect("the system random source works");
        SigningKey::from_pkcs8(pkcs8.as_ref()).expect("a key ring just made is valid")
    }

    fn from_pkcs8(pkcs8: &[u8]) -> anyhow::Result<SigningKey> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| anyhow::anyhow!("not a PKCS#8 ECDSA P-256 private key ({e})"))?;
        let public = pair.public_key().as_ref().to_vec();
        let kid = hex::encode(&Sha256::digest(&public)[..8]);
        Ok(SigningKey {
            pkcs8: pkcs8.to_vec(),
            public,
            kid,
            encoding: EncodingKey::from_ec_der(pkcs8),
        })
    }

    /// Reads a key written by [`SigningKey::write`].
    pub fn read(path: &Path) -> anyhow::Result<SigningKey> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read the signing key {}", path.display()))?;
        let pem =
            pem::parse(&text).with_context(|| format!("{} is not a PEM file", path.display()))?;
        SigningKey::from_pkcs8(pem.contents()).with_context(|| format!("{}", path.display()))
    }

    /// The key at `key`, made (with its JWKS at `jwks`) when absent. The private key file is
    /// readable by its owner only.
    pub fn ensure(key: &Path, jwks: &Path) -> anyhow::Result<SigningKey> {
        let signing = if key.exists() {
            SigningKey::read(key)?
        } else {
            let signing = SigningKey::generate();
            signing.write(key)?;
            signing
        };
        fs::write(jwks, signing.jwks().to_string())
            .with_context(|| format!("cannot write {}", jwks.display()))?;
        Ok(signing)
    }

    /// Writes the private key as a PKCS#8 PEM file, mode 0600.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8.clone()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.write_all(pem.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWKS document (RFC 7517/7518: an EC P-256 key).
    pub fn jwks(&self) -> serde_json::Value {
        // An uncompressed point: 0x04, then x and y, 32 bytes each.
        let (x, y) = self.public[1..].split_at(32);
        serde_json::json!({
            "keys": [{
                "kty": "EC",
                "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(x),
                "y": URL_SAFE_NO_PAD.encode(y),
                "kid": self.kid,
                "alg": "ES256",
                "use": "sig",
            }]
        })
    }

    /// A signed token carrying `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .expect("ES256 signing with a valid key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_key_reads_back_the_same_and_is_private() {
        let dir = std::env::temp_dir().join(format!("orderflow-auth-{}", uuid_like()));
        let key = dir.join("dev-signing-key.pem");
        let jwks = dir.join("jwks.json");
        let made = SigningKey::ensure(&key, &jwks).expect("made");
        let again = SigningKey::ensure(&key, &jwks).expect("read back");
        assert_eq!(made.kid(), again.kid());
        assert_eq!(made.public, again.public);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let published: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&jwks).unwrap()).unwrap();
        assert_eq!(published, made.jwks());
        assert!(!format!("{made:?}").contains("pkcs8"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_key_is_refused_with_its_name() {
        let dir = std::env::temp_dir().join(format!("orderflow-auth-{}", uuid_like()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not-a-key.pem");
        fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let error = SigningKey::read(&path).unwrap_err();
        assert!(format!("{error:#}").contains("not-a-key.pem"), "{error:#}");
        fs::remove_dir_all(dir).unwrap();
    }

    fn uuid_like() -> String {
        let mut bytes = [0u8; 8];
        ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut bytes).unwrap();
        hex::encode(bytes)
    }
}
