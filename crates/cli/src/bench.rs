use clap::Args;
/// Flags of `cart-actor bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {}
/// Runs the load generator.
pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    Ok(())
}
