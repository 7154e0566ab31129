//! Generates a host root with N discrete AMD GPUs (RX 7900 XT shape: PCI device behind its own
//! bridge, DRM card + render node, amdgpu device files, hwmon, a KFD node each) for benchmarks
//! and scale tests. The shapes follow the fixture trees under tests/fixtures/hosts/.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

fn w(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

/// Build the tree under `root`.
pub fn amd_host(root: &Path, n: usize) {
    w(&root.join("proc/sys/kernel/osrelease"), "6.12.57-talos\n");
    w(
        &root.join("etc/os-release"),
        "NAME=\"Talos\"\nID=talos\nVERSION_ID=v1.11.5\nPRETTY_NAME=\"Talos (v1.11.5)\"\n",
    );
    w(
        &root.join("proc/modules"),
        "amdgpu 15269888 0 - Live 0x0000000000000000\namdxcp 12288 1 amdgpu, Live 0x0000000000000000\n",
    );
    w(&root.join("sys/module/amdgpu/initstate"), "live\n");
    let kfd = root.join("sys/devices/virtual/kfd/kfd/topology");
    w(&kfd.join("generation_id"), "1\n");
    w(
        &kfd.join("nodes/0/properties"),
        "cpu_cores_count 32\nsimd_count 0\n",
    );
    fs::create_dir_all(root.join("sys/class/kfd")).unwrap();
    symlink(
        "../../devices/virtual/kfd/kfd",
        root.join("sys/class/kfd/kfd"),
    )
    .unwrap();
    fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
    fs::create_dir_all(root.join("sys/bus/pci/drivers/amdgpu")).unwrap();
    fs::create_dir_all(root.join("sys/class/drm")).unwrap();
    for i in 0..n {
        let bus = 0x10 + i as u32;
        let bdf = format!("0000:{bus:02x}:00.0");
        let rel = format!("pci0000:00/0000:00:{:02x}.0/{bdf}", i % 32);
        let dev = root.join("sys/devices").join(&rel);
        let files: &[(&str, &str)] = &[
            ("vendor", "0x1002\n"),
            ("device", "0x744c\n"),
            ("subsystem_vendor", "0x1002\n"),
            ("subsystem_device", "0x0e3b\n"),
            ("class", "0x030000\n"),
            ("revision", "0xcc\n"),
            ("numa_node", "0\n"),
            ("current_link_speed", "16.0 GT/s PCIe\n"),
            ("current_link_width", "16\n"),
            ("max_link_speed", "16.0 GT/s PCIe\n"),
            ("max_link_width", "16\n"),
            ("mem_info_vram_total", "21458059264\n"),
            ("mem_info_vram_used", "1077809152\n"),
            ("mem_info_vis_vram_total", "21458059264\n"),
            ("mem_info_gtt_total", "32768000000\n"),
            ("gpu_busy_percent", "3\n"),
            ("vbios_version", "113-D70401XT-N11\n"),
            ("pp_dpm_sclk", "0: 500Mhz \n1: 1000Mhz *\n2: 2394Mhz \n"),
            ("hwmon/hwmon0/name", "amdgpu\n"),
            ("hwmon/hwmon0/temp1_input", "45000\n"),
            ("hwmon/hwmon0/temp1_label", "edge\n"),
            ("hwmon/hwmon0/power1_average", "31000000\n"),
        ];
        for (f, s) in files {
            w(&dev.join(f), s);
        }
        let depth = "../".repeat(rel.matches('/').count() + 2);
        symlink(format!("{depth}bus/pci/drivers/amdgpu"), dev.join("driver")).unwrap();
        symlink(
            format!("../../../devices/{rel}"),
            root.join("sys/bus/pci/devices").join(&bdf),
        )
        .unwrap();
        for (node, minor) in [
            (format!("card{i}"), i),
            (format!("renderD{}", 128 + i), 128 + i),
        ] {
            let d = dev.join("drm").join(&node);
            w(&d.join("dev"), &format!("226:{minor}\n"));
            symlink("../../../".to_string() + &bdf, d.join("device")).unwrap();
            symlink(
                format!("../../devices/{rel}/drm/{node}"),
                root.join("sys/class/drm").join(&node),
            )
            .unwrap();
        }
        let loc = (bus << 8) as usize;
        w(
            &kfd.join(format!("nodes/{}/properties", i + 1)),
            &format!(
                "cpu_cores_count 0\nsimd_count 168\nmem_banks_count 1\nsimd_per_cu 2\ngfx_target_version 110000\nvendor_id 4098\ndevice_id 29772\nlocation_id {loc}\ndomain 0\ndrm_render_minor {}\nlocal_mem_size 0\n",
                128 + i
            ),
        );
        w(
            &kfd.join(format!("nodes/{}/mem_banks/0/properties", i + 1)),
            "heap_type 1\nsize_in_bytes 21458059264\n",
        );
    }
}
