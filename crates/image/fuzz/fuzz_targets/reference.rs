//! Reference parsing never panics, and what parses prints back to itself.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(r) = vessel_image::Reference::parse(s) {
            let again = vessel_image::Reference::parse(&r.to_string()).expect("a printed reference parses");
            assert_eq!(again, r);
        }
    }
});
