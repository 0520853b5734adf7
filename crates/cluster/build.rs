//! Generates the CartActor and ControlPlane gRPC code with the pure-Rust
//! `protox` compiler (no system `protoc`), and their encoded descriptors for
//! gRPC reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "../../proto";
    for file in ["cart_actor.proto", "control_plane.proto"] {
        println!("cargo:rerun-if-changed={dir}/{file}");
    }
    let descriptors = protox::compile(["cart_actor.proto", "control_plane.proto"], [dir])?;
    // For gRPC reflection: the services described to tools like grpcurl.
    let out = std::env::var("OUT_DIR")?;
    let encoded = prost::Message::encode_to_vec(&descriptors);
    std::fs::write(std::path::Path::new(&out).join("cart_descriptors.bin"), encoded)?;
    // A line's product travels as the bytes it was encoded in once
    // (`bytes::Bytes`: sending it is a reference count, not a copy).
    tonic_prost_build::configure().bytes(".cart.CartLine.product").compile_fds(descriptors)?;
    Ok(())
}
