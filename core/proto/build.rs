//! Generates the gRPC types from the repository's `proto/` directory.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        proto_root.join("orderflow/v1/orderflow.proto"),
        proto_root.join("orderflow/internal/v1/order_store.proto"),
        proto_root.join("orderflow/internal/v1/history_store.proto"),
        proto_root.join("orderflow/internal/v1/analytics_store.proto"),
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("orderflow_descriptor.bin"))
        .compile_protos(&files, std::slice::from_ref(&proto_root))?;
    println!("cargo:rerun-if-changed={}", proto_root.display());
    Ok(())
}
