//! Bounds on open WatchOrder streams: in total, per client connection and per caller. The concurrency
//! limit of the tower stack cannot bound them: its permit is released when WatchOrder returns
//! its stream, long before the stream ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::error::GatewayError;

/// How many streams may be open, and how many are.
pub struct StreamLimits {
    total: usize,
    per_connection: usize,
    per_identity: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    /// Keyed by the client's address: one TCP connection each.
    by_connection: HashMap<SocketAddr, usize>,
    /// Keyed by the authenticated customer.
    by_identity: HashMap<String, usize>,
}

/// One open stream's place; given back when dropped (the stream's task ends).
pub struct StreamPermit {
    limits: Arc<StreamLimits>,
    connection: Option<SocketAddr>,
    identity: Option<String>,
}

impl StreamLimits {
    pub fn new(total: usize, per_connection: usize, per_identity: usize) -> Arc<StreamLimits> {
        Arc::new(StreamLimits {
            total,
            per_connection,
            per_identity,
            open: Mutex::default(),
        })
    }

    /// A place for one more stream on `connection` (unknown for a transport without peer
    /// addresses) for `identity` (none when authentication is off), or `TooManyStreams`.
    pub fn try_open(
        self: &Arc<Self>,
        connection: Option<SocketAddr>,
        identity: Option<&str>,
    ) -> Result<StreamPermit, GatewayError> {
        let mut open = self.open.lock().expect("stream limits lock");
        if open.total >= self.total {
            return Err(GatewayError::TooManyStreams {
                scope: "on this gateway",
                limit: self.total,
            });
        }
        if let Some(identity) = identity
            && open.by_identity.get(identity).copied().unwrap_or(0) >= self.per_identity
        {
            return Err(GatewayError::TooManyStreams {
                scope: "for this caller",
                limit: self.per_identity,
            });
        }
        if let Some(connection) = connection {
            let on_connection = open.by_connection.entry(connection).or_default();
            if *on_connection >= self.per_connection {
                return Err(GatewayError::TooManyStreams {
                    scope: "on this connection",
                    limit: self.per_connection,
                });
            }
            *on_connection += 1;
        }
        if let Some(identity) = identity {
            *open.by_identity.entry(identity.to_owned()).or_default() += 1;
        }
        open.total += 1;
        Ok(StreamPermit {
            limits: self.clone(),
            connection,
            identity: identity.map(str::to_owned),
        })
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().expect("stream limits lock");
        open.total -= 1;
        if let Some(connection) = self.connection
            && let Some(on_connection) = open.by_connection.get_mut(&connection)
        {
            *on_connection -= 1;
            if *on_connection == 0 {
                open.by_connection.remove(&connection);
            }
        }
        if let Some(identity) = &self.identity
            && let Some(for_identity) = open.by_identity.get_mut(identity)
        {
            *for_identity -= 1;
            if *for_identity == 0 {
                open.by_identity.remove(identity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn refused(result: Result<StreamPermit, GatewayError>) -> &'static str {
        match result {
            Err(GatewayError::TooManyStreams { scope, .. }) => scope,
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a stream beyond the bound was allowed"),
        }
    }

    #[test]
    fn streams_are_bounded_per_connection_and_in_total() {
        let limits = StreamLimits::new(3, 2, 10);
        let a1 = limits.try_open(client(1), None).unwrap();
        let _a2 = limits.try_open(client(1), None).unwrap();
        assert_eq!(
            refused(limits.try_open(client(1), None)),
            "on this connection"
        );
        let _b1 = limits.try_open(client(2), None).unwrap();
        assert_eq!(refused(limits.try_open(client(3), None)), "on this gateway");
        assert_eq!(refused(limits.try_open(None, None)), "on this gateway");
        drop(a1);
        let _a3 = limits.try_open(client(1), None).unwrap();
        assert_eq!(refused(limits.try_open(client(1), None)), "on this gateway");
    }

    #[test]
    fn streams_are_bounded_per_caller_across_connections() {
        let limits = StreamLimits::new(10, 10, 2);
        let a1 = limits.try_open(client(1), Some("alice")).unwrap();
        let _a2 = limits.try_open(client(2), Some("alice")).unwrap();
        assert_eq!(
            refused(limits.try_open(client(3), Some("alice"))),
            "for this caller"
        );
        let _b1 = limits.try_open(client(1), Some("bob")).unwrap();
        drop(a1);
        let _a3 = limits.try_open(client(3), Some("alice")).unwrap();
    }

    #[test]
    fn a_refused_stream_takes_no_place_and_closed_connections_are_forgotten() {
        let limits = StreamLimits::new(10, 1, 1);
        let first = limits.try_open(client(1), Some("alice")).unwrap();
        refused(limits.try_open(client(1), Some("bob")));
        refused(limits.try_open(client(2), Some("alice")));
        drop(first);
        let open = limits.open.lock().unwrap();
        assert_eq!(open.total, 0);
        assert!(open.by_connection.is_empty());
        assert!(open.by_identity.is_empty());
    }
}
