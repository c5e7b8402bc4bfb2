//! Tokens signed locally with a [`SigningKey`] for the development issuer and audience: what
//! `orderflow demo`, the load generator, the benchmark and the tests present to the gateway.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use crate::{Bearer, Claims, DEV_AUDIENCE, DEV_ISSUER, OPERATOR_ROLE, SigningKey};

/// How long the tokens it signs are valid: longer than any local run or test.
const TTL_SECS: i64 = 6 * 3600;

/// Signs (and remembers) one token per customer.
pub struct LocalIssuer {
    key: SigningKey,
    tokens: Mutex<HashMap<(String, bool), Bearer>>,
}

impl LocalIssuer {
    pub fn new(key: SigningKey) -> LocalIssuer {
        LocalIssuer {
            key,
            tokens: Mutex::default(),
        }
    }

    /// The issuer signing with the key in `path` (a PKCS#8 PEM file).
    pub fn read(path: &Path) -> anyhow::Result<LocalIssuer> {
        Ok(LocalIssuer::new(SigningKey::read(path)?))
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// A fresh token for `customer`, with the operator role if asked.
    pub fn token(&self, customer: &str, operator: bool) -> String {
        let mut claims = Claims::new(customer, DEV_ISSUER, DEV_AUDIENCE, TTL_SECS);
        if operator {
            claims = claims.with_role(OPERATOR_ROLE);
        }
        self.key.sign(&claims)
    }

    /// The credentials of `customer`.
    pub fn customer(&self, customer: &str) -> Bearer {
        self.bearer(customer, false)
    }

    /// The credentials of an operator (who may administer stock).
    pub fn operator(&self) -> Bearer {
        self.bearer("operator", true)
    }

    fn bearer(&self, customer: &str, operator: bool) -> Bearer {
        let mut tokens = self.tokens.lock().expect("token cache lock");
        tokens
            .entry((customer.to_owned(), operator))
            .or_insert_with(|| Bearer::new(&self.token(customer, operator)))
            .clone()
    }
}
