//! The driver-stack verdict of a GPU, shared by the report ([`crate::model`]) and the causes
//! that set it ([`crate::cause`]). Plain data; reads nothing.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Driver-stack verdict per GPU (`docs/reference/verdicts.md`), ordered from best to worst: a GPU's status is its worst
/// problem, and a vendor's `V.status` label the worst status of its GPUs.
///
/// `bound-to-other-driver` (a GPU held by vfio-pci for a VM, or by another driver) ranks just
/// above `ok`: it is a deliberate state of that one GPU, so a genuine fault on another GPU of
/// the same vendor outranks it. `service-not-running` ranks next: the kernel driver is bound and
/// live, only a user-space service beside it is down. `unknown` ranks last: nothing can be said.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    #[default]
    Ok,
    BoundToOtherDriver,
    ServiceNotRunning,
    DriverNotBound,
    ModuleNotLoaded,
    ExtensionMissing,
    ExtensionVersionMismatch,
    DriverVersionMismatch,
    FirmwareMissing,
    UnsupportedByTalosVersion,
    Unknown,
}

impl Status {
    pub const ALL: [Status; 11] = [
        Status::Ok,
        Status::BoundToOtherDriver,
        Status::ServiceNotRunning,
        Status::DriverNotBound,
        Status::ModuleNotLoaded,
        Status::ExtensionMissing,
        Status::ExtensionVersionMismatch,
        Status::DriverVersionMismatch,
        Status::FirmwareMissing,
        Status::UnsupportedByTalosVersion,
        Status::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::BoundToOtherDriver => "bound-to-other-driver",
            Status::ServiceNotRunning => "service-not-running",
            Status::DriverNotBound => "driver-not-bound",
            Status::ModuleNotLoaded => "module-not-loaded",
            Status::ExtensionMissing => "extension-missing",
            Status::ExtensionVersionMismatch => "extension-version-mismatch",
            Status::DriverVersionMismatch => "driver-version-mismatch",
            Status::FirmwareMissing => "firmware-missing",
            Status::UnsupportedByTalosVersion => "unsupported-by-talos-version",
            Status::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
