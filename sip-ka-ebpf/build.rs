use which::which;

/// Rebuild when bpf-linker changes (aya-template does the same): a new
/// linker can change the object without any source change.
///
/// The linker does the code generation (rustc hands it bitcode), so the
/// code generator's features are chosen here: word loads and stores at
/// any alignment, which the verifier accepts for packet and map memory on
/// architectures with efficient unaligned access (x86_64, arm64).
/// Without it a 4-byte compare is four byte loads and shifts, and a
/// 64-byte clear a byte loop. (`--cpu` is rustc's to pass.)
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    println!("cargo:rustc-link-arg=--cpu-features=+allows-misaligned-mem-access");
}
