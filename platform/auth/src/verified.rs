//! Tokens already verified. A client sends the same token with every call for as long as it
//! lives (minutes to hours), and checking its ES256 signature is the gateway's largest single
//! cost per call (docs/performance.md, section 43). So the [`crate::Verifier`] checks a
//! token's signature and claims once and remembers what it proved until the token expires:
//! - keyed by the SHA-256 of the whole token, so only the very token that was verified is
//!   answered from here (a token differing in any byte, its signature included, is checked
//!   in full);
//! - tied to the key set it was verified against: when the keys are re-read (a rotation, a
//!   key withdrawn) every token is checked again against the new set;
//! - expiry checked at every use, as the full check does (`exp` plus the leeway), so a
//!   remembered token stops working at the same second a fresh check would refuse it;
//! - bounded ([`MOST`] tokens): when full, the expired ones go, and if none has expired all
//!   go. Only tokens that verified are remembered, so filling it takes validly signed tokens.
//!
//! Refusals are not remembered: each is checked again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use sha2::{Digest, Sha256};

use crate::keys::Key;
use crate::verify::{AuthError, Caller};

/// Most tokens remembered.
pub(crate) const MOST: usize = 10_000;

/// What a verified token proved, and until when.
struct Entry {
    caller: Caller,
    /// The token's `exp` (seconds since the epoch).
    expires: u64,
    /// The key set it verified against: the entry holds only while that set is current. A
    /// weak reference keeps the set's allocation, so a later set cannot take its address.
    keys: Weak<Vec<Key>>,
}

/// The tokens verified, by the SHA-256 of each.
#[derive(Default)]
pub(crate) struct VerifiedTokens {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether a token expiring at `expires` has expired at `now`, with `leeway` seconds of
/// clock skew: the rule jsonwebtoken's own check applies.
fn expired(expires: u64, now: u64, leeway: u64) -> bool {
    expires.saturating_add(leeway) < now
}

impl VerifiedTokens {
    /// What `token` proved when it was verified against `keys`, if it was: its caller, or
    /// [`AuthError::Expired`] once past its expiry at `now`. `None` if it must be checked in
    /// full.
    pub(crate) fn get(
        &self,
        token: &str,
        keys: &Arc<Vec<Key>>,
        now: u64,
        leeway: u64,
    ) -> Option<Result<Caller, AuthError>> {
        let key = digest(token);
        let mut entries = self.entries.lock().expect("verified tokens lock");
        let entry = entries.get(&key)?;
        if !Weak::ptr_eq(&entry.keys, &Arc::downgrade(keys)) {
            entries.remove(&key);
            return None;
        }
        if expired(entry.expires, now, leeway) {
            entries.remove(&key);
            return Some(Err(AuthError::Expired));
        }
        Some(Ok(entry.caller.clone()))
    }

    /// Remembers that `token`, expiring at `expires`, verified against `keys` as `caller`.
    pub(crate) fn put(
        &self,
        token: &str,
        keys: &Arc<Vec<Key>>,
        caller: &Caller,
        expires: u64,
        now: u64,
        leeway: u64,
    ) {
        let mut entries = self.entries.lock().expect("verified tokens lock");
        if entries.len() >= MOST {
            entries.retain(|_, e| !expired(e.expires, now, leeway));
            if entries.len() >= MOST {
                entries.clear();
            }
        }
        entries.insert(
            digest(token),
            Entry {
                caller: caller.clone(),
                expires,
                keys: Arc::downgrade(keys),
            },
        );
    }

    /// How many tokens are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().expect("verified tokens lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str) -> Caller {
        Caller {
            customer: orderflow_domain::CustomerId::parse("sub", name).unwrap(),
            operator: false,
        }
    }

    #[test]
    fn when_full_the_expired_tokens_go_and_if_none_has_expired_all_go() {
        let verified = VerifiedTokens::default();
        let keys = Arc::new(Vec::new());
        let (now, leeway) = (1_000_000, 30);
        // Half expired at `now`, half not.
        for n in 0..MOST {
            let expires = if n % 2 == 0 {
                now - leeway - 1
            } else {
                now + 60
            };
            verified.put(
                &format!("t{n}"),
                &keys,
                &caller("ana"),
                expires,
                now,
                leeway,
            );
        }
        assert_eq!(verified.len(), MOST);
        verified.put("one more", &keys, &caller("bob"), now + 60, now, leeway);
        assert_eq!(verified.len(), MOST / 2 + 1, "the expired ones went");
        assert_eq!(
            verified.get("t1", &keys, now, leeway),
            Some(Ok(caller("ana")))
        );
        // Full of tokens that have not expired: all go, and the new one stays.
        for n in verified.len()..MOST {
            verified.put(
                &format!("u{n}"),
                &keys,
                &caller("ana"),
                now + 60,
                now,
                leeway,
            );
        }
        assert_eq!(verified.len(), MOST);
        verified.put("last", &keys, &caller("bob"), now + 60, now, leeway);
        assert_eq!(verified.len(), 1);
        assert_eq!(verified.get("t1", &keys, now, leeway), None);
        assert_eq!(
            verified.get("last", &keys, now, leeway),
            Some(Ok(caller("bob")))
        );
    }

    #[test]
    fn a_token_verified_against_another_key_set_is_not_known() {
        let verified = VerifiedTokens::default();
        let (old, new) = (Arc::new(Vec::new()), Arc::new(Vec::new()));
        verified.put("t", &old, &caller("ana"), 100, 0, 0);
        assert_eq!(verified.get("t", &new, 0, 0), None);
        assert_eq!(verified.get("t", &old, 0, 0), None, "forgotten once stale");
    }
}
