//! W3C trace context carried in Kafka headers (`traceparent`), so one order's journey through
//! every service shares one trace id in the logs.

/// A `traceparent` value: `00-<32 hex trace id>-<16 hex span id>-01`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub span_id: String,
}

impl TraceParent {
    /// A new trace (at the edge: an order placed).
    pub fn new_root() -> Self {
        TraceParent {
            trace_id: hex::encode(rand::random::<[u8; 16]>()),
            span_id: new_span_id(),
        }
    }

    /// A child span in the same trace (a service handling a message of this trace).
    pub fn child(&self) -> Self {
        TraceParent {
            trace_id: self.trace_id.clone(),
            span_id: new_span_id(),
        }
    }

    /// Parses a header value, or `None` when it is not a valid version-00 traceparent.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.split('-');
        let (version, trace_id, span_id, _flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        (version == "00" && hex(trace_id, 32) && hex(span_id, 16) && parts.next().is_none()).then(
            || TraceParent {
                trace_id: trace_id.to_owned(),
                span_id: span_id.to_owned(),
            },
        )
    }

    pub fn header(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

fn new_span_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_children_keep_the_trace() {
        let root = TraceParent::new_root();
        assert_eq!(TraceParent::parse(&root.header()), Some(root.clone()));
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_eq!(TraceParent::parse("garbage"), None);
        assert_eq!(TraceParent::parse("01-aa-bb-01"), None);
    }
}
