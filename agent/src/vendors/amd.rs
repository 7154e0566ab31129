//! AMD: amdgpu device files and the KFD topology.
//!
//! Reads, on the PCI device directory: `mem_info_vram_total`, `mem_info_vis_vram_total`,
//! `mem_info_gtt_total`, `vbios_version`, `product_name` (FRU, server boards only),
//! `current_compute_partition`, `current_memory_partition`,
//! `ip_discovery/die/0/11/0/{major,minor,revision}` (the GC IP version) and
//! `driver/module/srcversion` (absent for most in-tree builds: `None`, not an error). Then
//! `sys/class/kfd/kfd/topology/nodes/*/properties` (+ `mem_banks/0/properties`): the node is
//! joined by `drm_render_minor`, else by `domain` + `location_id`; every node with the same
//! location is a compute partition of the same device (MI300 CPX), never a GPU of its own.
//!
//! Missing KFD (no `amdgpu` compute, old kernel): gfx target, CU count and family stay `None`.
//! A KFD node whose `properties` exist but cannot be read is reported by
//! [`read_kfd_with_errors`] (discovery lists it on every AMD GPU left without a node). Sums over
//! compute partitions are checked: one out of range is `None` plus an `unread` entry.
//! Missing `mem_info_vram_total`: VRAM falls back to the KFD memory bank size.

use crate::attr::Reader;
use crate::hostroot::HostRoot;
use crate::model::AmdInfo;
use crate::parse;
use crate::pci::PciGpu;

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
            let text =
                Reader::new(root, &mut unread).optional(root.read_attr(&node_dir, "properties"))?;
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

/// The GC (graphics-core) IP versions the kernel knows, with the KFD `gfx_target_version` it
/// reports for each and the `AMDGPU_FAMILY_*` it gives the device. Source: Linux 7.2.13
/// `drivers/gpu/drm/amd/amdkfd/kfd_device.c` (`kgd2kfd_probe`) for the target,
/// `drivers/gpu/drm/amd/amdgpu/amdgpu_discovery.c` (`amdgpu_discovery_set_ip_blocks`) for the
/// family, whose names are those of `include/uapi/drm/amdgpu_drm.h`.
const GC_TABLE: &[((u32, u32, u32), u64, &str)] = &[
    ((9, 0, 1), 90000, "AI"),    // Vega 10
    ((9, 1, 0), 90002, "RV"),    // Raven
    ((9, 2, 1), 90004, "AI"),    // Vega 12
    ((9, 2, 2), 90002, "RV"),    // Raven 2
    ((9, 3, 0), 90012, "RV"),    // Renoir
    ((9, 4, 0), 90006, "AI"),    // Vega 20
    ((9, 4, 1), 90008, "AI"),    // Arcturus
    ((9, 4, 2), 90010, "AI"),    // Aldebaran
    ((9, 4, 3), 90402, "AI"),    // MI300
    ((9, 4, 4), 90402, "AI"),    // MI300 variant
    ((9, 5, 0), 90500, "AI"),    // MI350
    ((10, 1, 10), 100100, "NV"), // Navi 10
    ((10, 1, 1), 100102, "NV"),  // Navi 14
    ((10, 1, 2), 100101, "NV"),  // Navi 12
    ((10, 1, 3), 100103, "NV"),  // Cyan Skillfish
    ((10, 1, 4), 100103, "NV"),
    ((10, 3, 0), 100300, "NV"),        // Sienna Cichlid
    ((10, 3, 1), 100303, "VGH"),       // Van Gogh
    ((10, 3, 2), 100301, "NV"),        // Navy Flounder
    ((10, 3, 3), 100305, "YC"),        // Yellow Carp (Rembrandt)
    ((10, 3, 4), 100302, "NV"),        // Dimgrey Cavefish
    ((10, 3, 5), 100304, "NV"),        // Beige Goby
    ((10, 3, 6), 100306, "GC_10_3_6"), // Raphael
    ((10, 3, 7), 100306, "GC_10_3_7"), // Mendocino
    ((11, 0, 0), 110000, "GC_11_0_0"),
    ((11, 0, 1), 110003, "GC_11_0_1"),
    ((11, 0, 2), 110002, "GC_11_0_0"),
    // "Compiler version is 11.0.1 while HW version is 11.0.3" (kfd_device.c).
    ((11, 0, 3), 110001, "GC_11_0_0"),
    ((11, 0, 4), 110003, "GC_11_0_1"),
    ((11, 5, 0), 110500, "GC_11_5_0"),
    ((11, 5, 1), 110501, "GC_11_5_0"),
    ((11, 5, 2), 110502, "GC_11_5_0"),
    ((11, 5, 3), 110503, "GC_11_5_0"),
    ((11, 5, 4), 110504, "GC_11_5_0"),
    ((11, 5, 6), 110504, "GC_11_5_0"),
    ((11, 7, 0), 110700, "GC_11_5_4"),
    ((11, 7, 1), 110701, "GC_11_5_4"),
    ((12, 0, 0), 120000, "GC_12_0_0"),
    ((12, 0, 1), 120001, "GC_12_0_0"),
    ((12, 1, 0), 120500, "GC_12_0_0"),
];

/// KFD targets of ASICs from before IP discovery (no GC version in sysfs): `kgd2kfd_probe`'s
/// `asic_type` cases and the family `amdgpu_device.c` gives those chips.
const PRE_DISCOVERY_TARGETS: &[(u64, &str)] = &[
    (70000, "KV"), // Kaveri
    (70001, "CI"), // Hawaii
    (80001, "CZ"), // Carrizo
    (80002, "VI"), // Tonga
    (80003, "VI"), // Fiji, Polaris 10/11/12, VegaM
];

/// The families ROCm's node labeller can name (`FamilyIDtoString` in ROCm/k8s-device-plugin
/// `internal/pkg/amdgpu/amdgpu.go` @ ed7646843003); for any other family it writes no label.
pub const LABELLER_FAMILIES: &[&str] = &[
    "SI",
    "CI",
    "KV",
    "VI",
    "CZ",
    "AI",
    "RV",
    "NV",
    "VGH",
    "GC_11_0_0",
    "YC",
    "GC_11_0_1",
    "GC_10_3_6",
    "GC_10_3_7",
    "GC_11_5_0",
    "GC_12_0_0",
];

fn parse_gc(gc: &str) -> Option<(u32, u32, u32)> {
    let mut it = gc.split('.').map(|p| p.parse::<u32>().ok());
    let v = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(v)
}

fn target_version(target: &str) -> Option<u64> {
    let t = target.strip_prefix("gfx")?;
    if t.len() < 3 {
        return None;
    }
    let (major, rest) = t.split_at(t.len() - 2);
    let major: u64 = major.parse().ok()?;
    let minor = u64::from_str_radix(&rest[..1], 16).ok()?;
    let step = u64::from_str_radix(&rest[1..], 16).ok()?;
    Some(major * 10000 + minor * 100 + step)
}

/// The kernel's family (`AMDGPU_FAMILY_*` name) of a GC IP version (`10.3.7` gives `GC_10_3_7`).
pub fn family_of_gc(gc: &str) -> Option<&'static str> {
    let v = parse_gc(gc)?;
    GC_TABLE
        .iter()
        .find(|(g, _, _)| *g == v)
        .map(|(_, _, f)| *f)
}

/// The family of a KFD target, where every GC version behind it has the same family:
/// `gfx1036` runs on GC 10.3.6 (Raphael, `GC_10_3_6`) and 10.3.7 (Mendocino, `GC_10_3_7`), so
/// it gives `None` and the family must come from `ip_discovery` ([`family_of_gc`]).
pub fn family_of(target: &str) -> Option<&'static str> {
    let v = target_version(target)?;
    if let Some((_, f)) = PRE_DISCOVERY_TARGETS.iter().find(|(t, _)| *t == v) {
        return Some(f);
    }
    let mut fams = GC_TABLE
        .iter()
        .filter(|(_, t, _)| *t == v)
        .map(|(_, _, f)| *f);
    let first = fams.next()?;
    fams.all(|f| f == first).then_some(first)
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
    let mut unread = Vec::new();
    let mut r = Reader::new(root, &mut unread);
    let dir = &gpu.dir;
    let mut info = AmdInfo {
        vram_bytes: r.attr(dir, "mem_info_vram_total", parse::int::<u64>),
        visible_vram_bytes: r.attr(dir, "mem_info_vis_vram_total", parse::int::<u64>),
        gtt_bytes: r.attr(dir, "mem_info_gtt_total", parse::int::<u64>),
        vbios_version: r.text(dir, "vbios_version"),
        compute_partition: r.text(dir, "current_compute_partition"),
        memory_partition: r.text(dir, "current_memory_partition"),
        ..AmdInfo::default()
    };
    let product_name = r.text(dir, "product_name");
    info.driver_srcversion = r.text(dir, "driver/module/srcversion");
    let gc = ["major", "minor", "revision"].map(|f| {
        r.attr(
            dir,
            &format!("ip_discovery/die/0/11/0/{f}"),
            parse::int::<u32>,
        )
    });
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
                r.record(crate::model::Unread {
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
        info.kfd_mem_bank_bytes = node.mem_bank_bytes;
        if info.vram_bytes.is_none() {
            let banks = parts.iter().map(|n| n.mem_bank_bytes).collect();
            info.vram_bytes = sum("size_in_bytes", banks, false);
        }
    }
    if let Some(t) = &info.gfx_target {
        info.apu = Some(is_apu_target(t));
        if info.gc_version.is_none() {
            info.gc_version = gc_from_target(t);
        }
    }
    // The family from the GC version (ip_discovery) where known: one target can span two
    // families (gfx1036: Raphael and Mendocino).
    info.family = info
        .gc_version
        .as_deref()
        .and_then(family_of_gc)
        .or_else(|| info.gfx_target.as_deref().and_then(family_of))
        .map(str::to_owned);
    (info, product_name, unread)
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

/// The GC IP version behind a KFD target, where exactly one is ([`GC_TABLE`]): `gfx1101` is
/// GC 11.0.3; `gfx1103` (11.0.1 or 11.0.4) and `gfx942` (9.4.3 or 9.4.4) give `None`.
fn gc_from_target(target: &str) -> Option<String> {
    let v = target_version(target)?;
    let mut gcs = GC_TABLE.iter().filter(|(_, t, _)| *t == v);
    match (gcs.next(), gcs.next()) {
        (Some(((a, b, c), _, _)), None) => Some(format!("{a}.{b}.{c}")),
        _ => None,
    }
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
        assert_eq!(gc_from_target("gfx1035").as_deref(), Some("10.3.3"));
        assert_eq!(gc_from_target("gfx90a").as_deref(), Some("9.4.2"));
    }

    /// The rows the old derivation (target digits as the GC version) got wrong, per
    /// kfd_device.c: the compiler target and the hardware version differ.
    #[test]
    fn gc_versions_that_differ_from_the_target() {
        assert_eq!(gc_from_target("gfx1101").as_deref(), Some("11.0.3"));
        assert_eq!(gc_from_target("gfx1103"), None); // 11.0.1 or 11.0.4
        assert_eq!(gc_from_target("gfx1154"), None); // 11.5.4 or 11.5.6
        assert_eq!(gc_from_target("gfx942"), None); // 9.4.3 or 9.4.4
        assert_eq!(gc_from_target("gfx1036"), None); // 10.3.6 or 10.3.7
        assert_eq!(gc_from_target("gfx1250").as_deref(), Some("12.1.0"));
        assert_eq!(gc_from_target("gfx1102").as_deref(), Some("11.0.2"));
    }

    #[test]
    fn every_gc_row_round_trips() {
        for ((a, b, c), t, fam) in GC_TABLE {
            let gc = format!("{a}.{b}.{c}");
            let name = gfx_target_name(*t).expect("target name");
            assert_eq!(target_version(&name), Some(*t), "{name}");
            assert_eq!(family_of_gc(&gc), Some(*fam), "{gc}");
            if let Some(back) = gc_from_target(&name) {
                assert_eq!(back, gc, "{name}");
            }
        }
    }

    #[test]
    fn families() {
        assert_eq!(family_of("gfx1151"), Some("GC_11_5_0"));
        assert_eq!(family_of("gfx1035"), Some("YC"));
        assert_eq!(family_of("gfx1100"), Some("GC_11_0_0"));
        assert_eq!(family_of("gfx1101"), Some("GC_11_0_0"));
        assert_eq!(family_of("gfx1103"), Some("GC_11_0_1"));
        assert_eq!(family_of("gfx942"), Some("AI"));
        assert_eq!(family_of("gfx90c"), Some("RV"));
        assert_eq!(family_of("gfx1201"), Some("GC_12_0_0"));
        assert_eq!(family_of("gfx1033"), Some("VGH"));
        assert_eq!(family_of("gfx803"), Some("VI"));
        // Raphael and Mendocino share gfx1036: only ip_discovery tells them apart.
        assert_eq!(family_of("gfx1036"), None);
        assert_eq!(family_of_gc("10.3.6"), Some("GC_10_3_6"));
        assert_eq!(family_of_gc("10.3.7"), Some("GC_10_3_7"));
        assert_eq!(family_of("gfx1037"), None); // no such KFD target
        assert_eq!(family_of_gc("11.7.0"), Some("GC_11_5_4"));
        assert!(!LABELLER_FAMILIES.contains(&"GC_11_5_4"));
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
