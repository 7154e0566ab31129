//! `/etc/os-release`.
#![no_main]
use gpuscout::host::parse_os_release;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    for k in parse_os_release(&s).keys() {
        assert!(!k.is_empty());
    }
});
