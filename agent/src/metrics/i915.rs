//! Source `i915`: live readings of Intel GPUs bound to `i915` (research §5).
//! - GT clocks: `<pci>/drm/cardN/gt/gtM/rps_act_freq_mhz` (else `rps_cur_freq_mhz`), MHz, as
//!   `gpuscout_gpu_clock_hertz{domain="gtM"}`; kernels without `gt/` have only the card-level
//!   `gt_act_freq_mhz` (else `gt_cur_freq_mhz`), exported as `domain="gt"`.
//! - hwmon `name=i915` (discrete GPUs only): `energy1_input` (µJ, a counter), `power1_max`
//!   (µW, the power limit), `tempN_input` where present (i915 has none today).
//!
//! Integrated GPUs have no hwmon and no energy: those series are absent. A GPU without a DRM
//! card (no display driver bound) has no clocks.

use super::hwmon::{Hwmon, micro};
use super::kept::{Kept, Reader};
use super::pci::bound_devices;
use super::{
    Errors, ScrapeContext, Sink, Source, SourceError, families as f, gpu_label, parse_num,
};
use crate::hostroot::Resolved;
use crate::model::Vendor;

/// i915 sysfs source (kept-open descriptors on sysfs, [`super::kept`]).
#[derive(Debug, Default)]
pub struct I915 {
    kept: Kept,
}

fn mhz(r: &mut Reader<'_>, dir: &Resolved, names: &[&str], errors: &mut Errors) -> Option<f64> {
    names.iter().find_map(|n| {
        let text = errors.ok(r.read(dir, n));
        parse_num(errors, &format!("{}/{n}", dir.host_display()), text)
    })
}

impl Source for I915 {
    fn name(&self) -> &'static str {
        "i915"
    }

    fn shares_thread(&self) -> bool {
        true
    }

    fn collect(&self, ctx: &ScrapeContext, out: &mut Sink) -> Result<(), SourceError> {
        let mut errors = Errors::default();
        let mut r = self.kept.reader(&ctx.root, &ctx.report);
        for (g, dir) in bound_devices(ctx, &mut r, &mut errors, Vendor::Intel, "i915") {
            let gpu = &g.pci_address.to_string();
            if let Some(card) = &g.card
                && let Some(card_dir) = errors.ok(r.resolve_in(&dir, format!("drm/{card}")))
            {
                let gts = errors
                    .ok(r.list(card_dir.host.join("gt")))
                    .unwrap_or_default();
                let gts: Vec<&String> = gts.iter().filter(|n| n.starts_with("gt")).collect();
                if gts.is_empty() {
                    let v = mhz(
                        &mut r,
                        &card_dir,
                        &["gt_act_freq_mhz", "gt_cur_freq_mhz"],
                        &mut errors,
                    );
                    let labels = vec![("gpu", gpu.clone()), ("domain", "gt".to_owned())];
                    out.push_opt(&f::CLOCK, labels, v.map(|m| m * 1e6));
                }
                for gt in gts {
                    let Some(gt_dir) = errors.ok(r.resolve_in(&card_dir, format!("gt/{gt}")))
                    else {
                        continue;
                    };
                    let v = mhz(
                        &mut r,
                        &gt_dir,
                        &["rps_act_freq_mhz", "rps_cur_freq_mhz"],
                        &mut errors,
                    );
                    let labels = vec![("gpu", gpu.clone()), ("domain", gt.clone())];
                    out.push_opt(&f::CLOCK, labels, v.map(|m| m * 1e6));
                }
            }
            if let Some(h) = Hwmon::find(&mut r, &dir, "i915", &mut errors) {
                intel_hwmon(&h, &mut r, gpu, out, &mut errors);
            }
        }
        errors.finish()
    }
}

/// Energy, power limit and temperatures of an Intel hwmon (i915 and xe share the ABI; xe
/// adds `energy2_input`/`power2_max` for the package when the card-level `1` is absent).
pub(crate) fn intel_hwmon(
    h: &Hwmon,
    r: &mut Reader<'_>,
    gpu: &str,
    out: &mut Sink,
    errors: &mut Errors,
) {
    let energy = h
        .num(r, "energy1_input", errors)
        .or_else(|| h.num(r, "energy2_input", errors));
    out.push_opt(&f::ENERGY, gpu_label(gpu), energy.map(micro));
    let limit = h
        .num(r, "power1_max", errors)
        .or_else(|| h.num(r, "power2_max", errors))
        // 0 means "no limit set" in the i915/xe hwmon ABI.
        .filter(|v| *v > 0.0);
    out.push_opt(&f::POWER_LIMIT, gpu_label(gpu), limit.map(micro));
    for (sensor, c) in h.temperatures(r, errors) {
        out.push(
            &f::TEMPERATURE,
            vec![("gpu", gpu.to_owned()), ("sensor", sensor)],
            c,
        );
    }
}
