//! `/proc/driver/nvidia/version` and `gpus/<bdf>/information`.
#![no_main]
use gpuscout::vendors::nvidia;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Some(m) = nvidia::parse_version(&s) {
        assert!(m.version.contains('.'));
    }
    let _ = nvidia::parse_information(&s);
});
