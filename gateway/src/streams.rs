//! Bounds on open WatchOrder streams, in total and per client connection. The concurrency
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
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    /// Keyed by the client's address: one TCP connection each.
    by_connection: HashMap<SocketAddr, usize>,
}

/// One open stream's place; given back when dropped (the stream's task ends).
pub struct StreamPermit {
    limits: Arc<StreamLimits>,
    connection: Option<SocketAddr>,
}

impl StreamLimits {
    pub fn new(total: usize, per_connection: usize) -> Arc<StreamLimits> {
        Arc::new(StreamLimits {
            total,
            per_connection,
            open: Mutex::default(),
        })
    }

    /// A place for one more stream on `connection` (unknown for a transport without peer
    /// addresses: then only the total bounds it), or `TooManyStreams`.
    pub fn try_open(
        self: &Arc<Self>,
        connection: Option<SocketAddr>,
    ) -> Result<StreamPermit, GatewayError> {
        let mut open = self.open.lock().expect("stream limits lock");
        if open.total >= self.total {
            return Err(GatewayError::TooManyStreams {
                scope: "on this gateway",
                limit: self.total,
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
        open.total += 1;
        Ok(StreamPermit {
            limits: self.clone(),
            connection,
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
        let limits = StreamLimits::new(3, 2);
        let a1 = limits.try_open(client(1)).unwrap();
        let _a2 = limits.try_open(client(1)).unwrap();
        assert_eq!(refused(limits.try_open(client(1))), "on this connection");
        let _b1 = limits.try_open(client(2)).unwrap();
        assert_eq!(refused(limits.try_open(client(3))), "on this gateway");
        assert_eq!(refused(limits.try_open(None)), "on this gateway");
        drop(a1);
        let _a3 = limits.try_open(client(1)).unwrap();
        assert_eq!(refused(limits.try_open(client(1))), "on this gateway");
    }

    #[test]
    fn a_refused_stream_takes_no_place_and_closed_connections_are_forgotten() {
        let limits = StreamLimits::new(10, 1);
        let first = limits.try_open(client(1)).unwrap();
        refused(limits.try_open(client(1)));
        drop(first);
        let open = limits.open.lock().unwrap();
        assert_eq!(open.total, 0);
        assert!(open.by_connection.is_empty());
    }
}
