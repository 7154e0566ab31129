//! Parser of one DRM client's `/proc/<pid>/fdinfo/<fd>` (kernel
//! `Documentation/gpu/drm-usage-stats.rst`). Pure text in, [`DrmClient`] out; no I/O.
//!
//! Keys read (one `key: value` pair per line, whitespace after the colon ignored):
//! - `drm-driver` (mandatory: a file without it is not a DRM client), `drm-pdev` (PCI address),
//!   `drm-client-id` (one `struct drm_file`; the de-duplication key);
//! - `drm-engine-<engine>: <uint> ns`: busy time per engine (amdgpu, i915);
//! - `drm-cycles-<engine>` / `drm-total-cycles-<engine>`: busy and total GPU-timestamp cycles
//!   (xe, which has no `drm-engine-*`);
//! - `drm-resident-<region>` and its deprecated alias `drm-memory-<region>` (amdgpu before 6.x),
//!   with `KiB`/`MiB` units; `drm-total-<region>` only for a region that has neither.
//!
//! Ignored on purpose: `drm-engine-capacity-*` (engine groups; the busy time is exported as the
//! kernel gives it, so it can exceed wall time on i915 `video` with capacity 2), `drm-maxfreq-*`,
//! `drm-shared-*`, `drm-purgeable-*`, `drm-active-*`, `drm-client-name` and driver-specific keys
//! (`amd-*`, `xe-*`). A value that does not parse is skipped and counted in
//! [`DrmClient::malformed`]; the rest of the file is still used.

use std::collections::BTreeMap;

/// One DRM client as its fdinfo describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrmClient {
    pub driver: String,
    /// PCI address (`0000:03:00.0`), when the driver gives one.
    pub pdev: Option<String>,
    pub client_id: Option<u64>,
    /// `drm-ino`-free identity of the open file: the `ino:` line of the generic fdinfo part.
    pub ino: Option<u64>,
    /// Busy nanoseconds per engine (`drm-engine-<engine>`).
    pub engines_ns: BTreeMap<String, u64>,
    /// xe: (busy cycles, total cycles) per engine.
    pub cycles: BTreeMap<String, (u64, u64)>,
    /// Resident bytes per memory region.
    pub memory: BTreeMap<String, u64>,
    /// Values that did not parse (skipped).
    pub malformed: u32,
}

/// Longest engine or region name accepted (the kernel's are under 20 characters).
const MAX_NAME: usize = 32;

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn uint(v: &str) -> Option<u64> {
    v.split_whitespace().next()?.parse().ok()
}

/// `<uint> [KiB|MiB|GiB]` in bytes.
fn bytes(v: &str) -> Option<u64> {
    let mut it = v.split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    let mul = match it.next() {
        None => 1,
        Some("KiB") => 1 << 10,
        Some("MiB") => 1 << 20,
        Some("GiB") => 1 << 30,
        Some(_) => return None,
    };
    n.checked_mul(mul)
}

/// `<uint> ns`.
fn nanos(v: &str) -> Option<u64> {
    let mut it = v.split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    match it.next() {
        None | Some("ns") => Some(n),
        Some(_) => None,
    }
}

/// Parse an fdinfo text. `None` when it has no `drm-driver` line (not a DRM file).
pub fn parse(text: &str) -> Option<DrmClient> {
    let mut c = DrmClient::default();
    let mut has_driver = false;
    let mut cycles: BTreeMap<String, u64> = BTreeMap::new();
    let mut total_cycles: BTreeMap<String, u64> = BTreeMap::new();
    let mut resident: BTreeMap<String, u64> = BTreeMap::new();
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        let value = value.trim();
        if key == "ino" {
            c.ino = uint(value);
            continue;
        }
        let Some(k) = key.strip_prefix("drm-") else {
            continue;
        };
        let mut bad = false;
        if k == "driver" {
            has_driver = !value.is_empty();
            c.driver = value.to_owned();
        } else if k == "pdev" {
            c.pdev = Some(value.to_ascii_lowercase());
        } else if k == "client-id" {
            c.client_id = uint(value);
            bad = c.client_id.is_none();
        } else if k.starts_with("engine-capacity-") || k.starts_with("maxfreq-") {
        } else if let Some(e) = k.strip_prefix("engine-") {
            match nanos(value) {
                Some(n) if valid_name(e) => {
                    c.engines_ns.insert(e.to_owned(), n);
                }
                _ => bad = true,
            }
        } else if let Some(e) = k.strip_prefix("total-cycles-") {
            match uint(value) {
                Some(n) if valid_name(e) => {
                    total_cycles.insert(e.to_owned(), n);
                }
                _ => bad = true,
            }
        } else if let Some(e) = k.strip_prefix("cycles-") {
            match uint(value) {
                Some(n) if valid_name(e) => {
                    cycles.insert(e.to_owned(), n);
                }
                _ => bad = true,
            }
        } else if let Some(r) = k
            .strip_prefix("resident-")
            .or_else(|| k.strip_prefix("memory-"))
        {
            match bytes(value) {
                Some(n) if valid_name(r) => {
                    resident.insert(r.to_owned(), n);
                }
                _ => bad = true,
            }
        } else if let Some(r) = k.strip_prefix("total-") {
            match bytes(value) {
                Some(n) if valid_name(r) => {
                    total.insert(r.to_owned(), n);
                }
                _ => bad = true,
            }
        }
        if bad {
            c.malformed += 1;
        }
    }
    if !has_driver {
        return None;
    }
    for (e, busy) in cycles {
        if let Some(t) = total_cycles.get(&e) {
            c.cycles.insert(e, (busy, *t));
        }
    }
    for (r, n) in total {
        resident.entry(r).or_insert(n);
    }
    c.memory = resident;
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    // amdgpu, Linux 6.12 (amdgpu_show_fdinfo + drm_show_memory_stats): the kernel doc's keys
    // with amdgpu's engine names; see tests/fixtures/README.md for the capture this follows.
    const AMDGPU: &str = "pos:\t0\nflags:\t02100002\nmnt_id:\t24\nino:\t1077\n\
drm-driver:\tamdgpu\ndrm-client-id:\t103\ndrm-pdev:\t0000:03:00.0\npasid:\t32781\n\
drm-total-cpu:\t0\ndrm-shared-cpu:\t0\ndrm-active-cpu:\t0\ndrm-resident-cpu:\t0\n\
drm-purgeable-cpu:\t0\ndrm-total-gtt:\t4 MiB\ndrm-shared-gtt:\t0\ndrm-active-gtt:\t0\n\
drm-resident-gtt:\t4 MiB\ndrm-purgeable-gtt:\t0\ndrm-total-vram:\t524288 KiB\n\
drm-shared-vram:\t0\ndrm-active-vram:\t0\ndrm-resident-vram:\t524288 KiB\n\
drm-purgeable-vram:\t0\ndrm-engine-gfx:\t12534898120 ns\ndrm-engine-compute:\t0 ns\n\
drm-engine-dec:\t51000 ns\namd-evicted-vram:\t0 KiB\n";

    #[test]
    fn amdgpu_engines_and_resident_memory() {
        let c = parse(AMDGPU).unwrap();
        assert_eq!(c.driver, "amdgpu");
        assert_eq!(c.client_id, Some(103));
        assert_eq!(c.ino, Some(1077));
        assert_eq!(c.pdev.as_deref(), Some("0000:03:00.0"));
        assert_eq!(c.engines_ns["gfx"], 12_534_898_120);
        assert_eq!(c.engines_ns["dec"], 51_000);
        assert_eq!(c.memory["vram"], 524_288 * 1024);
        assert_eq!(c.memory["gtt"], 4 << 20);
        assert_eq!(c.memory["cpu"], 0);
        assert_eq!(c.malformed, 0);
    }

    #[test]
    fn legacy_drm_memory_is_resident() {
        let c = parse("drm-driver: amdgpu\ndrm-memory-vram: 2048 KiB\n").unwrap();
        assert_eq!(c.memory["vram"], 2 << 20);
    }

    #[test]
    fn xe_cycles_pair_up_and_capacity_is_not_an_engine() {
        let t = "drm-driver:\txe\ndrm-client-id:\t9\ndrm-pdev:\t0000:03:00.0\n\
drm-cycles-rcs:\t28257900\ndrm-total-cycles-rcs:\t7655183225\ndrm-cycles-bcs:\t0\n\
drm-total-cycles-bcs:\t7655183225\ndrm-engine-capacity-vcs:\t2\ndrm-total-vram0:\t8192 KiB\n";
        let c = parse(t).unwrap();
        assert_eq!(c.cycles["rcs"], (28_257_900, 7_655_183_225));
        assert!(c.engines_ns.is_empty());
        // no resident line for vram0: the total stands in
        assert_eq!(c.memory["vram0"], 8 << 20);
        assert!(!c.memory.contains_key("cycles-rcs"));
    }

    #[test]
    fn not_drm_and_malformed_values() {
        assert!(parse("pos:\t0\nflags:\t02\nmnt_id:\t3\nino:\t55\n").is_none());
        let c = parse("drm-driver: i915\ndrm-engine-render: lots ns\ndrm-engine-copy: 5 ns\ndrm-engine-bad name: 1 ns\n").unwrap();
        assert_eq!(c.engines_ns.len(), 1);
        assert_eq!(c.malformed, 2);
    }
}
