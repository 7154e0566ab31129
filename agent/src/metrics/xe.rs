//! Source `xe`: live readings of Intel GPUs bound to `xe` (research §5).
//! - GT clocks: `<pci>/tileN/gtM/freq0/act_freq` (else `cur_freq`), MHz, as
//!   `gpuscout_gpu_clock_hertz{domain="gtM"}` (GT numbers are unique across tiles).
//! - hwmon `name=xe` (discrete GPUs, not SR-IOV VFs): `energy1_input` (card; else
//!   `energy2_input`, package) in µJ as a counter, `power1_max` (else `power2_max`) in µW as the
//!   power limit, `tempN_input`/`tempN_label` (6.15+: package and VRAM).
//!
//! Everything is optional; what is missing is absent.

use super::hwmon::Hwmon;
use super::kept::Kept;
use super::pci::bound_devices;
use super::{Errors, ScrapeContext, Sink, Source, SourceError, families as f, parse_num};
use crate::model::Vendor;

/// xe sysfs source (kept-open descriptors on sysfs, [`super::kept`]).
#[derive(Debug, Default)]
pub struct Xe {
    kept: Kept,
}

impl Source for Xe {
    fn name(&self) -> &'static str {
        "xe"
    }

    fn shares_thread(&self) -> bool {
        true
    }

    fn collect(&self, ctx: &ScrapeContext, out: &mut Sink) -> Result<(), SourceError> {
        let mut errors = Errors::default();
        let mut r = self.kept.reader(&ctx.root, &ctx.report);
        for (g, dir) in bound_devices(ctx, &mut r, &mut errors, Vendor::Intel, "xe") {
            let gpu = &g.pci_address.to_string();
            let entries = errors.ok(r.list(&dir.host)).unwrap_or_default();
            for tile in entries.iter().filter(|n| is_numbered(n, "tile")) {
                let gts = errors.ok(r.list(dir.host.join(tile))).unwrap_or_default();
                for gt in gts.iter().filter(|n| is_numbered(n, "gt")) {
                    let Some(freq) = errors.ok(r.resolve_in(&dir, format!("{tile}/{gt}/freq0")))
                    else {
                        continue;
                    };
                    let v = ["act_freq", "cur_freq"].iter().find_map(|n| {
                        let text = errors.ok(r.read(&freq, n));
                        parse_num(&mut errors, &format!("{}/{n}", freq.host_display()), text)
                    });
                    let labels = vec![("gpu", gpu.clone()), ("domain", gt.clone())];
                    out.push_opt(&f::CLOCK, labels, v.map(|m| m * 1e6));
                }
            }
            if let Some(h) = Hwmon::find(&mut r, &dir, "xe", &mut errors) {
                super::i915::intel_hwmon(&h, &mut r, gpu, out, &mut errors);
            }
        }
        errors.finish()
    }
}

fn is_numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}
