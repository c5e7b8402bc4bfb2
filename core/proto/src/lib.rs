//! Types and gRPC stubs generated from `proto/`. The public API is `orderflow.v1`; the
//! order, history and analytics services' own APIs, used only by the gateway, are
//! `internal::v1`.
//! [`convert`] turns requests into domain types and domain values into messages.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod convert;

/// The public API: `orderflow.v1`.
pub mod v1 {
    tonic::include_proto!("orderflow.v1");
}

/// The order, history and analytics services' APIs for the gateway: `orderflow.internal.v1`.
pub mod internal {
    pub mod v1 {
        tonic::include_proto!("orderflow.internal.v1");
    }
}

/// Encoded `FileDescriptorSet` of every proto file, the internal API included.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("orderflow_descriptor");

/// The descriptor set the gateway reflects: everything but the internal API, which the
/// gateway does not serve (listing it would send grpcurl users to calls that fail).
pub fn public_descriptor_set() -> Vec<u8> {
    use prost::Message;
    let mut set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
        .expect("generated descriptor set decodes");
    set.file
        .retain(|f| !f.package().starts_with("orderflow.internal"));
    set.encode_to_vec()
}
