//! `src/export/generated/onnx.rs` is what prost-build generates from the
//! vendored `proto/onnx.proto` (protox parses the proto, so no `protoc` is
//! needed). The generated code is committed so that building wfrun needs
//! neither; this test regenerates it and fails if the committed copy differs.
//! `WFRUN_REGENERATE_ONNX_PROTO=1 cargo test --test onnx_proto` rewrites it
//! (after updating the proto, say).

use std::path::Path;

#[test]
fn generated_onnx_code_is_what_the_vendored_proto_gives() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let proto = root.join("proto");
    let committed = root.join("src/export/generated/onnx.rs");
    let files = protox::compile([proto.join("onnx.proto")], [&proto]).expect("parse onnx.proto");
    let out = tempfile::tempdir().unwrap();
    prost_build::Config::new()
        .out_dir(out.path())
        // The proto's comments hold indented diagrams that rustdoc would run
        // as doctests; the proto itself is the documentation.
        .disable_comments(["."])
        .compile_fds(files)
        .expect("generate Rust from onnx.proto");
    let generated = std::fs::read_to_string(out.path().join("onnx.rs")).unwrap();
    if std::env::var_os("WFRUN_REGENERATE_ONNX_PROTO").is_some_and(|v| v == "1") {
        std::fs::write(&committed, &generated).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&committed).unwrap_or_default();
    assert!(
        current == generated,
        "{} is not what {} generates; run `WFRUN_REGENERATE_ONNX_PROTO=1 cargo test --test onnx_proto` and commit the result",
        committed.display(),
        proto.join("onnx.proto").display()
    );
}
