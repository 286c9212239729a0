#![no_std]
// The program itself is the `sip-ka` binary target (src/main.rs); this
// library target only exists so the crate is a valid build-dependency of
// sip-ka-userspace.
