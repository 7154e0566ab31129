//! Node labels (SPEC §6): a pure function from the report to the label map.
//!
//! Placeholder for the full label set (per-vendor keys, sanitiser, compat profiles).

use crate::model::{Gpu, Host, Vendor};
use std::collections::BTreeMap;

/// Default label prefix.
pub const DEFAULT_PREFIX: &str = "gpuscout.io";

/// Optional label profiles that mimic other tools' keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompatProfiles {
    pub nvidia_gfd: bool,
    pub amd_labeller: bool,
    pub intel_nfd: bool,
}

/// How to build labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelConfig {
    pub prefix: String,
    pub compat: CompatProfiles,
}

impl Default for LabelConfig {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            compat: CompatProfiles::default(),
        }
    }
}

/// The labels this node should carry.
pub fn compute(_host: &Host, gpus: &[Gpu], cfg: &LabelConfig) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for v in Vendor::ALL {
        let n = gpus.iter().filter(|g| g.vendor == v).count();
        if n > 0 {
            out.insert(format!("{}/{}.count", cfg.prefix, v), n.to_string());
        }
    }
    out
}

/// Check a label prefix: a DNS subdomain of at most 253 characters.
pub fn validate_prefix(p: &str) -> Result<(), String> {
    if p.is_empty() || p.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    let ok = p.split('.').all(|part| {
        !part.is_empty()
            && part.len() <= 63
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    });
    if ok {
        Ok(())
    } else {
        Err("must be a lowercase DNS subdomain such as gpuscout.io".into())
    }
}
