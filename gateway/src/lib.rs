//! The public gRPC gateway.
