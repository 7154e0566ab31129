//! Talos `/etc/extensions.yaml`.
#![no_main]
use gpuscout::host::parse_extensions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(exts) = parse_extensions(&s) {
        assert!(exts.iter().all(|e| e.name != "schematic" && e.name != "modules.dep"));
    }
});
