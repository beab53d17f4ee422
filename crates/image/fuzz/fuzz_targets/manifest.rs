//! Manifest, index and config parsing never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let d = vessel_image::Digest::of_bytes(data);
    if let Ok(vessel_image::manifest::Manifestish::Index(i)) = vessel_image::manifest::parse_manifestish(data, &d) {
        let _ = vessel_image::manifest::choose_platform(&i, &d, "fuzz", &vessel_image::Platform::host());
    }
    let _ = vessel_image::manifest::parse_config(data, &d, 1);
});
