//! Builds the XDP program (sip-ka-ebpf) for bpfel-unknown-none with the
//! nightly toolchain and bpf-linker, and leaves it in OUT_DIR for
//! `include_bytes_aligned!`.
use aya_build::{build_ebpf, Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../sip-ka-ebpf");
    build_ebpf(
        [Package {
            name: "sip-ka-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "building the XDP program failed: {e:#}\n\
             it needs the nightly toolchain with rust-src and bpf-linker \
             built against LLVM 22; `cargo xtask setup` installs both"
        )
    })
}
