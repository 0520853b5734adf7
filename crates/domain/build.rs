//! Generates the mutation messages from `proto/messages.proto` with the
//! pure-Rust `protox` compiler, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = "../../proto";
    println!("cargo:rerun-if-changed={proto_dir}/messages.proto");
    let descriptors = protox::compile(["messages.proto"], [proto_dir])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
