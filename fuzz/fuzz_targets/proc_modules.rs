//! `/proc/modules`.
#![no_main]
use gpuscout::host::parse_proc_modules;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    for m in parse_proc_modules(&s) {
        assert!(!m.name.is_empty());
        assert!(matches!(m.state.as_str(), "live" | "loading" | "unloading"));
    }
});
