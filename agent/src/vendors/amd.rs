//! AMD: amdgpu device files and the KFD topology.
//!
//! Reads, on the PCI device directory: `mem_info_vram_total`, `mem_info_vis_vram_total`,
//! `mem_info_gtt_total`, `vbios_version`, `product_name` (FRU, server boards only),
//! `current_compute_partition`, `current_memory_partition` and
//! `ip_discovery/die/0/11/0/{major,minor,revision}` (the GC IP version). Then
//! `sys/class/kfd/kfd/topology/nodes/*/properties` (+ `mem_banks/0/properties`): the node is
//! joined by `drm_render_minor`, else by `domain` + `location_id`; every node with the same
//! location is a compute partition of the same device (MI300 CPX), never a GPU of its own.
//!
//! Missing KFD (no `amdgpu` compute, old kernel): gfx target, CU count and family stay `None`.
//! A KFD node whose `properties` exist but cannot be read is reported by
//! [`read_kfd_with_errors`] (discovery lists it on every AMD GPU left without a node). Sums over
//! compute partitions are checked: one out of range is `None` plus an `unread` entry.
//! Missing `mem_info_vram_total`: VRAM falls back to the KFD memory bank size.

use crate::hostroot::HostRoot;
use crate::model::AmdInfo;
use crate::parse;
use crate::pci::{PciGpu, Reader};

/// Host path of the KFD topology nodes.
pub const KFD_NODES: &str = "sys/class/kfd/kfd/topology/nodes";

/// One KFD topology node (only the keys we use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KfdNode {
    pub id: u32,
    pub simd_count: Option<u64>,
    pub simd_per_cu: Option<u64>,
    pub gfx_target_version: Option<u64>,
    pub location_id: Option<u64>,
    pub domain: Option<u64>,
    pub drm_render_minor: Option<u64>,
    pub device_id: Option<u64>,
    pub mem_bank_bytes: Option<u64>,
}

impl KfdNode {
    fn is_gpu(&self) -> bool {
        self.simd_count.is_some_and(|s| s > 0)
    }
}

/// Parse one node's `properties` text.
pub fn parse_kfd_properties(id: u32, text: &str) -> KfdNode {
    let mut n = KfdNode {
        id,
        ..KfdNode::default()
    };
    for (k, v) in parse::key_values(text) {
        match k {
            "simd_count" => n.simd_count = Some(v),
            "simd_per_cu" => n.simd_per_cu = Some(v),
            "gfx_target_version" => n.gfx_target_version = Some(v),
            "location_id" => n.location_id = Some(v),
            "domain" => n.domain = Some(v),
            "drm_render_minor" => n.drm_render_minor = Some(v),
            "device_id" => n.device_id = Some(v),
            _ => {}
        }
    }
    n
}

/// All KFD GPU nodes of the host (CPU nodes dropped). Empty when there is no KFD.
pub fn read_kfd(root: &HostRoot) -> Vec<KfdNode> {
    read_kfd_with_errors(root).0
}

/// [`read_kfd`], with the nodes whose `properties` exist but could not be read (a node that
/// vanished meanwhile is not an error).
pub fn read_kfd_with_errors(root: &HostRoot) -> (Vec<KfdNode>, Vec<crate::model::Unread>) {
    let mut unread = Vec::new();
    let Ok(dir) = root.resolve(KFD_NODES) else {
        return (Vec::new(), unread);
    };
    let Ok(names) = root.list_dir_in(&dir, "") else {
        return (Vec::new(), unread);
    };
    let mut nodes: Vec<KfdNode> = names
        .iter()
        .filter_map(|n| n.parse::<u32>().ok())
        .filter_map(|id| {
            let node_dir = root.resolve_in(&dir, id.to_string()).ok()?;
            let text = match root.read_attr(&node_dir, "properties") {
                Ok(t) => t,
                Err(e) => {
                    if !e.is_not_found() {
                        unread.push(crate::pci::unread_of(&e));
                    }
                    return None;
                }
            };
            let mut node = parse_kfd_properties(id, &text);
            node.mem_bank_bytes = root
                .read_attr(&node_dir, "mem_banks/0/properties")
                .ok()
                .and_then(|t| {
                    parse::key_values(&t)
                        .into_iter()
                        .find(|(k, _)| *k == "size_in_bytes")
                        .map(|(_, v)| v)
                })
                .filter(|v| *v > 0);
            Some(node)
        })
        .filter(KfdNode::is_gpu)
        .collect();
    nodes.sort_by_key(|n| n.id);
    (nodes, unread)
}

/// `gfx_target_version` (`major*10000 + minor*100 + stepping`) as a target name: 110501 is
/// `gfx1151`, 90010 is `gfx90a`.
pub fn gfx_target_name(v: u64) -> Option<String> {
    if v == 0 {
        return None;
    }
    let (major, minor, step) = (v / 10000, (v / 100) % 100, v % 100);
    if minor > 15 || step > 15 {
        return None;
    }
    Some(format!("gfx{major}{minor:x}{step:x}"))
}

/// The family name ROCm's node labeller uses (it reads libdrm's `family_id`; we derive it from
/// the gfx target, which sysfs has).
pub fn family_of(target: &str) -> Option<&'static str> {
    let t = target.strip_prefix("gfx")?;
    Some(match t {
        "700" | "701" | "702" | "704" | "705" => "CI",
        "703" | "706" | "707" => "KV",
        "801" => "CZ",
        "802" | "803" | "805" | "810" => "VI",
        "902" | "909" | "90c" => "RV",
        _ if t.starts_with('9') => "AI",
        "1033" => "VGH",
        "1035" => "YC",
        "1036" => "GC_10_3_6",
        "1037" => "GC_10_3_7",
        _ if t.starts_with("10") => "NV",
        "1100" | "1101" | "1102" => "GC_11_0_0",
        "1103" => "GC_11_0_1",
        _ if t.starts_with("115") => "GC_11_5_0",
        _ if t.starts_with("12") => "GC_12_0_0",
        _ => return None,
    })
}

/// Targets of integrated GPUs (APUs).
fn is_apu_target(target: &str) -> bool {
    matches!(
        target,
        "gfx801"
            | "gfx902"
            | "gfx909"
            | "gfx90c"
            | "gfx1033"
            | "gfx1035"
            | "gfx1036"
            | "gfx1037"
            | "gfx1103"
            | "gfx1150"
            | "gfx1151"
            | "gfx1152"
            | "gfx1153"
    )
}

/// Enrich one AMD GPU. `kfd` comes from [`read_kfd`] (read once per pass).
pub fn read(
    root: &HostRoot,
    gpu: &PciGpu,
    kfd: &[KfdNode],
) -> (AmdInfo, Option<String>, Vec<crate::model::Unread>) {
    let mut r = Reader {
        root,
        dir: &gpu.dir,
        unread: Vec::new(),
    };
    let mut info = AmdInfo {
        vram_bytes: r.opt("mem_info_vram_total", parse::int::<u64>),
        visible_vram_bytes: r.opt("mem_info_vis_vram_total", parse::int::<u64>),
        gtt_bytes: r.opt("mem_info_gtt_total", parse::int::<u64>),
        vbios_version: r.text("vbios_version"),
        compute_partition: r.text("current_compute_partition"),
        memory_partition: r.text("current_memory_partition"),
        ..AmdInfo::default()
    };
    let product_name = r.text("product_name");
    let gc = ["major", "minor", "revision"]
        .map(|f| r.opt(&format!("ip_discovery/die/0/11/0/{f}"), parse::int::<u32>));
    if let [Some(a), Some(b), Some(c)] = gc {
        info.gc_version = Some(format!("{a}.{b}.{c}"));
    }

    // KFD join: the render minor first, then the PCI location.
    let minor = gpu.render_minor().map(u64::from);
    let loc = u64::from(gpu.address.location_id());
    let dom = u64::from(gpu.address.domain);
    // Partitions of one device (MI300 CPX) carry the partition index in the function bits
    // (older kernels) or in bits 28-31 (newer): compare with both masked out.
    let at_location = |n: &&KfdNode| {
        n.location_id.map(partition_base) == Some(partition_base(loc))
            && n.domain.unwrap_or(0) == dom
    };
    let primary = kfd
        .iter()
        .find(|n| minor.is_some() && n.drm_render_minor == minor)
        .or_else(|| kfd.iter().find(at_location));
    if let Some(node) = primary {
        let parts: Vec<&KfdNode> = if node.location_id.is_some() {
            kfd.iter().filter(at_location).collect()
        } else {
            vec![node]
        };
        info.kfd_node = Some(node.id);
        if parts.len() > 1 {
            info.partitions = Some(parts.len() as u32);
        }
        // Checked: hostile or corrupt KFD values must give `None` and an `unread` entry, never
        // a wrapped sum (the release build has no overflow checks).
        let props = format!("/{KFD_NODES}/{}/properties", node.id);
        let mut sum = |what: &str, vals: Vec<Option<u64>>, fits_u32: bool| match checked_sum(&vals)
        {
            Ok(Some(v)) if !fits_u32 || u32::try_from(v).is_ok() => Some(v),
            Ok(None) => None,
            _ => {
                r.unread.push(crate::model::Unread {
                    path: props.clone(),
                    error: format!(
                        "{what} summed over {} KFD node(s) is out of range",
                        vals.len()
                    ),
                });
                None
            }
        };
        let simd = parts.iter().map(|n| n.simd_count).collect();
        info.simd_count = sum("simd_count", simd, true).map(|v| v as u32);
        let cus = parts
            .iter()
            .map(|n| match (n.simd_count, n.simd_per_cu) {
                (Some(s), Some(p)) if p > 0 => Some(s / p),
                _ => None,
            })
            .collect();
        info.cu_count = sum("cu_count", cus, true).map(|v| v as u32);
        info.gfx_target = node.gfx_target_version.and_then(gfx_target_name);
        if info.vram_bytes.is_none() {
            let banks = parts.iter().map(|n| n.mem_bank_bytes).collect();
            info.vram_bytes = sum("size_in_bytes", banks, false);
        }
    }
    if let Some(t) = &info.gfx_target {
        info.family = family_of(t).map(str::to_owned);
        info.apu = Some(is_apu_target(t));
        if info.gc_version.is_none() {
            info.gc_version = gc_from_target(t);
        }
    }
    (info, product_name, r.unread)
}

/// The sum of `vals`: `Ok(None)` when one is missing, `Err` when it overflows `u64`.
fn checked_sum(vals: &[Option<u64>]) -> Result<Option<u64>, ()> {
    let mut total: u64 = 0;
    for v in vals {
        let Some(v) = v else { return Ok(None) };
        total = total.checked_add(*v).ok_or(())?;
    }
    Ok(Some(total))
}

/// A KFD `location_id` with the partition bits (function bits 0-2, bits 28-31) cleared.
fn partition_base(location_id: u64) -> u64 {
    location_id & 0x0fff_fff8
}

/// From GFX11 on the compiler target names the GC IP version (`gfx1151` is GC 11.5.1).
/// Older targets do not (`gfx1035` runs on GC 10.3.3), so they give `None`.
fn gc_from_target(target: &str) -> Option<String> {
    let t = target.strip_prefix("gfx")?;
    if t.len() != 4 {
        return None;
    }
    let major: u32 = t[..2].parse().ok()?;
    if major < 11 {
        return None;
    }
    let minor = u32::from_str_radix(&t[2..3], 16).ok()?;
    let step = u32::from_str_radix(&t[3..4], 16).ok()?;
    Some(format!("{major}.{minor}.{step}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gfx_targets() {
        assert_eq!(gfx_target_name(110501).as_deref(), Some("gfx1151"));
        assert_eq!(gfx_target_name(90010).as_deref(), Some("gfx90a"));
        assert_eq!(gfx_target_name(90402).as_deref(), Some("gfx942"));
        assert_eq!(gfx_target_name(100305).as_deref(), Some("gfx1035"));
        assert_eq!(gfx_target_name(0), None);
        assert_eq!(gc_from_target("gfx1151").as_deref(), Some("11.5.1"));
        assert_eq!(gc_from_target("gfx1035"), None);
    }

    #[test]
    fn families() {
        assert_eq!(family_of("gfx1151"), Some("GC_11_5_0"));
        assert_eq!(family_of("gfx1035"), Some("YC"));
        assert_eq!(family_of("gfx1100"), Some("GC_11_0_0"));
        assert_eq!(family_of("gfx942"), Some("AI"));
        assert_eq!(family_of("gfx1201"), Some("GC_12_0_0"));
        assert_eq!(family_of("gfx1036"), Some("GC_10_3_6"));
        assert_eq!(family_of("bogus"), None);
    }

    #[test]
    fn kfd_properties() {
        let n = parse_kfd_properties(
            1,
            "cpu_cores_count 0\nsimd_count 80\nsimd_per_cu 2\ngfx_target_version 110501\nlocation_id 50432\ndomain 0\ndrm_render_minor 128\n",
        );
        assert_eq!(n.simd_count, Some(80));
        assert_eq!(n.location_id, Some(50432));
        assert!(n.is_gpu());
    }

    #[test]
    fn sums_are_checked() {
        assert_eq!(checked_sum(&[Some(1), Some(2)]), Ok(Some(3)));
        assert_eq!(checked_sum(&[Some(1), None]), Ok(None));
        assert_eq!(checked_sum(&[Some(1 << 63), Some(1 << 63)]), Err(()));
    }
}
