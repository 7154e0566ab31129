//! What the Talos API says about this node, decoded from the resources' YAML specs.
//!
//! Talos fills each COSI resource's `spec.yaml_spec` with the YAML `talosctl get -o yaml` shows.
//! Four resource types are read (all readable with `os:reader`):
//!
//! | type | namespace | spec fields used |
//! |---|---|---|
//! | `ExtensionStatuses.runtime.talos.dev` | `runtime` | `metadata.name`, `metadata.version` |
//! | `KernelModuleSpecs.runtime.talos.dev` | `runtime` | the module name: the resource id, or the spec's `string:` key (Talos' YAML tag for the name) or `name:` |
//! | `Services.v1alpha1.talos.dev` | `runtime` | `running`, `healthy`, `unknown` |
//! | `PCIDevices.hardware.talos.dev` | `hardware` | `driver` (empty or absent: unbound), `vendor_id`, `product_id` |
//!
//! A resource whose spec does not parse is skipped and counted in [`TalosApiFacts::skipped`];
//! it never fails the whole read.

use super::client::{Client, Error};
use super::proto::Resource;
use crate::model::Extension;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use tracing::warn;

pub const EXTENSION_STATUSES: (&str, &str) = ("runtime", "ExtensionStatuses.runtime.talos.dev");
pub const KERNEL_MODULE_SPECS: (&str, &str) = ("runtime", "KernelModuleSpecs.runtime.talos.dev");
pub const SERVICES: (&str, &str) = ("runtime", "Services.v1alpha1.talos.dev");
pub const PCI_DEVICES: (&str, &str) = ("hardware", "PCIDevices.hardware.talos.dev");

/// State of one Talos service (`Services.v1alpha1.talos.dev`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct ServiceState {
    #[serde(default)]
    pub running: bool,
    #[serde(default)]
    pub healthy: bool,
    /// Health is not known (the service has no health check, or none ran yet).
    #[serde(default)]
    pub unknown: bool,
}

/// One PCI function as Talos saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TalosPciDevice {
    /// Driver bound when Talos scanned the bus (once, after udevd was healthy); `None`: unbound.
    pub driver: Option<String>,
    pub vendor_id: Option<String>,
    pub product_id: Option<String>,
}

/// Facts about this node from the Talos API. Plain data: build it by hand in tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TalosApiFacts {
    /// Installed system extensions (synthetic `schematic` and `modules.dep` left out), sorted.
    pub extensions: Vec<Extension>,
    /// Modules listed in `machine.kernel.modules` (`KernelModuleSpecs`).
    pub kernel_modules: BTreeSet<String>,
    /// Every service by id (`ext-nvidia-persistenced`, `ext-nvidia-cdi-gen`, `udevd`, ...).
    pub services: BTreeMap<String, ServiceState>,
    /// PCI functions by address (`0000:01:00.0`).
    pub pci_devices: BTreeMap<String, TalosPciDevice>,
    /// Resources skipped because their spec did not parse.
    pub skipped: usize,
}

#[derive(Deserialize, Default)]
struct ExtensionSpec {
    #[serde(default)]
    metadata: ExtensionMeta,
}

#[derive(Default, Deserialize)]
struct ExtensionMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
}

#[derive(Default, Deserialize)]
struct ModuleSpec {
    // Talos tags the name field `yaml:"string"`.
    #[serde(default)]
    string: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Default, Deserialize)]
struct PciSpec {
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    vendor_id: Option<String>,
    #[serde(default)]
    product_id: Option<String>,
}

fn id_of(r: &Resource) -> &str {
    r.metadata.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

fn yaml_of(r: &Resource) -> &str {
    r.spec.as_ref().map(|s| s.yaml_spec.as_str()).unwrap_or("")
}

fn parse<T: for<'de> Deserialize<'de> + Default>(
    rtype: &str,
    r: &Resource,
    skipped: &mut usize,
) -> Option<T> {
    let y = yaml_of(r);
    if y.trim().is_empty() {
        // Talos marshals an all-default spec as `{}`; an empty string means no YAML at all.
        return Some(T::default());
    }
    if let Err(e) = crate::parse::check_yaml_bounds(y) {
        *skipped += 1;
        warn!(rtype, id = id_of(r), error = %e, "Talos API: spec refused before parsing; resource skipped");
        return None;
    }
    match serde_norway::from_str::<T>(y) {
        Ok(v) => Some(v),
        Err(e) => {
            *skipped += 1;
            warn!(rtype, id = id_of(r), error = %e, "Talos API: spec does not parse; resource skipped");
            None
        }
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl TalosApiFacts {
    /// Add `ExtensionStatuses` resources.
    pub fn add_extensions(&mut self, items: &[Resource]) {
        for r in items {
            let Some(spec) = parse::<ExtensionSpec>(EXTENSION_STATUSES.1, r, &mut self.skipped)
            else {
                continue;
            };
            let name = spec.metadata.name.trim().trim_start_matches("siderolabs/");
            if name.is_empty() || name == "schematic" || name == "modules.dep" {
                continue;
            }
            if self.extensions.iter().any(|e| e.name == name) {
                continue;
            }
            self.extensions.push(Extension {
                name: name.to_owned(),
                version: spec.metadata.version.trim().to_owned(),
            });
        }
        self.extensions.sort();
    }

    /// Add `KernelModuleSpecs` resources.
    pub fn add_kernel_modules(&mut self, items: &[Resource]) {
        for r in items {
            let Some(spec) = parse::<ModuleSpec>(KERNEL_MODULE_SPECS.1, r, &mut self.skipped)
            else {
                continue;
            };
            let name = non_empty(spec.string)
                .or_else(|| non_empty(spec.name))
                .or_else(|| non_empty(Some(id_of(r).to_owned())));
            if let Some(n) = name {
                // The kernel shows `-` in module names as `_`.
                self.kernel_modules.insert(n.replace('-', "_"));
            }
        }
    }

    /// Add `Services` resources.
    pub fn add_services(&mut self, items: &[Resource]) {
        for r in items {
            let id = id_of(r);
            if id.is_empty() {
                continue;
            }
            if let Some(s) = parse::<ServiceState>(SERVICES.1, r, &mut self.skipped) {
                self.services.insert(id.to_owned(), s);
            }
        }
    }

    /// Add `PCIDevices` resources.
    pub fn add_pci_devices(&mut self, items: &[Resource]) {
        for r in items {
            let id = id_of(r);
            if id.is_empty() {
                continue;
            }
            if let Some(s) = parse::<PciSpec>(PCI_DEVICES.1, r, &mut self.skipped) {
                self.pci_devices.insert(
                    id.to_owned(),
                    TalosPciDevice {
                        driver: non_empty(s.driver),
                        vendor_id: non_empty(s.vendor_id),
                        product_id: non_empty(s.product_id),
                    },
                );
            }
        }
    }

    /// Read all four resource types from the node the client addresses.
    pub async fn fetch(client: &Client) -> Result<Self, Error> {
        let mut f = TalosApiFacts::default();
        let (ns, t) = EXTENSION_STATUSES;
        f.add_extensions(&client.list(ns, t).await?);
        let (ns, t) = KERNEL_MODULE_SPECS;
        f.add_kernel_modules(&client.list(ns, t).await?);
        let (ns, t) = SERVICES;
        f.add_services(&client.list(ns, t).await?);
        let (ns, t) = PCI_DEVICES;
        f.add_pci_devices(&client.list(ns, t).await?);
        Ok(f)
    }
}
