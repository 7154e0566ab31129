//! Reads, through [`HostRoot`], the files on which ROCm SMI 5.2 (Debian's build keeps its
//! `assert`s) would abort the process, and says whether the library may read them:
//! - `<pci>/gpu_metrics`: the 4-byte header (`u16 structure_size, u8 format_revision,
//!   u8 content_revision`). The library handles format 1 with content revisions 0–3; for format 1
//!   with a later revision (MI300's v1.4/v1.5) it asserts. Other formats (APUs: 2) it answers
//!   `NOT_SUPPORTED`, so they are skipped as absent.
//! - `<pci>/ras/<block>_err_count`: the library asserts that the file is exactly two lines,
//!   `ue: N` and `ce: N` (`amdgpu_ras.c` before deferred errors were counted). Newer kernels add
//!   `de: N` for UMC and the ACA blocks, and print `Query currently inaccessible` during a reset:
//!   those are refused.
//!
//! A missing file is absent (`Ok(false)`, the library would answer `NOT_SUPPORTED`); a file
//! that cannot be read or would make the library abort is `Err(reason)`. The library reads the
//! real `/sys` and this module reads through `--root`: in the agent's pod both are the host's
//! sysfs. A file that changes between the check and the library's read is not covered.

use crate::hostroot::HostRoot;
use crate::pci::PciAddress;

/// The `gpu_metrics` content revisions of format 1 that ROCm SMI 5.2 parses.
const GPU_METRICS_V1_CONTENT_MAX: u8 = 3;

/// Vets the files ROCm SMI could abort on, by PCI address.
#[derive(Debug, Clone)]
pub struct Preflight {
    root: HostRoot,
}

impl Preflight {
    pub fn new(root: HostRoot) -> Self {
        Self { root }
    }

    fn device(addr: PciAddress) -> String {
        format!("sys/bus/pci/devices/{addr}")
    }

    /// May the library read `gpu_metrics` of `addr`?
    pub fn gpu_metrics(&self, addr: PciAddress) -> Result<bool, String> {
        let path = format!("{}/gpu_metrics", Self::device(addr));
        let bytes = match self.root.read_bytes(&path) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e.to_string()),
        };
        gpu_metrics_header(&bytes).map_err(|why| format!("{path}: {why}"))
    }

    /// May the library read `ras/<block>_err_count` of `addr`?
    pub fn ras_count(&self, addr: PciAddress, block: &str) -> Result<bool, String> {
        let path = format!("{}/ras/{block}_err_count", Self::device(addr));
        match self.root.read_string(&path) {
            Ok(text) => ras_count_text(&text).map_err(|why| format!("{path}: {why}")),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// `Ok(true)`: format 1, content 0–3. `Ok(false)`: another format (the library answers
/// `NOT_SUPPORTED`). `Err`: too short to hold a header, or a format-1 revision it aborts on.
pub fn gpu_metrics_header(bytes: &[u8]) -> Result<bool, String> {
    let [_, _, format, content, ..] = *bytes else {
        return Err(format!("{} bytes, shorter than its header", bytes.len()));
    };
    match (format, content) {
        (1, c) if c <= GPU_METRICS_V1_CONTENT_MAX => Ok(true),
        (1, c) => Err(format!(
            "gpu_metrics v1.{c}: ROCm SMI 5.2 aborts on revisions above v1.{GPU_METRICS_V1_CONTENT_MAX}, energy not read"
        )),
        _ => Ok(false),
    }
}

/// `Ok(true)` for exactly `ue: N\nce: N\n`; `Err` for anything ROCm SMI 5.2 would abort on.
pub fn ras_count_text(text: &str) -> Result<bool, String> {
    let lines: Vec<&str> = text.lines().collect();
    let num = |line: &str, key: &str| {
        line.strip_prefix(key)
            .map(str::trim)
            .is_some_and(|n| n.parse::<u64>().is_ok())
    };
    if lines.len() == 2 && num(lines[0], "ue:") && num(lines[1], "ce:") {
        Ok(true)
    } else {
        let mut shown = text.trim().to_owned();
        crate::textcap::cap(&mut shown, 64);
        Err(format!(
            "{shown:?} is not the two-line `ue: N` / `ce: N` that ROCm SMI 5.2 asserts on, not read"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocm_preflight_gpu_metrics_header() {
        assert_eq!(gpu_metrics_header(&[120, 0, 1, 3]), Ok(true));
        assert_eq!(gpu_metrics_header(&[96, 0, 1, 0, 0]), Ok(true));
        // APU table (format 2): the library says NOT_SUPPORTED by itself.
        assert_eq!(gpu_metrics_header(&[112, 0, 2, 2]), Ok(false));
        assert!(gpu_metrics_header(&[0, 1, 1, 5]).is_err());
        assert!(gpu_metrics_header(&[1, 0]).is_err());
    }

    #[test]
    fn rocm_preflight_ras_count_text() {
        assert_eq!(ras_count_text("ue: 0\nce: 12\n"), Ok(true));
        assert!(ras_count_text("ue: 0\nce: 12\nde: 1\n").is_err());
        assert!(ras_count_text("Query currently inaccessible\n").is_err());
        assert!(ras_count_text("ce: 1\nue: 0\n").is_err());
        assert!(ras_count_text("").is_err());
    }
}
