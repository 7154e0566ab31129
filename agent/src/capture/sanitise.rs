//! Identifier sanitiser for host captures: serial numbers and UUIDs become stable fakes.
//!
//! Pure functions over bytes; no I/O. What is replaced:
//!
//! * every UUID-shaped run of text (`8-4-4-4-12` hex digits) anywhere in a captured file or
//!   side file: NVIDIA's `GPU UUID: GPU-…` in `/proc/driver/nvidia/gpus/*/information`, NVML's
//!   `GPU-…`/`MIG-…` UUIDs, DMI `product_uuid`, Talos' machine UUIDs;
//! * the whole content of files that hold one serial number or unique id: AMD
//!   `serial_number`/`unique_id`, DMI `board_serial`/`product_serial`/`chassis_serial`,
//!   [`SERIAL_FILES`];
//! * the load addresses in `/proc/modules` (kernel pointers, shown to root only: they give
//!   away the KASLR offset), which become `0x0000000000000000` as a non-root reader sees them.
//!
//! A fake keeps the shape of the original (same length, `GPU-` prefix, dashes, digit/hex
//! letter/upper/lower class per character), so every parser reads it as it read the original.
//! It is derived from SHA-256 over a key and the original, so one input always gives the same
//! fake under one key: the UUID in `information` and the one NVML reported stay equal, and two
//! captures taken with the same `--id-key` can be compared. A keyed hash, not a plain one: a
//! serial number has few enough possible values to be found again from an unkeyed hash.

use sha2::{Digest, Sha256};

/// Files (by name) whose whole content is one serial number or unique id.
pub const SERIAL_FILES: &[&str] = &[
    "serial_number",
    "unique_id",
    "board_serial",
    "product_serial",
    "chassis_serial",
];

/// The key of the fakes. Same key, same fakes.
#[derive(Clone)]
pub struct Sanitiser {
    key: [u8; 32],
}

impl std::fmt::Debug for Sanitiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sanitiser { key: <hidden> }")
    }
}

impl Sanitiser {
    /// A sanitiser keyed by `key` (any text; hashed to 32 bytes).
    pub fn with_key(key: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"gpuscout-capture-id-key\0");
        h.update(key.as_bytes());
        Self {
            key: h.finalize().into(),
        }
    }

    /// A sanitiser with a key nobody can reproduce: fakes are stable within one capture only.
    pub fn random() -> Self {
        // Four independently seeded generators: std seeds each RandomState from the OS.
        let mut h = Sha256::new();
        for _ in 0..4 {
            use std::hash::{BuildHasher, Hasher};
            let mut s = std::collections::hash_map::RandomState::new().build_hasher();
            s.write_u64(fastrand::u64(..));
            h.update(s.finish().to_le_bytes());
        }
        h.update(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
                .to_le_bytes(),
        );
        Self {
            key: h.finalize().into(),
        }
    }

    /// `len` pseudo-random bytes derived from `(key, what, input)`.
    fn stream(&self, what: &[u8], input: &[u8], len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 32);
        let mut counter: u32 = 0;
        while out.len() < len {
            let mut h = Sha256::new();
            h.update(self.key);
            h.update(what);
            h.update([0]);
            h.update(input);
            h.update(counter.to_le_bytes());
            out.extend_from_slice(&h.finalize());
            counter += 1;
        }
        out.truncate(len);
        out
    }

    /// A fake of `orig` with the same shape: digits stay digits, lower-case hex letters stay
    /// lower-case hex letters (`a`-`f`), other letters stay letters of their case, everything
    /// else (`-`, `:`, `0x`, spaces) stays. A `0x`/`GPU-`/`MIG-` prefix is kept as it is.
    pub fn fake(&self, orig: &str) -> String {
        let (prefix, body) = split_prefix(orig);
        // The prefix is not hashed: `GPU-<u>` and a bare `<u>` get the same fake body.
        let r = self.stream(b"id", body.as_bytes(), body.len());
        // Hex when every letter is a hex digit and there is one: a decimal serial stays decimal.
        let hex = body
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || !b.is_ascii_alphanumeric())
            && body.bytes().any(|b| b.is_ascii_alphabetic());
        let mut out = String::with_capacity(orig.len());
        out.push_str(prefix);
        for (c, x) in body.chars().zip(r) {
            let x = usize::from(x);
            out.push(match c {
                '0'..='9' if hex => char::from(b"0123456789abcdef"[x % 16]).to_ascii_lowercase(),
                '0'..='9' => char::from(b'0' + (x % 10) as u8),
                'a'..='f' if hex => char::from(b"0123456789abcdef"[x % 16]),
                'A'..='F' if hex => char::from(b"0123456789ABCDEF"[x % 16]),
                'a'..='z' => char::from(b'a' + (x % 26) as u8),
                'A'..='Z' => char::from(b'A' + (x % 26) as u8),
                other => other,
            });
        }
        // Keep the case style of a hex id: an upper-case original stays upper case.
        if hex
            && body.bytes().any(|b| b.is_ascii_uppercase())
            && !body.bytes().any(|b| b.is_ascii_lowercase())
        {
            let (p, b) = out.split_at(prefix.len());
            return format!("{p}{}", b.to_ascii_uppercase());
        }
        out
    }

    /// Replace every UUID in `text` with its fake.
    pub fn text(&self, text: &str) -> String {
        let b = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        let mut i = 0;
        while i + UUID_LEN <= b.len() {
            if is_uuid_at(b, i) {
                out.push_str(&text[last..i]);
                out.push_str(&self.fake(&text[i..i + UUID_LEN]));
                i += UUID_LEN;
                last = i;
            } else {
                i += 1;
            }
        }
        out.push_str(&text[last..]);
        out
    }

    /// Sanitise one captured file: `host_path` is its path in the host root (`/sys/...`).
    /// Binary content (not UTF-8) is kept as it is unless the file is a serial file.
    pub fn file(&self, host_path: &str, content: &[u8]) -> Vec<u8> {
        let name = host_path.rsplit('/').next().unwrap_or(host_path);
        let Ok(text) = std::str::from_utf8(content) else {
            if SERIAL_FILES.contains(&name) {
                return self.stream(b"bin", content, content.len());
            }
            return content.to_vec();
        };
        if SERIAL_FILES.contains(&name) {
            let t = text.trim();
            if t.is_empty() {
                return content.to_vec();
            }
            return text.replacen(t, &self.fake(t), 1).into_bytes();
        }
        if host_path == "/proc/modules" {
            return zero_module_addresses(text).into_bytes();
        }
        self.text(text).into_bytes()
    }
}

const UUID_LEN: usize = 36;

/// True when `b[i..i+36]` is `8-4-4-4-12` hex digits and not part of a longer hex run.
fn is_uuid_at(b: &[u8], i: usize) -> bool {
    if i > 0 && b[i - 1].is_ascii_hexdigit() {
        return false;
    }
    if b.get(i + UUID_LEN).is_some_and(u8::is_ascii_hexdigit) {
        return false;
    }
    b[i..i + UUID_LEN].iter().enumerate().all(|(k, c)| match k {
        8 | 13 | 18 | 23 => *c == b'-',
        _ => c.is_ascii_hexdigit(),
    })
}

fn split_prefix(s: &str) -> (&str, &str) {
    for p in ["GPU-", "MIG-", "0x", "0X"] {
        if let Some(rest) = s.strip_prefix(p) {
            return (&s[..p.len()], rest);
        }
    }
    ("", s)
}

/// `/proc/modules`: `name size refcount deps state address [taint]`; the address becomes
/// zeros of the same width.
fn zero_module_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let mut fields = 0;
        let mut rebuilt = String::with_capacity(line.len());
        for (k, part) in line.split(' ').enumerate() {
            if k > 0 {
                rebuilt.push(' ');
            }
            fields += 1;
            match part.strip_prefix("0x") {
                Some(hex) if fields == 6 && !hex.is_empty() => {
                    let digits = hex.trim_end_matches('\n');
                    if digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                        rebuilt.push_str("0x");
                        rebuilt.push_str(&"0".repeat(digits.len()));
                        rebuilt.push_str(&hex[digits.len()..]);
                    } else {
                        rebuilt.push_str(part);
                    }
                }
                _ => rebuilt.push_str(part),
            }
        }
        out.push_str(&rebuilt);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "GPU-5b2c7e0a-3f41-9d86-1c2e-7a4f0b9d3e61";

    #[test]
    fn a_uuid_gets_the_same_fake_under_one_key_and_another_under_another() {
        let s = Sanitiser::with_key("k1");
        let a = s.text(&format!("GPU UUID: \t {U}\n"));
        let b = s.text(&format!("uuid={U}"));
        let fake = a.trim_start_matches("GPU UUID: \t ").trim_end();
        assert_ne!(fake, U);
        assert!(fake.starts_with("GPU-") && fake.len() == U.len(), "{fake}");
        assert!(is_uuid_at(fake.as_bytes(), 4), "{fake}");
        assert_eq!(b, format!("uuid={fake}"), "stable within a key");
        assert_eq!(
            Sanitiser::with_key("k1").text(U),
            fake,
            "stable across runs"
        );
        assert_ne!(Sanitiser::with_key("k2").text(U), fake);
        assert_ne!(Sanitiser::random().text(U), fake);
    }

    #[test]
    fn only_whole_uuids_are_replaced() {
        let s = Sanitiser::with_key("k");
        // 9 hex digits in front: a longer hex run, not a UUID.
        let long = "a5b2c7e0a-3f41-9d86-1c2e-7a4f0b9d3e61";
        assert_eq!(s.text(long), long);
        assert_eq!(s.text("0x1002\nGC_11_0_0\n"), "0x1002\nGC_11_0_0\n");
        let upper = "5B2C7E0A-3F41-9D86-1C2E-7A4F0B9D3E61";
        let f = s.text(upper);
        assert_ne!(f, upper);
        assert!(!f.bytes().any(|b| b.is_ascii_lowercase()), "{f}");
    }

    #[test]
    fn serial_files_are_replaced_whole_keeping_their_shape() {
        let s = Sanitiser::with_key("k");
        let out = s.file(
            "/sys/devices/pci0000:00/0000:03:00.0/serial_number",
            b"0x1c3e5a7b9d0f2e41\n",
        );
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("0x") && out.ends_with('\n') && out.len() == 19,
            "{out:?}"
        );
        assert_ne!(out, "0x1c3e5a7b9d0f2e41\n");
        let out = s.file("/sys/class/dmi/id/board_serial", b"PM1ZK0ABC123\n");
        let out = String::from_utf8(out).unwrap();
        assert_ne!(out.trim(), "PM1ZK0ABC123");
        assert_eq!(out.len(), 13);
        assert!(
            out.trim()
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
            "{out}"
        );
        // Other files keep their text.
        assert_eq!(s.file("/sys/x/vendor", b"0x1002\n"), b"0x1002\n");
        assert_eq!(s.file("/sys/x/gpu_metrics", &[0xff, 0, 1]), [0xff, 0, 1]);
    }

    #[test]
    fn module_addresses_are_zeroed() {
        let s = Sanitiser::with_key("k");
        let m = "amdgpu 14295040 12 - Live 0xffffffffc1a00000\nnvidia 11321344 2 nvidia_modeset, Live 0xffffffffc0e00000 (POE)\nvfat 24576 0 - Live 0x0000000000000000\n";
        let out = String::from_utf8(s.file("/proc/modules", m.as_bytes())).unwrap();
        assert_eq!(
            out,
            "amdgpu 14295040 12 - Live 0x0000000000000000\nnvidia 11321344 2 nvidia_modeset, Live 0x0000000000000000 (POE)\nvfat 24576 0 - Live 0x0000000000000000\n"
        );
    }
}
