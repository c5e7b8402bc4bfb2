//! Who may use the registry: HTTP basic authentication, in the form Confluent's clients send
//! for `basic.auth.user.info`, against a users file; each user has a role. Reading schemas
//! needs `read`; registering a version needs `write`; changing levels or modes and deleting
//! need `admin`. Only `/health` is open. A refusal answers in Confluent's error format:
//! 401 (with a `WWW-Authenticate` challenge) without valid credentials, 403 without the role.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::error::error_body;

/// What a user may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    fn parse(text: &str) -> Option<Role> {
        match text {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// The registry's users: name → (SHA-256 of the password, role).
pub struct Users {
    by_name: HashMap<String, ([u8; 32], Role)>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only, never a password digest.
        f.debug_set().entries(self.by_name.keys()).finish()
    }
}

impl Users {
    /// One user per line, `name:password:role` (role `read`, `write` or `admin`); blank lines
    /// and lines starting with `#` are skipped. An error names the line, never its password.
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut by_name = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, rest) = line.split_once(':').unwrap_or((line, ""));
            let Some((password, role)) = rest.rsplit_once(':') else {
                return Err(format!("line {}: expected name:password:role", n + 1));
            };
            let role = Role::parse(role).ok_or_else(|| {
                format!(
                    "line {}: role {role:?} is not one of read, write, admin",
                    n + 1
                )
            })?;
            if name.is_empty() || password.is_empty() {
                return Err(format!("line {}: empty name or password", n + 1));
            }
            by_name.insert(name.to_owned(), (digest(password), role));
        }
        if by_name.is_empty() {
            return Err("no user".to_owned());
        }
        Ok(Users { by_name })
    }

    pub fn read(path: &Path) -> anyhow::Result<Users> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the users file {}", path.display()))?;
        Users::parse(&text).map_err(|e| anyhow::anyhow!("the users file {}: {e}", path.display()))
    }

    /// The user an `Authorization` header proves, and its role.
    fn authenticate(&self, header: Option<&HeaderValue>) -> Result<(&str, Role), &'static str> {
        let header = header.ok_or("credentials required")?;
        let encoded = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Basic "))
            .ok_or("credentials must be HTTP basic authentication")?;
        let decoded = STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or("malformed basic authentication")?;
        let (name, password) = decoded
            .split_once(':')
            .ok_or("malformed basic authentication")?;
        match self.by_name.get_key_value(name) {
            Some((name, (expected, role))) if same(expected, &digest(password)) => {
                Ok((name.as_str(), *role))
            }
            _ => Err("unknown user or wrong password"),
        }
    }
}

fn digest(password: &str) -> [u8; 32] {
    Sha256::digest(password.as_bytes()).into()
}

/// Compares two digests in time independent of where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The role a request needs.
fn needs(method: &Method, path: &str) -> Role {
    match *method {
        Method::GET | Method::HEAD => Role::Read,
        // Registering a version; a POST elsewhere (lookup, compatibility check) only reads.
        Method::POST if path.starts_with("/subjects/") && path.ends_with("/versions") => {
            Role::Write
        }
        Method::POST => Role::Read,
        // Levels, modes and deletions.
        _ => Role::Admin,
    }
}

/// The middleware: passes a request whose user holds the role it needs.
pub async fn authorize(State(users): State<Arc<Users>>, request: Request, next: Next) -> Response {
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let needed = needs(request.method(), request.uri().path());
    match users.authenticate(request.headers().get(header::AUTHORIZATION)) {
        Err(why) => {
            let mut response = error_body(StatusCode::UNAUTHORIZED, 401, why);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"orderflow schema registry\""),
            );
            response
        }
        Ok((name, role)) if role < needed => error_body(
            StatusCode::FORBIDDEN,
            40301,
            &format!(
                "user {name:?} has the {} role; {} {} needs {}",
                role.name(),
                request.method(),
                request.uri().path(),
                needed.name()
            ),
        ),
        Ok(_) => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_info: &str) -> HeaderValue {
        format!("Basic {}", STANDARD.encode(user_info))
            .parse()
            .unwrap()
    }

    #[test]
    fn users_authenticate_with_their_password_only() {
        let users = Users::parse("# users\nreader:p:w:d:read\n\nops:secret:admin\n").unwrap();
        // A password may hold colons; the role is after the last one.
        assert_eq!(
            users.authenticate(Some(&basic("reader:p:w:d"))),
            Ok(("reader", Role::Read))
        );
        assert_eq!(
            users.authenticate(Some(&basic("ops:secret"))),
            Ok(("ops", Role::Admin))
        );
        for refused in ["ops:wrong", "nobody:secret", "ops", ""] {
            assert!(
                users.authenticate(Some(&basic(refused))).is_err(),
                "{refused}"
            );
        }
        assert!(users.authenticate(None).is_err());
        assert!(
            users
                .authenticate(Some(&HeaderValue::from_static("Bearer x")))
                .is_err()
        );
        assert!(!format!("{users:?}").contains("secret"));
    }

    #[test]
    fn a_bad_users_file_names_the_line_and_not_the_password() {
        let error = Users::parse("a:topsecret:superuser").err().unwrap();
        assert!(
            error.contains("line 1") && !error.contains("topsecret"),
            "{error}"
        );
        assert!(Users::parse("just-a-name").is_err());
        assert!(Users::parse("# nothing\n").is_err());
    }

    #[test]
    fn reading_registering_and_administering_need_rising_roles() {
        assert_eq!(needs(&Method::GET, "/subjects"), Role::Read);
        assert_eq!(needs(&Method::POST, "/subjects/s"), Role::Read);
        assert_eq!(
            needs(&Method::POST, "/compatibility/subjects/s/versions/latest"),
            Role::Read
        );
        assert_eq!(needs(&Method::POST, "/subjects/s/versions"), Role::Write);
        assert_eq!(needs(&Method::PUT, "/config/s"), Role::Admin);
        assert_eq!(needs(&Method::PUT, "/mode"), Role::Admin);
        assert_eq!(needs(&Method::DELETE, "/subjects/s"), Role::Admin);
    }
}
