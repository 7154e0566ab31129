//! Vendor-specific enrichment of the PCI GPUs, one vendor per file.
//!
//! Each reader takes the generic [`PciGpu`](crate::pci::PciGpu) facts and adds what its
//! vendor exposes in sysfs/procfs. None of them calls a vendor library (that is the job of the
//! optional library sources) and none fails: missing files leave fields `None`.

pub mod amd;
pub mod intel;
pub mod intel_ids;
pub mod nvidia;
pub mod nvidia_arch;
pub mod nvswitch;
