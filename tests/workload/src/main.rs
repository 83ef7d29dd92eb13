//! Scenario workloads for refscope's guest tests (see docs/scenarios.md).
fn main() -> anyhow::Result<()> {
    anyhow::bail!("no scenario implemented yet")
}
