//! Generates the mutation messages from `proto/messages.proto` and the
//! snapshot format from `proto/snapshot.proto` with the pure-Rust `protox`
//! compiler, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = "../../proto";
    println!("cargo:rerun-if-changed={proto_dir}/messages.proto");
    println!("cargo:rerun-if-changed={proto_dir}/snapshot.proto");
    // Serialize: an event's contents as JSON, for the cart inspector.
    prost_build::Config::new()
        .message_attribute(".messages", "#[derive(serde::Serialize)]")
        .message_attribute(".messages", "#[serde(rename_all = \"camelCase\")]")
        .compile_fds(protox::compile(["messages.proto"], [proto_dir])?)?;
    // The snapshot refers to the mutation messages generated above.
    prost_build::Config::new()
        .extern_path(".messages", "crate::proto")
        .bytes([".snapshot.Line.product"])
        .compile_fds(protox::compile(["snapshot.proto"], [proto_dir])?)?;
    Ok(())
}
