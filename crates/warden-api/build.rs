//! Compiles `proto/vmprovisioner/v1/vm.proto` without `protoc`: protox parses it into a
//! FileDescriptorSet, tonic-prost-build emits the prost messages plus the tonic client and
//! server, and pbjson-build emits proto3-JSON serde impls for every message.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/vmprovisioner/v1/vm.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-changed=build.rs");

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_file(proto)?;
    let fds = compiler.file_descriptor_set();
    let encoded = compiler.encode_file_descriptor_set();

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("vmprovisioner_descriptor.bin"), &encoded)?;

    let mut config = prost_build::Config::new();
    // `impl prost::Name` gives messages their full names, for error messages.
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(true)
        .emit_rerun_if_changed(false)
        .compile_fds_with_config(fds, config)?;

    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .out_dir(&out_dir)
        .build(&[".vmprovisioner.v1"])?;
    Ok(())
}
