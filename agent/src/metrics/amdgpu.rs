//! Source `amdgpu`: live readings of every AMD GPU bound to `amdgpu`, from its PCI device
//! directory (research §3.1/§3.2):
//! - `mem_info_{vram,vis_vram,gtt}_{total,used}` (bytes) as `pool` = `vram|visible_vram|gtt`;
//! - `gpu_busy_percent` (0–100) as a 0–1 ratio;
//! - hwmon `name=amdgpu`: `tempN_input`/`tempN_label` (m°C; `edge`, `junction`, `mem`),
//!   `power1_average`, else `power1_input` (µW), `power1_cap` (µW), `fan1_input` (RPM),
//!   `freq1_input`/`freq2_input` (Hz; labels `sclk`, `mclk`);
//! - when hwmon has no clock: the current (`*`) level of `pp_dpm_sclk` / `pp_dpm_mclk` (MHz).
//!
//! Every file is optional (APUs have no fan, no cap, no mclk; many have only `power1_input`):
//! what is missing is absent. A GPU bound to another driver is skipped. Unreadable or malformed
//! files make the source fail while the other readings are still served.

use super::hwmon::{Hwmon, micro};
use super::kept::Kept;
use super::pci::bound_devices;
use super::{Errors, ScrapeContext, Sink, Source, SourceError, families as f, parse_num};
use crate::model::Vendor;

/// amdgpu sysfs source (its files are read through kept-open descriptors on sysfs,
/// [`super::kept`]).
#[derive(Debug, Default)]
pub struct Amdgpu {
    kept: Kept,
}

const POOLS: &[(&str, &str)] = &[
    ("vram", "vram"),
    ("vis_vram", "visible_vram"),
    ("gtt", "gtt"),
];

impl Source for Amdgpu {
    fn name(&self) -> &'static str {
        "amdgpu"
    }

    fn shares_thread(&self) -> bool {
        true
    }

    fn collect(&self, ctx: &ScrapeContext, out: &mut Sink) -> Result<(), SourceError> {
        let mut errors = Errors::default();
        let mut r = self.kept.reader(&ctx.root, &ctx.report);
        for (g, dir) in bound_devices(ctx, &mut r, &mut errors, Vendor::Amd, "amdgpu") {
            let gpu = &g.pci_address.to_string();
            let num = |r: &mut super::kept::Reader<'_>, name: &str, errors: &mut Errors| {
                let text = errors.ok(r.read(&dir, name));
                parse_num(errors, &format!("{}/{name}", dir.host_display()), text)
            };
            for (file, pool) in POOLS {
                let labels = vec![("gpu", gpu.clone()), ("pool", (*pool).to_owned())];
                let total = num(&mut r, &format!("mem_info_{file}_total"), &mut errors);
                out.push_opt(&f::MEMORY_TOTAL, labels.clone(), total);
                let used = num(&mut r, &format!("mem_info_{file}_used"), &mut errors);
                out.push_opt(&f::MEMORY_USED, labels, used);
            }
            let busy =
                num(&mut r, "gpu_busy_percent", &mut errors).filter(|b| (0.0..=100.0).contains(b));
            out.push_opt(
                &f::UTILIZATION,
                super::gpu_label(gpu),
                busy.map(|b| b / 100.0),
            );

            let mut have_clock = [false, false];
            if let Some(h) = Hwmon::find(&mut r, &dir, "amdgpu", &mut errors) {
                for (sensor, c) in h.temperatures(&mut r, &mut errors) {
                    out.push(
                        &f::TEMPERATURE,
                        vec![("gpu", gpu.clone()), ("sensor", sensor)],
                        c,
                    );
                }
                let power = h
                    .num(&mut r, "power1_average", &mut errors)
                    .or_else(|| h.num(&mut r, "power1_input", &mut errors));
                out.push_opt(&f::POWER, super::gpu_label(gpu), power.map(micro));
                let cap = h.num(&mut r, "power1_cap", &mut errors);
                out.push_opt(&f::POWER_LIMIT, super::gpu_label(gpu), cap.map(micro));
                let fan = h.num(&mut r, "fan1_input", &mut errors);
                out.push_opt(&f::FAN, super::gpu_label(gpu), fan);
                for (domain, hz) in h.clocks(&mut r, &mut errors) {
                    match domain.as_str() {
                        "sclk" => have_clock[0] = true,
                        "mclk" => have_clock[1] = true,
                        _ => {}
                    }
                    out.push(
                        &f::CLOCK,
                        vec![("gpu", gpu.clone()), ("domain", domain)],
                        hz,
                    );
                }
            }
            for (i, domain) in ["sclk", "mclk"].into_iter().enumerate() {
                if have_clock[i] {
                    continue;
                }
                let file = format!("pp_dpm_{domain}");
                if let Some(text) = errors.ok(r.read(&dir, &file))
                    && let Some(mhz) = current_dpm_mhz(&text)
                {
                    out.push(
                        &f::CLOCK,
                        vec![("gpu", gpu.clone()), ("domain", domain.to_owned())],
                        mhz * 1e6,
                    );
                }
            }
        }
        errors.finish()
    }
}

/// The current level of a `pp_dpm_*` table: the first line marked `*` with a non-zero clock.
/// Lines look like `1: 1000Mhz *` or `S: 19Mhz *` (deep sleep), with trailing spaces; RDNA3
/// marks a synthetic `1: 0Mhz *` line while between levels, which is not a reading.
pub fn current_dpm_mhz(text: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.trim_end().ends_with('*'))
        .filter_map(|l| {
            let (_, rest) = l.split_once(':')?;
            let v = rest.trim().trim_end_matches('*').trim();
            let num = v
                .strip_suffix("Mhz")
                .or_else(|| v.strip_suffix("MHz"))?
                .trim();
            num.parse::<f64>().ok()
        })
        .find(|v| v.is_finite() && *v > 0.0)
}

#[cfg(test)]
mod tests {
    use super::current_dpm_mhz;

    #[test]
    fn dpm_current_level() {
        assert_eq!(
            current_dpm_mhz("0: 500Mhz \n1: 1000Mhz *\n2: 2000Mhz \n"),
            Some(1000.0)
        );
        assert_eq!(current_dpm_mhz("S: 19Mhz *\n0: 500Mhz \n"), Some(19.0));
        assert_eq!(current_dpm_mhz("0: 500Mhz\n1: 0Mhz *\n2: 2400Mhz\n"), None);
        assert_eq!(current_dpm_mhz("0: 500Mhz\n"), None);
    }
}
