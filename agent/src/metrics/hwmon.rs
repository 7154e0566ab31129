//! Shared hwmon reader for the amdgpu, i915 and xe sources (not a source itself).
//!
//! Reads `<pci device>/hwmon/hwmonN/` through [`HostRoot`]: `name` picks the driver's own
//! hwmon (i915 also registers `i915_gtN`), then the standard hwmon files with their kernel
//! units: `tempN_input` (m°C) with `tempN_label`, `powerN_average`/`powerN_input`/`powerN_cap`/
//! `powerN_max` (µW), `energyN_input` (µJ), `fanN_input` (RPM), `freqN_input` (Hz) with
//! `freqN_label`. A missing directory or file is absent; unreadable or malformed ones are
//! recorded in [`Errors`]. Reads go through the source's [`Reader`] (kept-open descriptors on
//! sysfs: the directory lookup and listing are done once per discovery report).
//!
//! [`HostRoot`]: crate::hostroot::HostRoot

use super::kept::Reader;
use super::{Errors, parse_num};
use crate::hostroot::Resolved;

/// One hwmon directory of a device.
pub struct Hwmon {
    dir: Resolved,
    files: Vec<String>,
}

impl Hwmon {
    /// The hwmon directory of `device` whose `name` is `driver`.
    pub fn find(
        r: &mut Reader<'_>,
        device: &Resolved,
        driver: &str,
        errors: &mut Errors,
    ) -> Option<Self> {
        let names = errors.ok(r.list(device.host.join("hwmon")))?;
        for n in names.iter().filter(|n| n.starts_with("hwmon")) {
            let Some(dir) = errors.ok(r.resolve(device.host.join("hwmon").join(n))) else {
                continue;
            };
            let name = errors.ok(r.read_trimmed(&dir, "name"));
            if name.as_deref() == Some(driver) {
                let files = errors.ok(r.list(&dir.host)).unwrap_or_default();
                return Some(Self { dir, files });
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
    pub fn num(&self, r: &mut Reader<'_>, name: &str, errors: &mut Errors) -> Option<f64> {
        if !self.has(name) {
            return None;
        }
        let text = errors.ok(r.read(&self.dir, name));
        let path = format!("{}/{name}", self.dir.host_display());
        parse_num(errors, &path, text)
    }

    /// A text attribute (labels), trimmed, if present and non-empty.
    pub fn text(&self, r: &mut Reader<'_>, name: &str, errors: &mut Errors) -> Option<String> {
        if !self.has(name) {
            return None;
        }
        errors
            .ok(r.read_trimmed(&self.dir, name))
            .filter(|s| !s.is_empty())
    }

    /// Temperatures in °C by sensor: `tempN_label` when present, else `tempN`.
    pub fn temperatures(&self, r: &mut Reader<'_>, errors: &mut Errors) -> Vec<(String, f64)> {
        self.labelled(r, "temp", errors)
            .into_iter()
            .map(|(label, v)| (label, v / 1000.0))
            .collect()
    }

    /// Clocks in Hz by label (`freqN_input` with `freqN_label`, e.g. `sclk`, `mclk`).
    pub fn clocks(&self, r: &mut Reader<'_>, errors: &mut Errors) -> Vec<(String, f64)> {
        self.labelled(r, "freq", errors)
    }

    /// Raw `<kind>N_input` values by `<kind>N_label` (else `<kind>N`).
    fn labelled(&self, r: &mut Reader<'_>, kind: &str, errors: &mut Errors) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for f in &self.files {
            let Some(n) = f.strip_prefix(kind).and_then(|r| r.strip_suffix("_input")) else {
                continue;
            };
            if n.parse::<u32>().is_err() {
                continue;
            }
            if let Some(v) = self.num(r, f, errors) {
                let label = self
                    .text(r, &format!("{kind}{n}_label"), errors)
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
