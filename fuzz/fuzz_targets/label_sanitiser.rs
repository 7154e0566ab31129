//! The label value sanitiser: whatever it returns must be a valid Kubernetes label value.
#![no_main]
use gpuscout::labels::sanitize_value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Some(v) = sanitize_value(&s) {
        assert!(!v.is_empty() && v.len() <= 63, "{v:?}");
        assert!(v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "{v:?}");
        assert!(v.as_bytes()[0].is_ascii_alphanumeric(), "{v:?}");
        assert!(v.as_bytes()[v.len() - 1].is_ascii_alphanumeric(), "{v:?}");
        // Idempotent: a valid value stays as it is.
        assert_eq!(sanitize_value(&v).as_deref(), Some(v.as_str()));
    }
});
