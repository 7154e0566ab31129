//! PCI attribute files (`vendor`, `class`, link speed, decimal attributes) and PCI addresses.
#![no_main]
use gpuscout::parse;
use gpuscout::pci::PciAddress;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(v) = parse::hex_u16(s) {
        // Whatever parses must round-trip through the kernel's own format.
        assert_eq!(parse::hex_u16(&format!("{v:#06x}\n")), Ok(v));
    }
    let _ = parse::hex_u32(s);
    let _ = parse::int::<i32>(s);
    let _ = parse::int::<u64>(s);
    if let Ok(Some(g)) = parse::link_speed_gts(s) {
        assert!(g.is_finite() && g > 0.0);
    }
    if let Ok(a) = s.parse::<PciAddress>() {
        assert_eq!(a.to_string().parse::<PciAddress>(), Ok(a));
    }
});
