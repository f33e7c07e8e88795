//! Compiles `proto/` with protox (pure Rust, no system protoc) and writes the file
//! descriptor set that server reflection serves.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=third_party/envoy-proto");

    let protos: Vec<PathBuf> = std::fs::read_dir("proto/portcullis/v1")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    let mut protos: Vec<PathBuf> = protos
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .map(|p| p.strip_prefix("proto").map(PathBuf::from))
        .collect::<Result<_, _>>()?;
    protos.sort();

    let fds = protox::compile(&protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("portcullis_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    // Envoy's ext_authz service: its Rust types come from envoy-types; reflection needs
    // its descriptors, with every file they import.
    let envoy = protox::Compiler::new(["third_party/envoy-proto"])?
        .include_imports(true)
        .open_file("envoy/service/auth/v3/external_auth.proto")?
        .file_descriptor_set();
    std::fs::write(
        out_dir.join("envoy_authz_descriptor.bin"),
        envoy.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // Messages carrying passwords get a redacting Debug by hand (src/grpc/password.rs).
        .skip_debug([
            "portcullis.v1.RegisterRequest",
            "portcullis.v1.LoginRequest",
            "portcullis.v1.ChangePasswordRequest",
            "portcullis.v1.ResetPasswordRequest",
        ])
        .compile_fds(fds)?;
    Ok(())
}
