//! Link the guest as a freestanding static ELF at the addresses given by `link.ld`.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
    for arg in [
        format!("-T{dir}/link.ld"),
        "-nostartfiles".into(),
        "-nostdlib".into(),
        "-static".into(),
        "-no-pie".into(),
        "-Wl,--build-id=none".into(),
        "-Wl,-z,norelro".into(),
        "-Wl,--no-eh-frame-hdr".into(),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
