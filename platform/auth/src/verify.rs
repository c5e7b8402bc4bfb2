//! Verifying a bearer token into a [`Caller`]. Each refusal says which check failed and never
//! repeats the token.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use orderflow_domain::CustomerId;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;

use crate::args::AuthArgs;
use crate::keys::{Key, KeySet};
use crate::verified::VerifiedTokens;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The customer the caller acts as: the token's subject.
    pub customer: CustomerId,
    /// Holds the operator role: may administer stock.
    pub operator: bool,
}

/// Why a request is not authenticated. The messages are for the client: they name the
/// failed check, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send `authorization: Bearer <token>`")]
    Missing,
    #[error("the authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error("the bearer token is not a well-formed JWT ({0})")]
    Malformed(String),
    #[error("tokens signed with {0:?} are not accepted (only asymmetric algorithms are)")]
    AlgorithmNotAccepted(Algorithm),
    #[error("the token's signing key (kid {0:?}) is not among the trusted keys")]
    UnknownKey(Option<String>),
    #[error("the token's signature does not verify against the trusted keys")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("the token's issuer is not the one trusted")]
    WrongIssuer,
    #[error("the token is not meant for this service (audience)")]
    WrongAudience,
    #[error("the token lacks the required claim {0:?}")]
    MissingClaim(String),
    #[error("the token's subject is not a valid customer id ({0})")]
    BadSubject(String),
}

/// Checks bearer tokens against the trusted keys, issuer, audience and clock, and remembers
/// the tokens that verified until they expire (see `verified`).
pub struct Verifier {
    keys: Arc<KeySet>,
    issuer: String,
    audience: String,
    leeway_secs: u64,
    operator_role: String,
    verified: VerifiedTokens,
    checks: TokenChecks,
}

/// How the tokens a [`Verifier`] was shown were answered, for the caller's metrics: the
/// share answered from memory is what the remembered tokens save. Headers without a bearer
/// token are in neither count.
#[derive(Clone, Debug, Default)]
pub struct TokenChecks {
    /// Answered from a token verified before (accepted, or refused as expired).
    pub remembered: Counter,
    /// Checked in full: signature and claims (accepted or refused).
    pub in_full: Counter,
}

/// The claims read from a verified token (the standard ones are checked by jsonwebtoken).
#[derive(Deserialize)]
struct Granted {
    /// Required; checked here, as the other claims' absence is by jsonwebtoken.
    #[serde(default)]
    sub: Option<String>,
    /// Required, and checked by jsonwebtoken; kept to remember the token until then.
    exp: u64,
    #[serde(default)]
    roles: Vec<String>,
    /// OAuth 2.0 scopes, space-separated.
    #[serde(default)]
    scope: String,
}

/// Only asymmetric algorithms: a symmetric one would let anyone holding the public key
/// (everyone: it is published) sign tokens.
const ACCEPTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl Verifier {
    pub fn new(keys: Arc<KeySet>, args: &AuthArgs) -> Verifier {
        Verifier {
            keys,
            issuer: args.issuer.clone(),
            audience: args.audience.clone(),
            leeway_secs: args.leeway_secs,
            operator_role: args.operator_role.clone(),
            verified: VerifiedTokens::default(),
            checks: TokenChecks::default(),
        }
    }

    /// How the tokens were answered so far; the counters are shared with the verifier, so a
    /// clone registered as a metric counts on.
    pub fn checks(&self) -> &TokenChecks {
        &self.checks
    }

    /// The caller an `authorization` header value proves, or why it proves none.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        self.verify_at(authorization, jsonwebtoken::get_current_timestamp())
    }

    /// [`Verifier::verify`] at `now` (seconds since the epoch): a token verified before is
    /// answered from what it proved then, unless it has expired at `now` or the keys were
    /// re-read since; any other is checked in full (by jsonwebtoken, on the system clock).
    fn verify_at(&self, authorization: Option<&str>, now: u64) -> Result<Caller, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(AuthError::NotBearer),
        };
        let keys = self.keys.current();
        if let Some(known) = self.verified.get(token, &keys, now, self.leeway_secs) {
            self.checks.remembered.inc();
            return known;
        }
        self.checks.in_full.inc();
        let (caller, expires) = self.check(token, &keys)?;
        self.verified
            .put(token, &keys, &caller, expires, now, self.leeway_secs);
        Ok(caller)
    }

    /// Checks `token` in full against `keys`: the caller it proves and when it expires.
    fn check(&self, token: &str, keys: &[Key]) -> Result<(Caller, u64), AuthError> {
        let jwt_header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        if !ACCEPTED.contains(&jwt_header.alg) {
            return Err(AuthError::AlgorithmNotAccepted(jwt_header.alg));
        }
        let key = match &jwt_header.kid {
            Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid.as_str())),
            // Without a kid, only an unambiguous set names the key.
            None if keys.len() == 1 => keys.first(),
            None => None,
        }
        .ok_or_else(|| AuthError::UnknownKey(jwt_header.kid.clone()))?;

        let mut validation = Validation::new(jwt_header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway_secs;
        let granted = jsonwebtoken::decode::<Granted>(token, &key.decoding, &validation)
            .map_err(|e| match e.into_kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim),
                // The key's kind does not match the token's algorithm.
                ErrorKind::InvalidAlgorithm => AuthError::BadSignature,
                other => AuthError::Malformed(format!("{other:?}")),
            })?
            .claims;
        let subject = granted
            .sub
            .ok_or_else(|| AuthError::MissingClaim("sub".into()))?;
        let customer =
            CustomerId::parse("sub", &subject).map_err(|e| AuthError::BadSubject(e.to_string()))?;
        let operator = granted.roles.contains(&self.operator_role)
            || granted
                .scope
                .split_ascii_whitespace()
                .any(|s| s == self.operator_role);
        Ok((Caller { customer, operator }, granted.exp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Claims, DEV_AUDIENCE, DEV_ISSUER, KeySource, OPERATOR_ROLE, SigningKey};

    struct Fixture {
        signing: SigningKey,
        verifier: Verifier,
        dir: std::path::PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn fixture() -> Fixture {
        let signing = SigningKey::generate();
        let dir = std::env::temp_dir().join(format!("orderflow-verify-{}", signing.kid()));
        std::fs::create_dir_all(&dir).unwrap();
        let jwks = dir.join("jwks.json");
        std::fs::write(&jwks, signing.jwks().to_string()).unwrap();
        let args = AuthArgs::with_jwks_file(jwks.clone());
        let keys = KeySet::load(KeySource::File(jwks)).await.unwrap();
        Fixture {
            verifier: Verifier::new(keys, &args),
            signing,
            dir,
        }
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    fn alice() -> Claims {
        Claims::new("alice", DEV_ISSUER, DEV_AUDIENCE, 300)
    }

    #[tokio::test]
    async fn a_valid_token_names_the_customer_and_the_operator_role() {
        let f = fixture().await;
        let caller = f
            .verifier
            .verify(Some(&bearer(&f.signing.sign(&alice()))))
            .unwrap();
        assert_eq!(caller.customer.as_str(), "alice");
        assert!(!caller.operator);
        let operator = f.signing.sign(&alice().with_role(OPERATOR_ROLE));
        assert!(
            f.verifier
                .verify(Some(&bearer(&operator)))
                .unwrap()
                .operator
        );
        // The scheme is case-insensitive (RFC 7235).
        let lower = format!("bearer {}", f.signing.sign(&alice()));
        assert!(f.verifier.verify(Some(&lower)).is_ok());
    }

    #[tokio::test]
    async fn each_failed_check_is_named() {
        let f = fixture().await;
        let other = SigningKey::generate();
        let sign = |claims: &Claims| bearer(&f.signing.sign(claims));
        let mut expired = alice();
        expired.exp -= 400; // beyond the 30 s leeway
        let mut within_leeway = alice();
        within_leeway.exp = within_leeway.iat - 10;
        let wrong_audience = Claims::new("alice", DEV_ISSUER, "someone-else", 300);
        let wrong_issuer = Claims::new("alice", "https://evil.example", DEV_AUDIENCE, 300);
        let bad_subject = Claims::new("", DEV_ISSUER, DEV_AUDIENCE, 300);
        // Signed by another key that claims this key's id.
        let forged = {
            let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
            header.kid = Some(f.signing.kid().into());
            let pem = other_pem(&other);
            let key = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
            bearer(&jsonwebtoken::encode(&header, &alice(), &key).unwrap())
        };
        // HS256 with the public JWKS as the secret: the classic algorithm confusion.
        let symmetric = {
            let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
            header.kid = Some(f.signing.kid().into());
            let key =
                jsonwebtoken::EncodingKey::from_secret(f.signing.jwks().to_string().as_bytes());
            bearer(&jsonwebtoken::encode(&header, &alice(), &key).unwrap())
        };
        let cases: Vec<(Option<String>, AuthError)> = vec![
            (None, AuthError::Missing),
            (Some("Basic YWxpY2U6c2VjcmV0".into()), AuthError::NotBearer),
            (
                Some(bearer(&other.sign(&alice()))),
                AuthError::UnknownKey(Some(other.kid().into())),
            ),
            (Some(forged), AuthError::BadSignature),
            (
                Some(symmetric),
                AuthError::AlgorithmNotAccepted(Algorithm::HS256),
            ),
            (Some(sign(&expired)), AuthError::Expired),
            (Some(sign(&wrong_audience)), AuthError::WrongAudience),
            (Some(sign(&wrong_issuer)), AuthError::WrongIssuer),
        ];
        for (header, expected) in cases {
            let refused = f.verifier.verify(header.as_deref());
            assert_eq!(refused, Err(expected));
            // The message names the check, never the credential.
            if let (Some(header), Err(error)) = (header, refused) {
                let credential = header.split_once(' ').unwrap().1;
                assert!(!error.to_string().contains(credential), "{error}");
            }
        }
        assert!(f.verifier.verify(Some(&sign(&within_leeway))).is_ok());
        assert!(matches!(
            f.verifier.verify(Some(&sign(&bad_subject))),
            Err(AuthError::BadSubject(_))
        ));
        assert!(matches!(
            f.verifier.verify(Some("Bearer not.a.jwt")),
            Err(AuthError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn a_token_without_the_subject_claim_is_refused() {
        let f = fixture().await;
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some(f.signing.kid().into());
        let claims = serde_json::json!({
            "iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "exp": alice().exp,
        });
        let key = jsonwebtoken::EncodingKey::from_ec_pem(other_pem(&f.signing).as_bytes()).unwrap();
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert_eq!(
            f.verifier.verify(Some(&bearer(&token))),
            Err(AuthError::MissingClaim("sub".into()))
        );
    }

    #[tokio::test]
    async fn a_verified_token_is_remembered_until_it_expires() {
        let f = fixture().await;
        let claims = alice();
        let token = bearer(&f.signing.sign(&claims));
        let expires = claims.exp as u64;
        let leeway = f.verifier.leeway_secs;
        assert_eq!(
            f.verifier.verify(Some(&token)).unwrap().customer.as_str(),
            "alice"
        );
        assert_eq!(f.verifier.verified.len(), 1);
        // Answered from what it proved, at any time up to its expiry and the leeway...
        assert!(f.verifier.verify_at(Some(&token), expires + leeway).is_ok());
        // ...and refused after it: a full check on the system clock would still accept it
        // (it expires in five minutes), so this refusal is the remembered token's.
        assert_eq!(
            f.verifier.verify_at(Some(&token), expires + leeway + 1),
            Err(AuthError::Expired)
        );
        assert_eq!(
            f.verifier.verified.len(),
            0,
            "an expired token is forgotten"
        );
        assert!(f.verifier.verify(Some(&token)).is_ok());
        // Checked in full the first time and again once forgotten; answered from memory in
        // between, the refusal as expired included.
        assert_eq!(f.verifier.checks().in_full.get(), 2);
        assert_eq!(f.verifier.checks().remembered.get(), 2);
    }

    #[tokio::test]
    async fn a_token_that_differs_from_a_verified_one_in_any_byte_is_checked_in_full() {
        let f = fixture().await;
        let token = f.signing.sign(&alice());
        assert!(f.verifier.verify(Some(&bearer(&token))).is_ok());
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let mut altered: Vec<char> = signature.chars().collect();
        altered[0] = if altered[0] == 'A' { 'B' } else { 'A' };
        let altered = format!("{signed}.{}", altered.into_iter().collect::<String>());
        assert_eq!(
            f.verifier.verify(Some(&bearer(&altered))),
            Err(AuthError::BadSignature)
        );
        // The same claims signed again (a new signature) verify, as a new token.
        assert!(
            f.verifier
                .verify(Some(&bearer(&f.signing.sign(&alice()))))
                .is_ok()
        );
        assert!(f.verifier.verify(Some(&bearer(&token))).is_ok());
        // The original, the altered one and the new signature were each checked in full;
        // only the original's second use was answered from memory.
        assert_eq!(f.verifier.checks().in_full.get(), 3);
        assert_eq!(f.verifier.checks().remembered.get(), 1);
    }

    #[tokio::test]
    async fn a_header_without_a_bearer_token_is_counted_as_neither() {
        let f = fixture().await;
        assert_eq!(f.verifier.verify(None), Err(AuthError::Missing));
        assert_eq!(
            f.verifier.verify(Some("Basic YWxpY2U6c2VjcmV0")),
            Err(AuthError::NotBearer)
        );
        let registered = f.verifier.checks().clone();
        assert!(
            f.verifier
                .verify(Some(&bearer(&f.signing.sign(&alice()))))
                .is_ok()
        );
        // A clone (as registered with the metrics) counts what the verifier counts.
        assert_eq!(
            (registered.in_full.get(), registered.remembered.get()),
            (1, 0)
        );
    }

    #[tokio::test]
    async fn tokens_are_checked_again_when_the_keys_are_re_read() {
        let f = fixture().await;
        let token = bearer(&f.signing.sign(&alice()));
        assert!(f.verifier.verify(Some(&token)).is_ok());
        // The provider withdraws the key (a rotation): the remembered token no longer holds.
        let other = SigningKey::generate();
        let keys = |key: &SigningKey| crate::keys::parse(&key.jwks().to_string()).unwrap();
        f.verifier.keys.replace(keys(&other));
        assert_eq!(
            f.verifier.verify(Some(&token)),
            Err(AuthError::UnknownKey(Some(f.signing.kid().into())))
        );
        // Published again, the key verifies it again.
        f.verifier.keys.replace(keys(&f.signing));
        assert!(f.verifier.verify(Some(&token)).is_ok());
    }

    /// The PEM of a key, as written to disk.
    fn other_pem(key: &SigningKey) -> String {
        let dir = std::env::temp_dir().join(format!("orderflow-pem-{}", key.kid()));
        let path = dir.join("key.pem");
        key.write(&path).unwrap();
        let pem = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        pem
    }
}
