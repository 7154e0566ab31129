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

/// `0x%02x` (sysfs `revision`): a value above 0xff is malformed, never truncated.
pub fn hex_u8(s: &str) -> Result<u8, ParseError> {
    let v = hex_u32(s)?;
    u8::try_from(v).map_err(|_| ParseError::new(s, "an 8-bit hex number"))
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

/// Largest YAML or JSON document handed to a parser: the same 256 KiB as every host read.
pub const MAX_DOC_BYTES: usize = 256 * 1024;

/// Deepest nesting a YAML or JSON document may reach before a parser sees it. Talos'
/// `extensions.yaml` needs 7 levels, a COSI spec or talosconfig fewer than 16.
pub const MAX_NESTING: usize = 64;

/// A document refused before parsing: too large, or nested too deep.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundsError {
    #[error("document of {0} bytes is larger than {MAX_DOC_BYTES}")]
    TooLarge(usize),
    #[error("nesting deeper than {MAX_NESTING} levels at line {0}")]
    TooDeep(usize),
}

/// Refuse a YAML (or JSON, which is YAML) text that is too large or could nest deeper than
/// [`MAX_NESTING`], in one linear pass and before any parser sees it. libyaml's scanner costs
/// time quadratic in the nesting depth (`layers: [[[[…]]]]` 100,000 levels deep took 37 s), and
/// the deserializer's own recursion limit comes only after that scan.
///
/// This is an upper bound, not a parser: it counts every flow bracket (`[`, `{`) outside quoted
/// scalars and comments, every block indentation level, and the compact indicators (`- - -`,
/// `? `) at the start of a line, two levels per block level (a key and its value). A document it
/// accepts may still be malformed; one it refuses is either malformed or absurdly deep.
pub fn check_yaml_bounds(text: &str) -> Result<(), BoundsError> {
    if text.len() > MAX_DOC_BYTES {
        return Err(BoundsError::TooLarge(text.len()));
    }
    let mut flow: usize = 0;
    let mut indents: Vec<usize> = Vec::new();
    // Quote state survives line ends: quoted scalars may span lines.
    let mut quote: Option<u8> = None;
    for (n, line) in text.lines().enumerate() {
        let b = line.as_bytes();
        let indent = b.iter().take_while(|c| **c == b' ').count();
        let rest = &b[indent..];
        let mut i = indent;
        let mut block = indents.len();
        if quote.is_none() && flow == 0 && !rest.is_empty() && rest[0] != b'#' {
            while indents.last().is_some_and(|top| *top > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
            block = indents.len();
            // Compact nested blocks on one line: `- - - x`, `? - x`.
            while i < b.len()
                && matches!(b[i], b'-' | b'?')
                && b.get(i + 1).is_none_or(|c| *c == b' ')
            {
                block += 1;
                i += 1;
                while b.get(i) == Some(&b' ') {
                    i += 1;
                }
            }
        }
        let depth_here = |flow: usize| block.saturating_mul(2).saturating_add(flow);
        if depth_here(flow) > MAX_NESTING {
            return Err(BoundsError::TooDeep(n + 1));
        }
        let mut prev = if i == 0 { b' ' } else { b[i - 1] };
        while i < b.len() {
            let c = b[i];
            match quote {
                Some(b'\'') => {
                    if c == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            i += 1;
                        } else {
                            quote = None;
                        }
                    }
                }
                Some(_) => {
                    if c == b'\\' {
                        i += 1;
                    } else if c == b'"' {
                        quote = None;
                    }
                }
                None => {
                    let token_start =
                        matches!(prev, b' ' | b'\t' | b'[' | b'{' | b',' | b':' | b'-' | b'?');
                    match c {
                        b'\'' | b'"' if token_start => quote = Some(c),
                        b'#' if matches!(prev, b' ' | b'\t') || i == 0 => break,
                        b'[' | b'{' => {
                            flow = flow.saturating_add(1);
                            if depth_here(flow) > MAX_NESTING {
                                return Err(BoundsError::TooDeep(n + 1));
                            }
                        }
                        b']' | b'}' => flow = flow.saturating_sub(1),
                        _ => {}
                    }
                }
            }
            prev = c;
            i += 1;
        }
    }
    Ok(())
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
        assert_eq!(hex_u8("0xc1\n").unwrap(), 0xc1);
        assert!(hex_u8("0x1c1").is_err(), "not truncated to 0xc1");
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
    fn yaml_bounds() {
        let ext = "layers:\n  - image: 0.sqsh\n    metadata:\n      name: amdgpu\n      compatibility: {talos: {version: \">= v1.11.0\"}}\n";
        assert_eq!(check_yaml_bounds(ext), Ok(()));
        assert_eq!(check_yaml_bounds("{\"a\": [[1, 2], {\"b\": []}]}"), Ok(()));
        let deep = format!("layers: {}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(check_yaml_bounds(&deep), Err(BoundsError::TooDeep(1)));
        let dashes = format!("{}x", "- ".repeat(40));
        assert!(check_yaml_bounds(&dashes).is_err());
        let mut indented = String::new();
        for d in 0..40 {
            indented.push_str(&format!("{}k{d}:\n", " ".repeat(d)));
        }
        assert!(check_yaml_bounds(&indented).is_err());
        // Brackets inside quoted scalars and comments do not count; a quote mid-scalar is text.
        let quoted = format!(
            "a: '{}'\nb: \"{}\" # {}\n",
            "[".repeat(100),
            "{".repeat(100),
            "[".repeat(100)
        );
        assert_eq!(check_yaml_bounds(&quoted), Ok(()));
        let sneaky = format!("a: [x'{}", "[".repeat(100));
        assert!(check_yaml_bounds(&sneaky).is_err());
        assert_eq!(
            check_yaml_bounds(&"a".repeat(MAX_DOC_BYTES + 1)),
            Err(BoundsError::TooLarge(MAX_DOC_BYTES + 1))
        );
    }

    #[test]
    fn long_garbage_is_truncated_in_errors() {
        let e = int::<u64>(&"9".repeat(100)).unwrap_err();
        assert!(e.value.len() < 50);
    }
}
