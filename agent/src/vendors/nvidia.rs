//! NVIDIA: what the kernel module exposes without NVML.
//!
//! Reads `proc/driver/nvidia/version` (`NVRM version: NVIDIA UNIX [Open ]Kernel Module ...`:
//! flavour and version), `proc/driver/nvidia/gpus/<bdf>/information` (`Model`, `GPU UUID`,
//! `Video BIOS`, `Device Minor`, `GPU Firmware`, `GPU Excluded`/`Blacklisted`) and the MIG
//! capability tree `proc/driver/nvidia/capabilities/gpu<minor>/mig/gi*`. All of it is absent
//! while the module is not loaded: every field then stays `None`.

use crate::hostroot::HostRoot;
use crate::model::NvidiaInfo;
use crate::parse;
use crate::pci::PciGpu;

/// Flavour and version of the loaded NVIDIA kernel module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelModule {
    /// `open` or `proprietary`.
    pub flavor: &'static str,
    pub version: String,
}

/// Parse `/proc/driver/nvidia/version`.
pub fn parse_version(text: &str) -> Option<KernelModule> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    let flavor = if line.contains("Open Kernel Module") {
        "open"
    } else {
        "proprietary"
    };
    let after = line.split_once("Kernel Module")?.1;
    let after = after.trim_start().strip_prefix("for ").map_or(after, |r| {
        // `Open Kernel Module for x86_64  580.95.05 ...`: skip the architecture word.
        r.split_once(char::is_whitespace)
            .map_or("", |(_, rest)| rest)
    });
    let version = after.split_whitespace().next()?;
    if !version.contains('.') || !version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    Some(KernelModule {
        flavor,
        version: version.to_owned(),
    })
}

/// The loaded module, if `/proc/driver/nvidia/version` is there and readable.
pub fn read_kernel_module(root: &HostRoot) -> Option<KernelModule> {
    root.read_string("proc/driver/nvidia/version")
        .ok()
        .and_then(|t| parse_version(&t))
}

/// Fields of a GPU's `information` file: (model, info).
pub fn parse_information(text: &str) -> (Option<String>, NvidiaInfo) {
    let mut info = NvidiaInfo::default();
    let mut model = None;
    for (k, v) in parse::colon_fields(text) {
        let v = v.trim();
        match k {
            "Model" if !v.is_empty() => model = Some(v.to_owned()),
            "GPU UUID" if v.starts_with("GPU-") => info.uuid = Some(v.to_owned()),
            "Video BIOS" if !v.starts_with("??") && !v.is_empty() => {
                info.vbios_version = Some(v.to_owned())
            }
            "Device Minor" => info.minor = v.parse().ok(),
            "GPU Firmware" if !v.is_empty() => info.gsp_firmware = Some(v.to_owned()),
            "GPU Excluded" | "Blacklisted" => {
                info.excluded = match v {
                    "Yes" => Some(true),
                    "No" => Some(false),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    (model, info)
}

/// Enrich one NVIDIA GPU. Returns the info and the vendor's model string.
pub fn read(
    root: &HostRoot,
    gpu: &PciGpu,
    module: Option<&KernelModule>,
) -> (NvidiaInfo, Option<String>) {
    let path = format!("proc/driver/nvidia/gpus/{}/information", gpu.address);
    let (model, mut info) = match root.read_string(&path) {
        Ok(t) => parse_information(&t),
        Err(_) => (None, NvidiaInfo::default()),
    };
    if let Some(m) = module {
        info.kernel_module_flavor = Some(m.flavor.to_owned());
        info.kernel_module_version = Some(m.version.clone());
    }
    if let Some(minor) = info.minor {
        let gi = root
            .list_dir(format!("proc/driver/nvidia/capabilities/gpu{minor}/mig"))
            .map(|names| names.iter().filter(|n| n.starts_with("gi")).count() as u32);
        if let Ok(n) = gi {
            info.mig_instances = Some(n);
        }
    }
    (info, model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lines() {
        let p = parse_version("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.135  Fri Jan 10 00:00:00 UTC 2025\nGCC version:  gcc\n").unwrap();
        assert_eq!(
            p,
            KernelModule {
                flavor: "proprietary",
                version: "550.135".into()
            }
        );
        let o = parse_version("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder@U16-I3-C04-2-3)  Tue Sep 23 09:55:41 UTC 2025\n").unwrap();
        assert_eq!(
            o,
            KernelModule {
                flavor: "open",
                version: "580.95.05".into()
            }
        );
        assert_eq!(parse_version("garbage"), None);
        assert_eq!(
            parse_version("NVRM version: NVIDIA UNIX x86_64 Kernel Module  \u{fffd}\n"),
            None
        );
    }

    #[test]
    fn information_file() {
        let (m, i) = parse_information(
            "Model: \t\t NVIDIA A10G\nIRQ:   \t\t 42\nGPU UUID: \t GPU-82523fd8-1111-2222-3333-444455556666\nVideo BIOS: \t ??.??.??.??.??\nBus Location: \t 0000:00:1e.0\nDevice Minor: \t 3\nGPU Excluded:\t No\n",
        );
        assert_eq!(m.as_deref(), Some("NVIDIA A10G"));
        assert_eq!(i.minor, Some(3));
        assert_eq!(i.vbios_version, None);
        assert_eq!(i.excluded, Some(false));
    }
}
