//! PCI addresses (`DDDD:BB:DD.F`): parsed from sysfs, NVML and short forms, written in the
//! sysfs form. Plain data; reads nothing.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A PCI address `DDDD:BB:DD.F`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    pub domain: u32,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl PciAddress {
    /// KFD `location_id`: `(bus << 8) | (device << 3) | function`.
    pub fn location_id(&self) -> u32 {
        (u32::from(self.bus) << 8) | (u32::from(self.device) << 3) | u32::from(self.function)
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// A string that is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a PCI address: {0:?}")]
pub struct BadAddress(pub String);

impl FromStr for PciAddress {
    type Err = BadAddress;

    /// Accepts sysfs (`0000:3b:00.0`), NVML (`00000000:3B:00.0`) and short (`3b:00.0`) forms.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadAddress(s.to_owned());
        let t = s.trim();
        let (rest, func) = t.rsplit_once('.').ok_or_else(bad)?;
        let mut parts = rest.rsplitn(3, ':');
        let dev = parts.next().ok_or_else(bad)?;
        let bus = parts.next().ok_or_else(bad)?;
        let dom = parts.next().unwrap_or("0");
        let hex32 = |x: &str, max_len: usize| {
            if x.is_empty() || x.len() > max_len || !x.bytes().all(|b| b.is_ascii_hexdigit()) {
                None
            } else {
                u32::from_str_radix(x, 16).ok()
            }
        };
        let domain = hex32(dom, 8).ok_or_else(bad)?;
        let bus = hex32(bus, 2).ok_or_else(bad)? as u8;
        let device = hex32(dev, 2).filter(|d| *d < 32).ok_or_else(bad)? as u8;
        let function = hex32(func, 1).filter(|f| *f < 8).ok_or_else(bad)? as u8;
        Ok(Self {
            domain,
            bus,
            device,
            function,
        })
    }
}

impl Serialize for PciAddress {
    /// The sysfs form, `0000:3b:00.0`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl PartialEq<&str> for PciAddress {
    /// Equal to an address written in any form [`FromStr`] accepts.
    fn eq(&self, other: &&str) -> bool {
        other.parse::<PciAddress>().is_ok_and(|a| a == *self)
    }
}
