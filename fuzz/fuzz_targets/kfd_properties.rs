//! KFD topology `properties` files and gfx target names.
#![no_main]
use gpuscout::vendors::amd;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let n = amd::parse_kfd_properties(1, &s);
    if let Some(v) = n.gfx_target_version {
        if let Some(t) = amd::gfx_target_name(v) {
            assert!(t.starts_with("gfx"));
            let _ = amd::family_of(&t);
        }
    }
});
