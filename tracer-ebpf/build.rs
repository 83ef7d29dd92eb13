//! Rebuild the eBPF object when bpf-linker changes (a new linker can produce a
//! different object; cargo cannot see it otherwise).
fn main() {
    println!("cargo:rerun-if-env-changed=PATH");
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
