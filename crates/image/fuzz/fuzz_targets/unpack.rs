//! Unpacking arbitrary tar bytes into a temp dir never panics and never writes beside it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let layer = dir.path().join("layer");
    std::fs::create_dir(&layer).expect("mkdir");
    let _ = vessel_image::unpack::unpack_tar(
        data,
        &layer,
        &vessel_image::unpack::UnpackOptions::default(),
        "fuzz",
        "uncompressed",
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("layer")],
        "something was written outside the layer"
    );
});
