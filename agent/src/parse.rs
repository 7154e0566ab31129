//! Parsers for the small text formats of sysfs and procfs attributes.
//!
//! Pure functions on strings: no I/O. Each rejects what the kernel would never print (so
//! garbage in a hostile tree becomes a [`ParseError`], never a made-up number).

use crate::hostroot::{Error as ReadError, Resolved};
use std::str::FromStr;

/// A value that does not have the expected format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed value {value:?}: expected {expected}")]
pub struct ParseError {
    pub value: String,
    pub expected: &'static str,
}

impl ParseError {
    fn new(value: &str, expected: &'static str) -> Self {
        let mut value = value.trim().to_owned();
        if value.len() > 40 {
            let cut = (0..=40)
                .rev()
                .find(|i| value.is_char_boundary(*i))
                .unwrap_or(0);
            value.truncate(cut);
            value.push('…');
        }
        Self { value, expected }
    }

    /// Attach the file this value came from.
    pub fn at(self, dir: &Resolved, name: &str) -> ReadError {
        ReadError::Malformed {
            path: format!("{}/{name}", dir.host_display()),
            reason: self.to_string(),
        }
    }
}

/// `0x%04x` (sysfs `vendor`, `device`, ...). The `0x` prefix is optional (`sriov_vf_device`).
pub fn hex_u16(s: &str) -> Result<u16, ParseError> {
    let v = hex_u32(s)?;
    u16::try_from(v).map_err(|_| ParseError::new(s, "a 16-bit hex id"))
}

/// `0x%06x` (sysfs `class`) and other hex numbers.
pub fn hex_u32(s: &str) -> Result<u32, ParseError> {
    let t = s.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ParseError::new(s, "a hex number"));
    }
    u32::from_str_radix(digits, 16).map_err(|_| ParseError::new(s, "a hex number"))
}

/// A decimal integer (`%d`, `%u`, `%llu`).
pub fn int<T: FromStr>(s: &str) -> Result<T, ParseError> {
    s.trim()
        .parse()
        .map_err(|_| ParseError::new(s, "a decimal integer"))
}

/// PCIe link speed in GT/s from `16.0 GT/s PCIe` or older `8 GT/s`. The kernel prints
/// `Unknown` for links it cannot read (integrated GPUs, VFs): that is `None`, not an error.
pub fn link_speed_gts(s: &str) -> Result<Option<f64>, ParseError> {
    let t = s.trim();
    if t == "Unknown" {
        return Ok(None);
    }
    let num = t
        .split_once("GT/s")
        .map(|(n, _)| n.trim())
        .ok_or_else(|| ParseError::new(s, "a link speed like `16.0 GT/s PCIe`"))?;
    let v: f64 = num
        .parse()
        .map_err(|_| ParseError::new(s, "a link speed like `16.0 GT/s PCIe`"))?;
    if v.is_finite() && v > 0.0 {
        Ok(Some(v))
    } else {
        Err(ParseError::new(s, "a positive link speed"))
    }
}

/// PCIe link width in lanes from `current_link_width` / `max_link_width` (`%u`). The kernel
/// prints the raw register field: `0` when the Link Status register reads 0 (no trained link,
/// a root-complex integrated GPU, an SR-IOV VF) and `255` (`PCIE_LNK_WIDTH_UNKNOWN`) from
/// `pcie_get_width_cap()` when the Link Capabilities register reads 0 (see
/// `drivers/pci/pci-sysfs.c` and `drivers/pci/pci.c`). Both mean "unknown": `None`, never a
/// width of 0. Real widths are 1 to 32 lanes; anything else is malformed.
pub fn link_width(s: &str) -> Result<Option<u32>, ParseError> {
    match int::<u32>(s) {
        Ok(0 | 255) => Ok(None),
        Ok(w @ 1..=32) => Ok(Some(w)),
        _ => Err(ParseError::new(s, "a link width of 1 to 32 lanes")),
    }
}

/// `key value` lines (KFD `properties`): decimal values, single space. Lines that do not
/// parse are skipped; callers check for the keys they need.
pub fn key_values(s: &str) -> Vec<(&str, u64)> {
    s.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(' ')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect()
}

/// `Key: value` lines (NVIDIA `information`, `os-release`-like): split at the first colon and
/// trim both sides.
pub fn colon_fields(s: &str) -> Vec<(&str, &str)> {
    s.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim(), v.trim()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids() {
        assert_eq!(hex_u16("0x1002\n").unwrap(), 0x1002);
        assert_eq!(hex_u16("56c0").unwrap(), 0x56c0);
        assert_eq!(hex_u32("0x030000\n").unwrap(), 0x030000);
        for bad in [
            "",
            "0x",
            "zz",
            "\u{fffd}\u{fffd}NaN",
            "0x123456789",
            "0x10000",
        ] {
            assert!(hex_u16(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn link_speeds() {
        assert_eq!(link_speed_gts("16.0 GT/s PCIe\n").unwrap(), Some(16.0));
        assert_eq!(link_speed_gts("8 GT/s").unwrap(), Some(8.0));
        assert_eq!(link_speed_gts("2.5 GT/s PCIe").unwrap(), Some(2.5));
        assert_eq!(link_speed_gts("Unknown\n").unwrap(), None);
        assert!(link_speed_gts("garbage").is_err());
        assert!(link_speed_gts("NaN GT/s").is_err());
    }

    #[test]
    fn link_widths_zero_and_255_are_unknown() {
        assert_eq!(link_width("16\n").unwrap(), Some(16));
        assert_eq!(link_width("1").unwrap(), Some(1));
        // LNKSTA reads 0 (no link): the kernel prints 0, which is not a width.
        assert_eq!(link_width("0\n").unwrap(), None);
        // LNKCAP reads 0: pcie_get_width_cap() gives PCIE_LNK_WIDTH_UNKNOWN.
        assert_eq!(link_width("255\n").unwrap(), None);
        assert!(link_width("-16").is_err());
        assert!(link_width("64").is_err());
        assert!(link_width("x16").is_err());
    }

    #[test]
    fn kv_and_colon_fields() {
        let kv = key_values("simd_count 80\nsimd_per_cu 2\nbroken\nx y\n");
        assert_eq!(kv, vec![("simd_count", 80), ("simd_per_cu", 2)]);
        let cf = colon_fields("Model: \t\t NVIDIA A10G\nGPU UUID: \t GPU-1\n");
        assert_eq!(cf[0], ("Model", "NVIDIA A10G"));
        assert_eq!(cf[1], ("GPU UUID", "GPU-1"));
    }

    #[test]
    fn long_garbage_is_truncated_in_errors() {
        let e = int::<u64>(&"9".repeat(100)).unwrap_err();
        assert!(e.value.len() < 50);
    }
}
