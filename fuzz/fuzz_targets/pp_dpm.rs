//! amdgpu `pp_dpm_*` clock tables: the current level must be a finite positive clock or absent.
#![no_main]
use gpuscout::metrics::amdgpu::current_dpm_mhz;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Some(mhz) = current_dpm_mhz(&s) {
        assert!(mhz.is_finite() && mhz > 0.0, "{mhz}");
    }
});
