//! Device-plugin device ids → GPUs. Pure; the AMD partition lookup is passed in.
//!
//! What each plugin hands the kubelet as a device id (read in the plugins' sources; the table
//! with files and commits is in `docs/POD-ATTRIBUTION.md`):
//!
//! | resource | plugin | id | maps by |
//! |---|---|---|---|
//! | `nvidia.com/gpu`, `nvidia.com/gpu.shared`, `nvidia.com/mig-<profile>[.shared]` | NVIDIA k8s-device-plugin | the NVML UUID (`GPU-…`, `MIG-…`; old drivers `MIG-GPU-<uuid>/<gi>/<ci>`), with `::<n>` appended per replica when time-slicing or MPS shares it | GPU UUID; MIG UUID through NVML's MIG devices |
//! | `amd.com/gpu` and partition resources (`amd.com/cpx_nps4`, …) | ROCm k8s-device-plugin | the PCI address (`0000:03:00.0`), or the partition's platform device (`amdgpu_xcp_<n>`) | PCI address; partition → its render node → KFD node → PCI address |
//! | `gpu.intel.com/i915`, `gpu.intel.com/xe` | intel-device-plugins-for-kubernetes (gpu_plugin) | `card<N>-<i>` (DRM card name, `i` < `-shared-dev-num`) | DRM card name |
//! | `gpu.intel.com/monitoring`, `…/i915_monitoring`, `…/xe_monitoring` | same | `all` | every Intel GPU (of that driver) |
//!
//! Anything else is not mapped and is counted by reason: `unknown_resource` (a plugin of
//! another vendor or kind), `unknown_id` (a GPU plugin's id that matches no GPU here).

use crate::model::{Report, Vendor};

/// The identity of one GPU the mapper matches against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuIds {
    /// PCI address (the `gpu` label).
    pub gpu: String,
    pub vendor: Vendor,
    pub driver: Option<String>,
    pub uuid: Option<String>,
    pub card: Option<String>,
    /// UUIDs of this GPU's MIG devices (from NVML; empty without MIG).
    pub mig_uuids: Vec<String>,
}

impl GpuIds {
    /// The GPUs of a discovery report (MIG UUIDs are added from NVML by the caller).
    pub fn from_report(r: &Report) -> Vec<GpuIds> {
        r.gpus
            .iter()
            .map(|g| GpuIds {
                gpu: g.pci_address.to_string(),
                vendor: g.vendor,
                driver: g.driver.clone(),
                uuid: g.nvidia.as_ref().and_then(|n| n.uuid.clone()),
                card: g.card.clone(),
                mig_uuids: Vec::new(),
            })
            .collect()
    }
}

/// Where one device id went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// (gpu, uuid label) pairs; several for Intel's `all`.
    Gpus(Vec<(String, String)>),
    Unmatched(&'static str),
}

/// The plugin family of a resource name, if it is a GPU plugin we know.
fn plugin(resource: &str) -> Option<Vendor> {
    let (domain, _) = resource.split_once('/')?;
    match domain {
        "nvidia.com" => Some(Vendor::Nvidia),
        "amd.com" => Some(Vendor::Amd),
        "gpu.intel.com" => Some(Vendor::Intel),
        _ => None,
    }
}

/// Map one device id of `resource`. `xcp` resolves an AMD partition device
/// (`amdgpu_xcp_<n>`) to its GPU's PCI address.
pub fn map(
    resource: &str,
    id: &str,
    gpus: &[GpuIds],
    xcp: &dyn Fn(&str) -> Option<String>,
) -> Mapped {
    let Some(vendor) = plugin(resource) else {
        return Mapped::Unmatched("unknown_resource");
    };
    let mine = gpus.iter().filter(|g| g.vendor == vendor);
    let one = |g: &GpuIds, uuid: &str| Mapped::Gpus(vec![(g.gpu.clone(), uuid.to_owned())]);
    let none = Mapped::Unmatched("unknown_id");
    match vendor {
        Vendor::Nvidia => {
            // `<id>::<replica>` with time-slicing / MPS replicas
            let id = id.split_once("::").map_or(id, |(a, _)| a);
            if let Some(parent) = id
                .strip_prefix("MIG-GPU-")
                .and_then(|r| r.split('/').next())
            {
                let want = format!("GPU-{parent}");
                for g in mine {
                    if g.uuid
                        .as_deref()
                        .is_some_and(|u| u.eq_ignore_ascii_case(&want))
                    {
                        return one(g, id);
                    }
                }
                return none;
            }
            for g in mine {
                if g.uuid
                    .as_deref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(id))
                    || g.mig_uuids.iter().any(|m| m.eq_ignore_ascii_case(id))
                {
                    return one(g, id);
                }
            }
            none
        }
        Vendor::Amd => {
            let addr = if id.starts_with("amdgpu_xcp_") {
                match xcp(id) {
                    Some(a) => a,
                    None => return none,
                }
            } else {
                match id.parse::<crate::pci::PciAddress>() {
                    Ok(a) => a.to_string(),
                    Err(_) => return none,
                }
            };
            for g in mine {
                if g.gpu == addr {
                    return one(g, "");
                }
            }
            none
        }
        Vendor::Intel => {
            let kind = resource.rsplit('/').next().unwrap_or("");
            if id == "all" && kind.ends_with("monitoring") {
                let driver = kind.strip_suffix("_monitoring");
                let all: Vec<(String, String)> = mine
                    .filter(|g| driver.is_none_or(|d| g.driver.as_deref() == Some(d)))
                    .map(|g| (g.gpu.clone(), String::new()))
                    .collect();
                return if all.is_empty() {
                    none
                } else {
                    Mapped::Gpus(all)
                };
            }
            let card = id.rsplit_once('-').map_or(id, |(c, _)| c);
            for g in mine {
                if g.card.as_deref() == Some(card) {
                    return one(g, "");
                }
            }
            none
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus() -> Vec<GpuIds> {
        let g = |gpu: &str, vendor, driver: &str, uuid: Option<&str>, card: &str| GpuIds {
            gpu: gpu.into(),
            vendor,
            driver: Some(driver.into()),
            uuid: uuid.map(Into::into),
            card: Some(card.into()),
            mig_uuids: Vec::new(),
        };
        let mut h100 = g(
            "0000:1b:00.0",
            Vendor::Nvidia,
            "nvidia",
            Some("GPU-8f0c2a5e-1d3b-4c7a-9e21-0b6d4f8a2c11"),
            "card9",
        );
        h100.mig_uuids = vec!["MIG-1a2b3c4d-0000-5555-aaaa-111122223333".into()];
        vec![
            h100,
            g("0000:03:00.0", Vendor::Amd, "amdgpu", None, "card1"),
            g("0000:04:00.0", Vendor::Intel, "i915", None, "card2"),
            g("0000:05:00.0", Vendor::Intel, "xe", None, "card3"),
        ]
    }

    fn no_xcp(_: &str) -> Option<String> {
        None
    }

    fn gpu_of(m: Mapped) -> Vec<String> {
        match m {
            Mapped::Gpus(v) => v.into_iter().map(|(g, _)| g).collect(),
            Mapped::Unmatched(r) => vec![format!("unmatched:{r}")],
        }
    }

    #[test]
    fn nvidia_uuids_replicas_and_mig() {
        let g = gpus();
        let uuid = "GPU-8f0c2a5e-1d3b-4c7a-9e21-0b6d4f8a2c11";
        assert_eq!(
            gpu_of(map("nvidia.com/gpu", uuid, &g, &no_xcp)),
            ["0000:1b:00.0"]
        );
        assert_eq!(
            gpu_of(map(
                "nvidia.com/gpu.shared",
                &format!("{uuid}::3"),
                &g,
                &no_xcp
            )),
            ["0000:1b:00.0"]
        );
        assert_eq!(
            map(
                "nvidia.com/mig-1g.10gb",
                "MIG-1a2b3c4d-0000-5555-aaaa-111122223333",
                &g,
                &no_xcp
            ),
            Mapped::Gpus(vec![(
                "0000:1b:00.0".into(),
                "MIG-1a2b3c4d-0000-5555-aaaa-111122223333".into()
            )])
        );
        assert_eq!(
            gpu_of(map(
                "nvidia.com/mig-1g.10gb",
                "MIG-GPU-8f0c2a5e-1d3b-4c7a-9e21-0b6d4f8a2c11/1/0",
                &g,
                &no_xcp
            )),
            ["0000:1b:00.0"]
        );
        assert_eq!(
            map(
                "nvidia.com/gpu",
                "GPU-00000000-dead-beef-0000-000000000000",
                &g,
                &no_xcp
            ),
            Mapped::Unmatched("unknown_id")
        );
    }

    #[test]
    fn amd_pci_addresses_and_partitions() {
        let g = gpus();
        assert_eq!(
            gpu_of(map("amd.com/gpu", "0000:03:00.0", &g, &no_xcp)),
            ["0000:03:00.0"]
        );
        let xcp = |id: &str| (id == "amdgpu_xcp_30").then(|| "0000:03:00.0".to_owned());
        assert_eq!(
            gpu_of(map("amd.com/cpx_nps4", "amdgpu_xcp_30", &g, &xcp)),
            ["0000:03:00.0"]
        );
        assert_eq!(
            map("amd.com/gpu", "amdgpu_xcp_31", &g, &xcp),
            Mapped::Unmatched("unknown_id")
        );
        assert_eq!(
            map("amd.com/gpu", "garbage", &g, &xcp),
            Mapped::Unmatched("unknown_id")
        );
    }

    #[test]
    fn intel_cards_shares_and_monitoring() {
        let g = gpus();
        assert_eq!(
            gpu_of(map("gpu.intel.com/i915", "card2-0", &g, &no_xcp)),
            ["0000:04:00.0"]
        );
        assert_eq!(
            gpu_of(map("gpu.intel.com/xe", "card3-7", &g, &no_xcp)),
            ["0000:05:00.0"]
        );
        assert_eq!(
            gpu_of(map("gpu.intel.com/monitoring", "all", &g, &no_xcp)),
            ["0000:04:00.0", "0000:05:00.0"]
        );
        assert_eq!(
            gpu_of(map("gpu.intel.com/xe_monitoring", "all", &g, &no_xcp)),
            ["0000:05:00.0"]
        );
        assert_eq!(
            map("gpu.intel.com/i915", "card7-0", &g, &no_xcp),
            Mapped::Unmatched("unknown_id")
        );
    }

    #[test]
    fn other_plugins_are_unknown_resources() {
        let g = gpus();
        assert_eq!(
            map("squat.ai/fuse", "fuse-0", &g, &no_xcp),
            Mapped::Unmatched("unknown_resource")
        );
        assert_eq!(
            map("hugepages", "x", &g, &no_xcp),
            Mapped::Unmatched("unknown_resource")
        );
    }
}
