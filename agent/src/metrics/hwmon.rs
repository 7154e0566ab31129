//! Shared hwmon reader for the amdgpu, i915 and xe sources (not a source itself).
//!
//! Reads `<pci device>/hwmon/hwmonN/` through [`HostRoot`]: `name` picks the driver's own
//! hwmon (i915 also registers `i915_gtN`), then the standard hwmon files with their kernel
//! units: `tempN_input` (m°C) with `tempN_label`, `powerN_average`/`powerN_input`/`powerN_cap`/
//! `powerN_max` (µW), `energyN_input` (µJ), `fanN_input` (RPM), `freqN_input` (Hz) with
//! `freqN_label`. A missing directory or file is absent; unreadable or malformed ones are
//! recorded in [`Errors`].
//!
//! [`HostRoot`]: crate::hostroot::HostRoot

use super::{Errors, parse_num};
use crate::hostroot::{HostRoot, Resolved};

/// One hwmon directory of a device.
pub struct Hwmon<'a> {
    root: &'a HostRoot,
    dir: Resolved,
    files: Vec<String>,
}

impl<'a> Hwmon<'a> {
    /// The hwmon directory of `device` whose `name` is `driver`.
    pub fn find(
        root: &'a HostRoot,
        device: &Resolved,
        driver: &str,
        errors: &mut Errors,
    ) -> Option<Self> {
        let names = errors.ok(root.list_dir(device.host.join("hwmon")))?;
        for n in names.iter().filter(|n| n.starts_with("hwmon")) {
            let Some(dir) = errors.ok(root.resolve(device.host.join("hwmon").join(n))) else {
                continue;
            };
            let name = errors.ok(root.read_attr_trimmed(&dir, "name"));
            if name.as_deref() == Some(driver) {
                let files = errors.ok(root.list_dir(&dir.host)).unwrap_or_default();
                return Some(Self { root, dir, files });
            }
        }
        None
    }

    /// Whether the attribute exists (avoids a failed open per absent file).
    pub fn has(&self, name: &str) -> bool {
        self.files
            .binary_search_by(|f| f.as_str().cmp(name))
            .is_ok()
    }

    /// An integer attribute, if present and well-formed.
    pub fn num(&self, name: &str, errors: &mut Errors) -> Option<f64> {
        if !self.has(name) {
            return None;
        }
        let text = errors.ok(self.root.read_attr(&self.dir, name));
        let path = format!("{}/{name}", self.dir.host_display());
        parse_num(errors, &path, text)
    }

    /// A text attribute (labels), trimmed, if present and non-empty.
    pub fn text(&self, name: &str, errors: &mut Errors) -> Option<String> {
        if !self.has(name) {
            return None;
        }
        errors
            .ok(self.root.read_attr_trimmed(&self.dir, name))
            .filter(|s| !s.is_empty())
    }

    /// Temperatures in °C by sensor: `tempN_label` when present, else `tempN`.
    pub fn temperatures(&self, errors: &mut Errors) -> Vec<(String, f64)> {
        self.labelled("temp", errors)
            .into_iter()
            .map(|(label, v)| (label, v / 1000.0))
            .collect()
    }

    /// Clocks in Hz by label (`freqN_input` with `freqN_label`, e.g. `sclk`, `mclk`).
    pub fn clocks(&self, errors: &mut Errors) -> Vec<(String, f64)> {
        self.labelled("freq", errors)
    }

    /// Raw `<kind>N_input` values by `<kind>N_label` (else `<kind>N`).
    fn labelled(&self, kind: &str, errors: &mut Errors) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for f in &self.files {
            let Some(n) = f.strip_prefix(kind).and_then(|r| r.strip_suffix("_input")) else {
                continue;
            };
            if n.parse::<u32>().is_err() {
                continue;
            }
            if let Some(v) = self.num(f, errors) {
                let label = self
                    .text(&format!("{kind}{n}_label"), errors)
                    .unwrap_or_else(|| format!("{kind}{n}"));
                out.push((label, v));
            }
        }
        out
    }
}

/// µW or µJ to W or J.
pub fn micro(v: f64) -> f64 {
    v / 1_000_000.0
}
