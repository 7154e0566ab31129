//! The YAML depth and size guard (`parse::check_yaml_bounds`) in front of `extensions.yaml`,
//! COSI specs and talosconfigs: whatever it accepts parses in bounded time (libFuzzer's
//! `-timeout` catches a slow parse) and, without aliases, never hits the deserializer's own
//! recursion limit; whatever it refuses, `parse_extensions` refuses too.
#![no_main]
use gpuscout::host::parse_extensions;
use gpuscout::parse::check_yaml_bounds;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    match check_yaml_bounds(&s) {
        Ok(()) => {
            if let Err(e) = serde_norway::from_str::<serde_norway::Value>(&s) {
                assert!(
                    s.contains('*') || !e.to_string().contains("recursion limit"),
                    "guard accepted a document nested past the parser's limit: {e}"
                );
            }
            let _ = parse_extensions(&s);
        }
        Err(_) => {
            if !s.trim().is_empty() {
                assert!(parse_extensions(&s).is_err());
            }
        }
    }
});
