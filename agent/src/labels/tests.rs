//! Unit tests of the label function: sanitiser edge cases, per-vendor aggregation, compat
//! profiles, and a syntax check of every key and value against the Kubernetes label rules.

use super::*;
use crate::model::{
    AmdInfo, Extension, Gpu, Host, IntelInfo, ModelSource, ModuleState, NvidiaInfo, Status,
    TalosInfo, Vendor,
};

// ---- builders -------------------------------------------------------------------------------

fn gpu(vendor: Vendor, addr: &str, model: &str) -> Gpu {
    let driver = match vendor {
        Vendor::Amd => "amdgpu",
        Vendor::Nvidia => "nvidia",
        Vendor::Intel => "i915",
    };
    Gpu {
        device_id: Some(0x1586),
        model: model.to_owned(),
        driver: Some(driver.to_owned()),
        amd: (vendor == Vendor::Amd).then(AmdInfo::default),
        nvidia: (vendor == Vendor::Nvidia).then(NvidiaInfo::default),
        intel: (vendor == Vendor::Intel).then(IntelInfo::default),
        ..Gpu::test(vendor, addr)
    }
}

fn module(name: &str, state: &str, version: Option<&str>) -> ModuleState {
    ModuleState {
        name: name.to_owned(),
        state: state.into(),
        version: version.map(str::to_owned),
        taint: None,
    }
}

fn host() -> Host {
    Host {
        kernel: Some("6.12.57-talos".to_owned()),
        os: Some("Talos (v1.11.5)".to_owned()),
        talos: Some(TalosInfo {
            version: "v1.11.5".to_owned(),
            extensions: vec![Extension {
                name: "amdgpu".to_owned(),
                version: "20251021-v1.11.5".to_owned(),
            }],
        }),
        modules: vec![module("amdgpu", "live", None)],
        ..Host::default()
    }
}

fn plain_host() -> Host {
    Host {
        kernel: Some("6.8.0-51-generic".to_owned()),
        os: Some("Ubuntu 24.04.1 LTS".to_owned()),
        ..Host::default()
    }
}

fn strix_halo() -> Gpu {
    let mut g = gpu(Vendor::Amd, "0000:c5:00.0", "Radeon 8060S");
    g.memory_bytes = Some(536_870_912);
    g.amd = Some(AmdInfo {
        gfx_target: Some("gfx1151".into()),
        family: Some("GC_11_5_0".into()),
        cu_count: Some(40),
        simd_count: Some(80),
        vram_bytes: Some(536_870_912),
        gtt_bytes: Some(66_853_347_328),
        apu: Some(true),
        ..AmdInfo::default()
    });
    g
}

fn rtx4090(addr: &str) -> Gpu {
    let mut g = gpu(Vendor::Nvidia, addr, "NVIDIA GeForce RTX 4090");
    g.device_id = Some(0x2684);
    g.memory_bytes = Some(25_757_220_864);
    g.nvidia = Some(NvidiaInfo {
        kernel_module_version: Some("550.127.05".into()),
        ..NvidiaInfo::default()
    });
    g
}

fn with_nvml(mut g: Gpu) -> Gpu {
    let nv = g.nvidia.get_or_insert_with(NvidiaInfo::default);
    nv.compute_capability = Some("8.9".into());
    nv.cuda_driver_version = Some("12.8".into());
    nv.family = Some("ada".into());
    nv.mig_enabled = Some(false);
    g
}

fn labels(h: &Host, gpus: &[Gpu]) -> BTreeMap<String, String> {
    compute(h, gpus, &LabelConfig::default())
}

fn all_compat() -> LabelConfig {
    LabelConfig {
        prefix: DEFAULT_PREFIX.to_owned(),
        compat: CompatProfiles {
            nvidia_gfd: true,
            amd_labeller: true,
            intel_nfd: true,
        },
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn get<'a>(l: &'a BTreeMap<String, String>, k: &str) -> Option<&'a str> {
    l.get(k).map(String::as_str)
}

// ---- Kubernetes label syntax, written out (apimachinery validation rules) --------------------

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// DNS-1123 subdomain: lowercase labels `[a-z0-9]([-a-z0-9]*[a-z0-9])?` joined by dots, ≤253.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

fn is_label_key(k: &str) -> bool {
    match k.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(k),
    }
}

fn is_label_value(v: &str) -> bool {
    v.is_empty() || is_qualified_name_part(v)
}

fn assert_all_valid(l: &BTreeMap<String, String>) {
    for (k, v) in l {
        assert!(is_label_key(k), "invalid label key {k:?}");
        assert!(is_label_value(v), "invalid value {v:?} for key {k:?}");
    }
}

#[test]
fn syntax_checker_rejects_what_kubernetes_rejects() {
    // The checker itself must be able to fail, or the tests built on it prove nothing.
    assert!(is_label_key("gpuscout.io/amd.count"));
    assert!(is_label_key("present"));
    assert!(!is_label_key("gpuscout.io/-amd"));
    assert!(!is_label_key("gpuscout.io/amd."));
    assert!(!is_label_key("Gpuscout.io/amd"));
    assert!(!is_label_key("gpuscout.io/"));
    assert!(!is_label_key("a/b/c"));
    assert!(!is_label_key(&format!("gpuscout.io/{}", "a".repeat(64))));
    assert!(!is_label_key(&format!("{}/a", "a".repeat(254))));
    assert!(is_label_value(""));
    assert!(!is_label_value("a b"));
    assert!(!is_label_value("(x)"));
    assert!(!is_label_value(&"a".repeat(64)));
    assert!(!is_label_value("Ä"));
}

// ---- sanitiser ------------------------------------------------------------------------------

#[test]
fn sanitise_keeps_valid_values() {
    assert_eq!(sanitize_value("gfx1151").as_deref(), Some("gfx1151"));
    assert_eq!(
        sanitize_value("6.12.57-talos").as_deref(),
        Some("6.12.57-talos")
    );
    assert_eq!(sanitize_value("GC_11_5_0").as_deref(), Some("GC_11_5_0"));
}

#[test]
fn sanitise_parentheses_and_spaces_like_gfd() {
    assert_eq!(
        sanitize_value("NVIDIA TITAN X (Pascal)").as_deref(),
        Some("NVIDIA-TITAN-X-Pascal")
    );
    assert_eq!(
        sanitize_value("NVIDIA GeForce RTX 4090").as_deref(),
        Some("NVIDIA-GeForce-RTX-4090")
    );
}

#[test]
fn sanitise_slashes_and_runs() {
    assert_eq!(
        sanitize_value("Strix Halo [Radeon 8050S / Radeon 8060S]").as_deref(),
        Some("Strix-Halo-Radeon-8050S-Radeon-8060S")
    );
    assert_eq!(sanitize_value("a -- b").as_deref(), Some("a-b"));
    assert_eq!(
        sanitize_value("  A100-SXM4-40GB\n").as_deref(),
        Some("A100-SXM4-40GB")
    );
}

#[test]
fn sanitise_unicode() {
    assert_eq!(
        sanitize_value("Radeon™ 780M (Phoenix) / ÄÖ").as_deref(),
        Some("Radeon-780M-Phoenix")
    );
    assert_eq!(sanitize_value("Arc® A770").as_deref(), Some("Arc-A770"));
    assert_eq!(
        sanitize_value("Grafikkarte Größe 1").as_deref(),
        Some("Grafikkarte-Gr-e-1")
    );
}

#[test]
fn sanitise_empty_blank_and_symbols_are_omitted() {
    assert_eq!(sanitize_value(""), None);
    assert_eq!(sanitize_value("   \t\n"), None);
    assert_eq!(sanitize_value("™®©"), None);
    assert_eq!(sanitize_value("(/ÄÖ/)"), None);
    assert_eq!(sanitize_value("-._-"), None);
}

#[test]
fn sanitise_200_characters_truncates_with_hash() {
    let long = "Very Long GPU Name ".repeat(11); // 209 characters
    let v = sanitize_value(&long).unwrap();
    assert!(v.len() <= 63, "{v} is {} long", v.len());
    assert!(is_label_value(&v), "{v}");
    let (head, hash) = v.rsplit_once('-').unwrap();
    assert_eq!(hash.len(), 8);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(head.starts_with("Very-Long-GPU-Name-Very-Long"));
    // Deterministic: the same name always gives the same label.
    assert_eq!(sanitize_value(&long), Some(v));
}

#[test]
fn sanitise_names_differing_after_63_characters_stay_distinct() {
    let base = "A".repeat(70);
    let a = sanitize_value(&format!("{base}-one")).unwrap();
    let b = sanitize_value(&format!("{base}-two")).unwrap();
    assert_ne!(a, b);
    assert!(a.len() <= 63 && b.len() <= 63);
    // A name of exactly 63 valid characters is kept whole.
    let exact = "B".repeat(63);
    assert_eq!(sanitize_value(&exact), Some(exact));
}

#[test]
fn sanitise_long_names_that_sanitise_alike_stay_alike() {
    let base = "C".repeat(70);
    assert_eq!(
        sanitize_value(&format!("{base} (x)")),
        sanitize_value(&format!("{base}/x"))
    );
    assert_ne!(
        sanitize_value(&format!("{base} x")),
        sanitize_value(&format!("{base} y"))
    );
}

#[test]
fn sanitise_truncation_never_ends_on_a_separator() {
    // Character 54 (the cut) falls right after a space.
    let name = format!("{} {}", "x".repeat(53), "y".repeat(40));
    let v = sanitize_value(&name).unwrap();
    assert!(is_label_value(&v), "{v}");
    assert!(v.starts_with(&format!("{}-", "x".repeat(53))));
    assert!(!v.contains("--"), "{v}");
}

#[test]
fn sanitise_key_part_respects_room() {
    let s = sanitize(&"z".repeat(100), 20, '-').unwrap();
    assert_eq!(s.len(), 20);
    assert!(is_qualified_name_part(&s));
    assert_eq!(sanitize("abc", 5, '_').as_deref(), Some("abc"));
    assert_eq!(sanitize("a b", 63, '_').as_deref(), Some("a_b"));
    // No room for a hash: omit rather than produce a colliding stub.
    assert_eq!(sanitize(&"z".repeat(20), 9, '-'), None);
}

// ---- node and per-vendor labels -------------------------------------------------------------

#[test]
fn strix_halo_on_talos_full_label_set() {
    let l = labels(&host(), &[strix_halo()]);
    assert_eq!(
        l,
        map(&[
            ("gpuscout.io/present", "true"),
            ("gpuscout.io/talos.version", "v1.11.5"),
            ("gpuscout.io/amd.count", "1"),
            ("gpuscout.io/amd.ready", "true"),
            ("gpuscout.io/amd.status", "ok"),
            ("gpuscout.io/amd.product", "Radeon-8060S"),
            ("gpuscout.io/amd.memory-mib", "512"),
            ("gpuscout.io/amd.driver", "amdgpu"),
            // In-tree amdgpu has no module version: the kernel release is the driver version.
            ("gpuscout.io/amd.driver-version", "6.12.57-talos"),
            ("gpuscout.io/amd.gfx", "gfx1151"),
            ("gpuscout.io/amd.family", "GC_11_5_0"),
            ("gpuscout.io/amd.cu-count", "40"),
            ("gpuscout.io/amd.gtt-mib", "63756"),
        ])
    );
}

#[test]
fn no_gpus_gives_only_the_talos_version() {
    assert_eq!(
        labels(&host(), &[]),
        map(&[("gpuscout.io/talos.version", "v1.11.5")])
    );
    assert!(labels(&plain_host(), &[]).is_empty());
}

#[test]
fn custom_prefix_is_used_for_every_key() {
    let cfg = LabelConfig {
        prefix: "gpu.example.org".into(),
        ..LabelConfig::default()
    };
    let l = compute(&host(), &[strix_halo()], &cfg);
    assert!(!l.is_empty());
    assert!(l.keys().all(|k| k.starts_with("gpu.example.org/")), "{l:?}");
}

#[test]
fn mixed_models_give_mixed_and_counts() {
    let a = rtx4090("0000:01:00.0");
    let b = rtx4090("0000:02:00.0");
    let mut c = gpu(Vendor::Nvidia, "0000:03:00.0", "NVIDIA L40 (rev a1)");
    c.nvidia = a.nvidia.clone();
    let l = labels(&plain_host(), &[a, b, c]);
    assert_eq!(get(&l, "gpuscout.io/nvidia.count"), Some("3"));
    assert_eq!(get(&l, "gpuscout.io/nvidia.product"), Some("mixed"));
    assert_eq!(
        get(&l, "gpuscout.io/nvidia.product.NVIDIA-GeForce-RTX-4090"),
        Some("2")
    );
    assert_eq!(
        get(&l, "gpuscout.io/nvidia.product.NVIDIA-L40-rev-a1"),
        Some("1")
    );
    assert_all_valid(&l);
}

#[test]
fn models_that_sanitise_alike_are_one_product() {
    let a = gpu(Vendor::Amd, "0000:01:00.0", "Radeon RX 7900 XTX");
    let b = gpu(Vendor::Amd, "0000:02:00.0", "Radeon RX 7900 XTX ");
    let l = labels(&plain_host(), &[a, b]);
    assert_eq!(
        get(&l, "gpuscout.io/amd.product"),
        Some("Radeon-RX-7900-XTX")
    );
}

#[test]
fn mixed_long_models_get_distinct_valid_key_names() {
    let base = "Instinct Accelerator With A Very Long Marketing Name Of Many Words";
    let a = gpu(Vendor::Amd, "0000:01:00.0", &format!("{base} Alpha"));
    let b = gpu(Vendor::Amd, "0000:02:00.0", &format!("{base} Beta"));
    let c = gpu(Vendor::Amd, "0000:03:00.0", "™/()");
    let l = labels(&plain_host(), &[a, b, c]);
    assert_eq!(get(&l, "gpuscout.io/amd.product"), Some("mixed"));
    let per_model: Vec<&String> = l
        .keys()
        .filter(|k| k.starts_with("gpuscout.io/amd.product."))
        .collect();
    // Two long names, distinct after truncation; the symbol-only name has no key.
    assert_eq!(per_model.len(), 2, "{per_model:?}");
    for k in &per_model {
        assert_eq!(get(&l, k), Some("1"));
    }
    assert_all_valid(&l);
}

#[test]
fn empty_and_blank_models_have_no_product() {
    let l = labels(&plain_host(), &[gpu(Vendor::Intel, "0000:00:02.0", "")]);
    assert_eq!(get(&l, "gpuscout.io/intel.count"), Some("1"));
    assert_eq!(get(&l, "gpuscout.io/intel.product"), None);
    let l = labels(
        &plain_host(),
        &[gpu(Vendor::Intel, "0000:00:02.0", "  \t ")],
    );
    assert_eq!(get(&l, "gpuscout.io/intel.product"), None);
    assert_all_valid(&l);
}

#[test]
fn mixed_vendors_each_get_their_keys() {
    let mut raphael = gpu(Vendor::Amd, "0000:0e:00.0", "Raphael");
    raphael.amd = Some(AmdInfo {
        gfx_target: Some("gfx1036".into()),
        family: Some("GC_10_3_6".into()),
        cu_count: Some(2),
        apu: Some(true),
        gtt_bytes: Some(16 << 30),
        ..AmdInfo::default()
    });
    let l = labels(&host(), &[raphael, rtx4090("0000:01:00.0")]);
    assert_eq!(get(&l, "gpuscout.io/present"), Some("true"));
    assert_eq!(get(&l, "gpuscout.io/amd.count"), Some("1"));
    assert_eq!(get(&l, "gpuscout.io/nvidia.count"), Some("1"));
    assert_eq!(get(&l, "gpuscout.io/intel.count"), None);
    assert_eq!(get(&l, "gpuscout.io/amd.driver"), Some("amdgpu"));
    assert_eq!(get(&l, "gpuscout.io/nvidia.driver"), Some("nvidia"));
    assert_eq!(
        get(&l, "gpuscout.io/nvidia.driver-version"),
        Some("550.127.05")
    );
    assert_eq!(get(&l, "gpuscout.io/amd.gtt-mib"), Some("16384"));
    assert_eq!(
        get(&l, "gpuscout.io/nvidia.product"),
        Some("NVIDIA-GeForce-RTX-4090")
    );
    // The AMD facts stay with AMD: no cross-vendor leak.
    assert!(!l.keys().any(|k| k.starts_with("gpuscout.io/nvidia.gfx")));
    assert_all_valid(&l);
}

#[test]
fn one_gpu_not_ok_makes_the_vendor_not_ready_with_the_worst_status() {
    let a = rtx4090("0000:01:00.0");
    let mut b = rtx4090("0000:02:00.0");
    b.status = Status::DriverNotBound;
    b.driver = None;
    let mut c = rtx4090("0000:03:00.0");
    c.status = Status::FirmwareMissing;
    let l = labels(&plain_host(), &[a.clone(), b, c]);
    assert_eq!(get(&l, "gpuscout.io/nvidia.ready"), Some("false"));
    assert_eq!(
        get(&l, "gpuscout.io/nvidia.status"),
        Some("firmware-missing")
    );
    // The unbound GPU does not make the driver `mixed`.
    assert_eq!(get(&l, "gpuscout.io/nvidia.driver"), Some("nvidia"));

    let l = labels(&plain_host(), &[a]);
    assert_eq!(get(&l, "gpuscout.io/nvidia.ready"), Some("true"));
    assert_eq!(get(&l, "gpuscout.io/nvidia.status"), Some("ok"));
}

#[test]
fn unbound_only_gpu_has_no_driver_labels() {
    let mut g = gpu(Vendor::Nvidia, "0000:41:00.0", "NVIDIA L40");
    g.driver = None;
    g.status = Status::ModuleNotLoaded;
    let l = labels(&plain_host(), &[g]);
    assert_eq!(get(&l, "gpuscout.io/nvidia.driver"), None);
    assert_eq!(get(&l, "gpuscout.io/nvidia.driver-version"), None);
    assert_eq!(get(&l, "gpuscout.io/nvidia.ready"), Some("false"));
    assert_eq!(
        get(&l, "gpuscout.io/nvidia.status"),
        Some("module-not-loaded")
    );
}

#[test]
fn memory_is_the_smallest_and_only_when_all_known() {
    let mut a = rtx4090("0000:01:00.0");
    let mut b = rtx4090("0000:02:00.0");
    a.memory_bytes = Some(24 << 30);
    b.memory_bytes = Some(48 << 30);
    let l = labels(&plain_host(), &[a.clone(), b.clone()]);
    assert_eq!(get(&l, "gpuscout.io/nvidia.memory-mib"), Some("24576"));

    b.memory_bytes = None;
    let l = labels(&plain_host(), &[a.clone(), b.clone()]);
    assert_eq!(get(&l, "gpuscout.io/nvidia.memory-mib"), None);

    // A zero is a failed read, not a size.
    b.memory_bytes = Some(0);
    let l = labels(&plain_host(), &[a, b]);
    assert_eq!(get(&l, "gpuscout.io/nvidia.memory-mib"), None);

    let l = labels(
        &plain_host(),
        &[gpu(Vendor::Intel, "0000:00:02.0", "Meteor Lake-P")],
    );
    assert_eq!(get(&l, "gpuscout.io/intel.memory-mib"), None);
}

#[test]
fn intel_i915_and_xe_are_mixed_drivers_with_the_kernel_version() {
    let mut h = plain_host();
    h.modules = vec![module("i915", "live", None), module("xe", "live", None)];
    let a = gpu(
        Vendor::Intel,
        "0000:00:02.0",
        "Meteor Lake-P [Intel Arc Graphics]",
    );
    let mut b = gpu(Vendor::Intel, "0000:03:00.0", "Arc B580");
    b.driver = Some("xe".into());
    let l = labels(&h, &[a, b]);
    assert_eq!(get(&l, "gpuscout.io/intel.driver"), Some("mixed"));
    assert_eq!(get(&l, "gpuscout.io/intel.driver.i915"), Some("1"));
    assert_eq!(get(&l, "gpuscout.io/intel.driver.xe"), Some("1"));
    assert_eq!(
        get(&l, "gpuscout.io/intel.driver-version"),
        Some("6.8.0-51-generic")
    );
    assert_all_valid(&l);
}

#[test]
fn driver_version_sources() {
    // DKMS amdgpu has a module version, which wins over the kernel release.
    let mut h = host();
    h.modules = vec![module("amdgpu", "live", Some("6.8.5"))];
    let l = labels(&h, &[strix_halo()]);
    assert_eq!(get(&l, "gpuscout.io/amd.driver-version"), Some("6.8.5"));

    // NVIDIA without /proc/driver/nvidia/version: the module's version file.
    let mut g = rtx4090("0000:01:00.0");
    g.nvidia = Some(NvidiaInfo::default());
    let mut h = plain_host();
    h.modules = vec![module("nvidia", "live", Some("570.86.15"))];
    let l = labels(&h, &[g.clone()]);
    assert_eq!(
        get(&l, "gpuscout.io/nvidia.driver-version"),
        Some("570.86.15")
    );
    // ... and nothing at all when neither is known (nvidia is not in-tree).
    let l = labels(&plain_host(), &[g]);
    assert_eq!(get(&l, "gpuscout.io/nvidia.driver-version"), None);

    // vfio-pci: no version is known; with amdgpu beside it the versions cannot be told apart.
    let mut passthrough = strix_halo();
    passthrough.driver = Some("vfio-pci".into());
    passthrough.status = Status::BoundToOtherDriver;
    let l = labels(&host(), &[passthrough.clone()]);
    assert_eq!(get(&l, "gpuscout.io/amd.driver"), Some("vfio-pci"));
    assert_eq!(get(&l, "gpuscout.io/amd.driver-version"), None);
    let mut other = strix_halo();
    other.pci_address = "0000:c6:00.0".parse().unwrap();
    let l = labels(&host(), &[passthrough, other]);
    assert_eq!(get(&l, "gpuscout.io/amd.driver"), Some("mixed"));
    assert_eq!(get(&l, "gpuscout.io/amd.driver.vfio-pci"), Some("1"));
    assert_eq!(get(&l, "gpuscout.io/amd.driver.amdgpu"), Some("1"));
    assert_eq!(get(&l, "gpuscout.io/amd.driver-version"), None);

    // No kernel release read: in-tree drivers have no version either.
    let mut h = host();
    h.kernel = None;
    let l = labels(&h, &[strix_halo()]);
    assert_eq!(get(&l, "gpuscout.io/amd.driver-version"), None);
}

#[test]
fn amd_gpus_that_disagree_on_extras() {
    let apu = strix_halo();
    let mut dgpu = gpu(Vendor::Amd, "0000:03:00.0", "Radeon RX 7900 XTX");
    dgpu.memory_bytes = Some(24 << 30);
    dgpu.amd = Some(AmdInfo {
        gfx_target: Some("gfx1100".into()),
        family: Some("GC_11_0_0".into()),
        cu_count: Some(96),
        gtt_bytes: Some(32 << 30),
        apu: Some(false),
        ..AmdInfo::default()
    });
    let l = labels(&host(), &[apu.clone(), dgpu.clone()]);
    assert_eq!(get(&l, "gpuscout.io/amd.gfx"), Some("mixed"));
    assert_eq!(get(&l, "gpuscout.io/amd.family"), Some("mixed"));
    assert_eq!(get(&l, "gpuscout.io/amd.cu-count"), Some("40"));
    assert_eq!(get(&l, "gpuscout.io/amd.memory-mib"), Some("512"));
    // GTT is an APU fact; next to a discrete GPU it would mislead.
    assert_eq!(get(&l, "gpuscout.io/amd.gtt-mib"), None);

    // One GPU without KFD: its gfx is unknown, so the other's is no promise for the node.
    let mut no_kfd = dgpu.clone();
    no_kfd.amd = Some(AmdInfo::default());
    let mut same = dgpu.clone();
    same.pci_address = "0000:04:00.0".parse().unwrap();
    let l = labels(&host(), &[same.clone(), no_kfd]);
    assert_eq!(get(&l, "gpuscout.io/amd.gfx"), None);
    assert_eq!(get(&l, "gpuscout.io/amd.cu-count"), None);

    // Two identical dGPUs agree.
    let l = labels(&host(), &[same, dgpu]);
    assert_eq!(get(&l, "gpuscout.io/amd.gfx"), Some("gfx1100"));
    assert_eq!(get(&l, "gpuscout.io/amd.cu-count"), Some("96"));
    assert_eq!(get(&l, "gpuscout.io/amd.gtt-mib"), None);
}

#[test]
fn nvidia_extras_only_with_nvml() {
    let l = labels(&plain_host(), &[rtx4090("0000:01:00.0")]);
    for k in ["compute-capability", "cuda-driver", "family", "mig"] {
        assert_eq!(get(&l, &format!("gpuscout.io/nvidia.{k}")), None, "{k}");
    }
    let l = labels(&plain_host(), &[with_nvml(rtx4090("0000:01:00.0"))]);
    assert_eq!(
        get(&l, "gpuscout.io/nvidia.compute-capability"),
        Some("8.9")
    );
    assert_eq!(get(&l, "gpuscout.io/nvidia.cuda-driver"), Some("12.8"));
    assert_eq!(get(&l, "gpuscout.io/nvidia.family"), Some("ada"));
    assert_eq!(get(&l, "gpuscout.io/nvidia.mig"), Some("disabled"));
}

#[test]
fn nvidia_mig_mixed() {
    let a = with_nvml(rtx4090("0000:01:00.0"));
    let mut b = with_nvml(rtx4090("0000:02:00.0"));
    b.nvidia.as_mut().unwrap().mig_enabled = Some(true);
    let l = labels(&plain_host(), &[a, b.clone()]);
    assert_eq!(get(&l, "gpuscout.io/nvidia.mig"), Some("mixed"));
    let l = labels(&plain_host(), &[b]);
    assert_eq!(get(&l, "gpuscout.io/nvidia.mig"), Some("enabled"));
}

#[test]
fn intel_arch() {
    let mut g = gpu(Vendor::Intel, "0000:03:00.0", "Arc B580");
    g.intel = Some(IntelInfo {
        arch: Some("xe2".into()),
        ..IntelInfo::default()
    });
    let l = labels(&plain_host(), &[g.clone()]);
    assert_eq!(get(&l, "gpuscout.io/intel.arch"), Some("xe2"));
    let mut other = g.clone();
    other.intel.as_mut().unwrap().arch = Some("xe-hpg".into());
    let l = labels(&plain_host(), &[g, other]);
    assert_eq!(get(&l, "gpuscout.io/intel.arch"), Some("mixed"));
}

#[test]
fn compat_profiles_are_off_by_default() {
    let l = labels(
        &host(),
        &[
            strix_halo(),
            with_nvml(rtx4090("0000:01:00.0")),
            gpu(Vendor::Intel, "0000:00:02.0", "Meteor Lake-P"),
        ],
    );
    assert!(l.keys().all(|k| k.starts_with("gpuscout.io/")), "{l:?}");
}

// ---- compat profiles ------------------------------------------------------------------------

#[test]
fn gfd_keys() {
    let cfg = LabelConfig {
        compat: CompatProfiles {
            nvidia_gfd: true,
            ..CompatProfiles::default()
        },
        ..LabelConfig::default()
    };
    let l = compute(&plain_host(), &[with_nvml(rtx4090("0000:01:00.0"))], &cfg);
    let gfd: BTreeMap<String, String> = l
        .into_iter()
        .filter(|(k, _)| k.starts_with("nvidia.com/"))
        .collect();
    assert_eq!(
        gfd,
        map(&[
            ("nvidia.com/gpu.present", "true"),
            ("nvidia.com/gpu.count", "1"),
            ("nvidia.com/gpu.product", "NVIDIA-GeForce-RTX-4090"),
            ("nvidia.com/gpu.memory", "24564"),
            ("nvidia.com/gpu.family", "ada-lovelace"),
            ("nvidia.com/gpu.compute.major", "8"),
            ("nvidia.com/gpu.compute.minor", "9"),
            ("nvidia.com/gpu.mode", "graphics"),
            ("nvidia.com/cuda.driver-version.major", "550"),
            ("nvidia.com/cuda.driver-version.minor", "127"),
            ("nvidia.com/cuda.driver-version.revision", "05"),
            ("nvidia.com/cuda.driver-version.full", "550.127.05"),
            ("nvidia.com/cuda.driver.major", "550"),
            ("nvidia.com/cuda.driver.minor", "127"),
            ("nvidia.com/cuda.driver.rev", "05"),
            ("nvidia.com/cuda.runtime-version.major", "12"),
            ("nvidia.com/cuda.runtime-version.minor", "8"),
            ("nvidia.com/cuda.runtime-version.full", "12.8"),
            ("nvidia.com/cuda.runtime.major", "12"),
            ("nvidia.com/cuda.runtime.minor", "8"),
            ("nvidia.com/mig.capable", "true"),
        ])
    );
}

#[test]
fn gfd_without_nvml_and_with_mixed_models() {
    let cfg = all_compat();
    let mut h100 = gpu(Vendor::Nvidia, "0000:1b:00.0", "NVIDIA H100 80GB HBM3");
    h100.class = 0x030200;
    h100.nvidia = Some(NvidiaInfo {
        kernel_module_version: Some("580.95.05".into()),
        ..NvidiaInfo::default()
    });
    let l = compute(&plain_host(), &[h100.clone()], &cfg);
    assert_eq!(get(&l, "nvidia.com/gpu.mode"), Some("compute"));
    assert_eq!(
        get(&l, "nvidia.com/gpu.product"),
        Some("NVIDIA-H100-80GB-HBM3")
    );
    assert_eq!(
        get(&l, "nvidia.com/cuda.driver-version.full"),
        Some("580.95.05")
    );
    for k in [
        "gpu.family",
        "gpu.compute.major",
        "cuda.runtime-version.full",
        "mig.capable",
        "gpu.memory",
    ] {
        assert_eq!(get(&l, &format!("nvidia.com/{k}")), None, "{k}");
    }
    // GFD's family table (internal/lm/resource.go @ 1b826acc6af3).
    assert_eq!(gfd_family(9, 0), "hopper");
    assert_eq!(gfd_family(7, 5), "turing");
    assert_eq!(gfd_family(10, 0), "blackwell");
    assert_eq!(gfd_family(12, 0), "blackwell");
    assert_eq!(gfd_family(13, 0), "rubin");
    assert_eq!(gfd_family(11, 0), "undefined");
    assert_eq!(gfd_family(4, 0), "undefined");

    let mut other = h100.clone();
    other.model = "NVIDIA A100-SXM4-40GB".into();
    let l = compute(&plain_host(), &[h100, other], &cfg);
    assert_eq!(get(&l, "nvidia.com/gpu.count"), Some("2"));
    assert_eq!(get(&l, "nvidia.com/gpu.product"), None);
    assert_all_valid(&l);
}

#[test]
fn gfd_blackwell_family_and_explicit_mig_false() {
    let cfg = all_compat();
    let mut rtx5090 = with_nvml(rtx4090("0000:01:00.0"));
    rtx5090.model = "NVIDIA GeForce RTX 5090".into();
    let nv = rtx5090.nvidia.as_mut().unwrap();
    nv.compute_capability = Some("12.0".into());
    // NVML answered, and the MIG mode query was not supported: not MIG-capable.
    nv.mig_enabled = None;
    let l = compute(&plain_host(), &[rtx5090], &cfg);
    assert_eq!(get(&l, "nvidia.com/gpu.family"), Some("blackwell"));
    assert_eq!(get(&l, "nvidia.com/gpu.compute.major"), Some("12"));
    assert_eq!(get(&l, "nvidia.com/mig.capable"), Some("false"));
}

#[test]
fn gfd_mode_is_unknown_for_mixed_classes() {
    let cfg = all_compat();
    let a = with_nvml(rtx4090("0000:01:00.0"));
    let mut b = with_nvml(rtx4090("0000:02:00.0"));
    b.class = 0x030200;
    let l = compute(&plain_host(), &[a.clone(), b], &cfg);
    assert_eq!(get(&l, "nvidia.com/gpu.mode"), Some("unknown"));
    let l = compute(&plain_host(), &[a], &cfg);
    assert_eq!(get(&l, "nvidia.com/gpu.mode"), Some("graphics"));
}

#[test]
fn gfd_writes_nothing_without_the_nvidia_driver() {
    let cfg = all_compat();
    // Unbound, and held by vfio-pci: NVML (and so GFD) sees neither.
    let mut unbound = rtx4090("0000:01:00.0");
    unbound.driver = None;
    let mut vfio = rtx4090("0000:02:00.0");
    vfio.driver = Some("vfio-pci".into());
    let l = compute(&plain_host(), &[unbound.clone(), vfio.clone()], &cfg);
    assert!(l.keys().all(|k| !k.starts_with("nvidia.com/")), "{l:#?}");
    // Only the GPUs bound to nvidia are counted, as NVML would list them.
    let bound = with_nvml(rtx4090("0000:03:00.0"));
    let l = compute(&plain_host(), &[unbound, vfio, bound], &cfg);
    assert_eq!(get(&l, "nvidia.com/gpu.count"), Some("1"));
}

#[test]
fn gfd_product_sanitising() {
    assert_eq!(
        gfd_product("NVIDIA TITAN X (Pascal)").as_deref(),
        Some("NVIDIA-TITAN-X-Pascal")
    );
    assert_eq!(
        gfd_product("NVIDIA  RTX 4000/Ada").as_deref(),
        Some("NVIDIA-RTX-4000Ada")
    );
}

#[test]
fn amd_labeller_single_values() {
    let cfg = all_compat();
    let mut mi300 = gpu(Vendor::Amd, "0000:1b:00.0", "AMD Instinct MI300X OAM");
    mi300.model_source = ModelSource::Vendor;
    mi300.device_id = Some(0x74a1);
    mi300.class = 0x120000;
    mi300.memory_bytes = Some(192 << 30);
    mi300.amd = Some(AmdInfo {
        gfx_target: Some("gfx942".into()),
        family: Some("AI".into()),
        cu_count: Some(304),
        simd_count: Some(1216),
        vram_bytes: Some(192 << 30),
        kfd_mem_bank_bytes: Some(192 << 30),
        apu: Some(false),
        driver_srcversion: Some("5D8A6F0B1C2E3F4A5B6C7D8".into()),
        compute_partition: Some("SPX".into()),
        memory_partition: Some("NPS1".into()),
        ..AmdInfo::default()
    });
    let mut h = host();
    h.modules = vec![module("amdgpu", "live", Some("6.8.5"))];
    let l = compute(&h, &[mi300], &cfg);
    let amd: BTreeMap<String, String> = l
        .into_iter()
        .filter(|(k, _)| k.starts_with("amd.com/"))
        .collect();
    assert_eq!(
        amd,
        map(&[
            ("amd.com/gpu.family", "AI"),
            ("amd.com/gpu.cu-count", "304"),
            ("amd.com/gpu.simd-count", "1216"),
            ("amd.com/gpu.device-id", "74a1"),
            ("amd.com/gpu.product-name", "AMD_Instinct_MI300X_OAM"),
            ("amd.com/gpu.vram", "192G"),
            ("amd.com/gpu.driver-version", "6.8.5"),
            ("amd.com/gpu.driver-src-version", "5D8A6F0B1C2E3F4A5B6C7D8"),
            ("amd.com/gpu.compute-memory-partition", "spx_nps1"),
        ])
    );
}

/// The labeller reads each partition as a GPU: an MI300X in CPX mode has 8 partitions of 38
/// CUs and a 24 GiB first memory bank each; `vram` is the KFD bank, not `mem_info_vram_total`.
#[test]
fn amd_labeller_counts_per_partition_and_reads_vram_from_kfd() {
    let cfg = all_compat();
    let mut mi300 = gpu(Vendor::Amd, "0000:05:00.0", "AMD Instinct MI300X OAM");
    mi300.model_source = ModelSource::Vendor;
    mi300.amd = Some(AmdInfo {
        family: Some("AI".into()),
        cu_count: Some(304),
        simd_count: Some(1216),
        partitions: Some(8),
        vram_bytes: Some(192 << 30),
        kfd_mem_bank_bytes: Some(24 << 30),
        ..AmdInfo::default()
    });
    let l = compute(&host(), &[mi300.clone()], &cfg);
    assert_eq!(get(&l, "amd.com/gpu.cu-count"), Some("38"));
    assert_eq!(get(&l, "amd.com/gpu.simd-count"), Some("152"));
    assert_eq!(get(&l, "amd.com/gpu.vram"), Some("24G"));
    // No KFD bank: no vram label (the labeller reads nothing else).
    mi300.amd.as_mut().unwrap().kfd_mem_bank_bytes = None;
    let l = compute(&host(), &[mi300], &cfg);
    assert_eq!(get(&l, "amd.com/gpu.vram"), None);
}

/// Names from amdgpu.ids are what the labeller writes (libdrm's marketing name); pci.ids names
/// are not (the labeller never reads pci.ids); families the labeller cannot name are left out.
#[test]
fn amd_labeller_product_name_sources_and_unknown_families() {
    let cfg = all_compat();
    let mut rx = gpu(Vendor::Amd, "0000:03:00.0", "AMD Radeon RX 9070 XT");
    rx.model_source = ModelSource::AmdgpuIds;
    rx.amd.as_mut().unwrap().family = Some("GC_12_0_0".into());
    let l = compute(&host(), &[rx.clone()], &cfg);
    assert_eq!(
        get(&l, "amd.com/gpu.product-name"),
        Some("AMD_Radeon_RX_9070_XT")
    );
    assert_eq!(
        get(&l, "gpuscout.io/amd.product"),
        Some("AMD-Radeon-RX-9070-XT")
    );
    rx.model = "Navi 48".into();
    rx.model_source = ModelSource::PciIds;
    rx.amd.as_mut().unwrap().family = Some("GC_11_5_4".into());
    let l = compute(&host(), &[rx], &cfg);
    assert_eq!(get(&l, "amd.com/gpu.product-name"), None);
    assert_eq!(get(&l, "amd.com/gpu.family"), None);
    assert_eq!(get(&l, "gpuscout.io/amd.family"), Some("GC_11_5_4"));
}

#[test]
fn amd_labeller_mixed_values_become_counts() {
    let cfg = all_compat();
    let apu = strix_halo(); // 512 MiB carve-out rounds to 1G, as the labeller's math.Round does
    let mut apu = apu;
    apu.model_source = ModelSource::AmdgpuIds;
    apu.amd.as_mut().unwrap().kfd_mem_bank_bytes = Some(536_870_912);
    let mut dgpu = gpu(
        Vendor::Amd,
        "0000:03:00.0",
        "AMD Radeon RX 7900 XTX (Navi 31)",
    );
    dgpu.model_source = ModelSource::AmdgpuIds;
    dgpu.device_id = Some(0x744c);
    dgpu.amd = Some(AmdInfo {
        family: Some("GC_11_0_0".into()),
        cu_count: Some(96),
        simd_count: Some(192),
        vram_bytes: Some(24 << 30),
        kfd_mem_bank_bytes: Some(24 << 30),
        ..AmdInfo::default()
    });
    let mut fallback = gpu(Vendor::Amd, "0000:04:00.0", "AMD device 0x7551");
    fallback.model_source = ModelSource::Fallback;
    fallback.device_id = Some(0x7551);
    let l = compute(&host(), &[apu, dgpu, fallback], &cfg);
    let amd: BTreeMap<String, String> = l
        .iter()
        .filter(|(k, _)| k.starts_with("amd.com/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        amd,
        map(&[
            ("amd.com/gpu.family.GC_11_5_0", "1"),
            ("amd.com/gpu.family.GC_11_0_0", "1"),
            ("amd.com/gpu.cu-count.40", "1"),
            ("amd.com/gpu.cu-count.96", "1"),
            ("amd.com/gpu.simd-count.80", "1"),
            ("amd.com/gpu.simd-count.192", "1"),
            ("amd.com/gpu.device-id.1586", "1"),
            ("amd.com/gpu.device-id.744c", "1"),
            ("amd.com/gpu.device-id.7551", "1"),
            ("amd.com/gpu.product-name.Radeon_8060S", "1"),
            (
                "amd.com/gpu.product-name.AMD_Radeon_RX_7900_XTX_Navi_31",
                "1"
            ),
            ("amd.com/gpu.vram.1G", "1"),
            ("amd.com/gpu.vram.24G", "1"),
        ])
    );
    assert_all_valid(&l);
}

#[test]
fn intel_nfd_keys() {
    let cfg = all_compat();
    let mut a770 = gpu(Vendor::Intel, "0000:03:00.0", "Arc A770");
    a770.device_id = Some(0x56a0);
    let mut flex = gpu(Vendor::Intel, "0000:4d:00.0", "Data Center GPU Flex 170");
    flex.device_id = Some(0x56c0);
    flex.class = 0x038000;
    let mut h = plain_host();
    h.modules = vec![module("i915", "builtin", None)];
    let l = compute(&h, &[a770.clone(), flex], &cfg);
    let intel: BTreeMap<String, String> = l
        .into_iter()
        .filter(|(k, _)| !k.starts_with("gpuscout.io/"))
        .collect();
    assert_eq!(
        intel,
        map(&[
            ("intel.feature.node.kubernetes.io/gpu", "true"),
            ("gpu.intel.com/device-id.0300-56a0.present", "true"),
            ("gpu.intel.com/device-id.0380-56c0.present", "true"),
            ("gpu.intel.com/device-id.0300-56a0.count", "1"),
            ("gpu.intel.com/device-id.0380-56c0.count", "1"),
            // platform-labeling-rules.yaml: Flex 170, then the A-series rule (last wins).
            ("gpu.intel.com/product", "Flex_170"),
            ("gpu.intel.com/device.count", "1"),
            ("gpu.intel.com/family", "A_Series"),
        ])
    );

    // Without i915/xe loaded the GPU is there but the NFD rule does not fire.
    let mut h = plain_host();
    h.modules = vec![module("xe", "absent", None)];
    let l = compute(&h, &[a770], &cfg);
    assert_eq!(get(&l, "intel.feature.node.kubernetes.io/gpu"), None);
    assert_eq!(
        get(&l, "gpu.intel.com/device-id.0300-56a0.present"),
        Some("true")
    );
}

// ---- every key and value, rich input --------------------------------------------------------

#[test]
fn every_key_and_value_is_valid_label_syntax() {
    let long = "Ultra Long Product Name ".repeat(9);
    let mut amd_long = strix_halo();
    amd_long.pci_address = "0000:c6:00.0".parse().unwrap();
    amd_long.model = format!("{long}Ä (rev 1)");
    amd_long.model_source = ModelSource::Vendor;
    let mut amd_unicode = strix_halo();
    amd_unicode.pci_address = "0000:c7:00.0".parse().unwrap();
    amd_unicode.model = "Radeon™ 780M (Phoenix) / ÄÖ".into();
    amd_unicode.amd.as_mut().unwrap().family = Some("weird family/©".into());
    let mut amd_vfio = strix_halo();
    amd_vfio.pci_address = "0000:c8:00.0".parse().unwrap();
    amd_vfio.driver = Some("vfio-pci".into());
    amd_vfio.status = Status::BoundToOtherDriver;
    let mut nv_blank = with_nvml(rtx4090("0000:02:00.0"));
    nv_blank.model = "   ".into();
    nv_blank.nvidia.as_mut().unwrap().compute_capability = Some("9.0".into());
    nv_blank.nvidia.as_mut().unwrap().mig_enabled = Some(true);
    let mut nv_unbound = rtx4090("0000:03:00.0");
    nv_unbound.driver = None;
    nv_unbound.status = Status::DriverNotBound;
    let mut intel_xe = gpu(Vendor::Intel, "0000:05:00.0", "Battlemage G21 [Arc B580]");
    intel_xe.driver = Some("xe".into());
    intel_xe.intel.as_mut().unwrap().arch = Some("xe2".into());
    let mut intel_slash = gpu(
        Vendor::Intel,
        "0000:00:02.0",
        "Meteor Lake-P [Intel Arc Graphics] / (x)",
    );
    intel_slash.status = Status::UnsupportedByTalosVersion;
    let gpus = [
        strix_halo(),
        amd_long,
        amd_unicode,
        amd_vfio,
        with_nvml(rtx4090("0000:01:00.0")),
        nv_blank,
        nv_unbound,
        intel_xe,
        intel_slash,
    ];
    let mut h = host();
    h.talos.as_mut().unwrap().version = "v1.12.0-alpha.1+dirty (custom)".into();
    h.modules.push(module("xe", "live", None));
    h.modules.push(module("i915", "live", None));

    for prefix in [
        DEFAULT_PREFIX.to_owned(),
        format!("{}.example.org", "a".repeat(63)),
    ] {
        let mut cfg = all_compat();
        cfg.prefix = prefix.clone();
        let l = compute(&h, &gpus, &cfg);
        assert!(l.len() > 60, "expected a rich label set, got {}", l.len());
        assert_all_valid(&l);
        assert_eq!(get(&l, &format!("{prefix}/amd.count")), Some("4"));
        assert_eq!(get(&l, &format!("{prefix}/amd.product")), Some("mixed"));
        assert_eq!(get(&l, &format!("{prefix}/amd.family")), Some("mixed"));
        assert_eq!(get(&l, &format!("{prefix}/nvidia.ready")), Some("false"));
        assert_eq!(
            get(&l, &format!("{prefix}/intel.status")),
            Some("unsupported-by-talos-version")
        );
        assert_eq!(
            get(&l, &format!("{prefix}/talos.version")),
            Some("v1.12.0-alpha.1-dirty-custom")
        );
    }
}

// ---- prefix ---------------------------------------------------------------------------------

#[test]
fn prefix_validation() {
    assert!(validate_prefix("gpuscout.io").is_ok());
    assert!(validate_prefix("gpu.example-corp.org").is_ok());
    assert!(validate_prefix(&format!("{}.io", "a".repeat(63))).is_ok());
    assert!(validate_prefix("").is_err());
    assert!(validate_prefix("GPUscout.io").is_err());
    assert!(validate_prefix("gpuscout.io/").is_err());
    assert!(validate_prefix("-gpuscout.io").is_err());
    assert!(validate_prefix("gpuscout..io").is_err());
    assert!(validate_prefix(&format!("{}.io", "a".repeat(64))).is_err());
    assert!(validate_prefix(&["abc"; 64].join(".")).is_err()); // 255 characters
    assert!(validate_prefix("kubernetes.io").is_err());
    assert!(validate_prefix("node.kubernetes.io").is_err());
    assert!(validate_prefix("k8s.io").is_err());
    assert!(validate_prefix("notk8s.io").is_ok());
}
