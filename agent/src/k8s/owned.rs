//! Which labels are ours, and whether the Node needs a write. Pure functions over the Node's
//! metadata (`labels`, `annotations`, `managedFields`) and the label-removal request they lead
//! to; no I/O.
//!
//! "Ours" is every key under our prefix, plus any other key (compat profiles such as
//! `nvidia.com/gpu.product`) that field manager [`FIELD_MANAGER`] applied. Everything else on
//! the Node is foreign and never touched.

use crate::model::Extension;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::{BTreeMap, BTreeSet};

/// Our server-side-apply field manager. One stable name (never the pod name): managedFields
/// grow with every distinct manager.
pub const FIELD_MANAGER: &str = "gpuscout";

/// The Nodes collection.
pub const NODES: &str = "/api/v1/nodes";

/// A merge patch that sets each of `keys` to null on Node `name`, guarded by the resourceVersion
/// of `view` (a 409 if the Node changed since), written as [`FIELD_MANAGER`]. Removes keys that
/// server-side apply cannot: those another manager owns, or all of ours when pruning.
pub fn remove_labels_request(
    name: &str,
    view: &NodeView,
    keys: &[String],
) -> Result<http::Request<Vec<u8>>, kube::core::request::Error> {
    let labels: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|k| (k.clone(), serde_json::Value::Null))
        .collect();
    let body = serde_json::json!({
        "metadata": {"resourceVersion": view.resource_version, "labels": labels},
    });
    let pp = kube::core::params::PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    kube::core::Request::new(NODES).patch_metadata(
        name,
        &pp,
        &kube::core::params::Patch::Merge(&body),
    )
}

/// What the agent last saw of its Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    pub uid: String,
    pub resource_version: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Label keys that [`FIELD_MANAGER`] owns through an `Apply` entry of managedFields.
    pub applied_by_us: BTreeSet<String>,
}

impl NodeView {
    pub fn from_meta(meta: &ObjectMeta) -> Self {
        let mut applied_by_us = BTreeSet::new();
        for entry in meta.managed_fields.iter().flatten() {
            if entry.manager.as_deref() != Some(FIELD_MANAGER)
                || entry.operation.as_deref() != Some("Apply")
            {
                continue;
            }
            let labels = entry
                .fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:metadata"))
                .and_then(|m| m.get("f:labels"))
                .and_then(|l| l.as_object());
            for key in labels.into_iter().flat_map(|m| m.keys()) {
                if let Some(k) = key.strip_prefix("f:") {
                    applied_by_us.insert(k.to_owned());
                }
            }
        }
        Self {
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            applied_by_us,
        }
    }

    /// Is `key` one of ours (see the module docs)?
    pub fn is_ours(&self, key: &str, prefix: &str) -> bool {
        under_prefix(key, prefix) || self.applied_by_us.contains(key)
    }
}

fn under_prefix(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// Does the Node need an apply: a desired label missing or different, or a key our apply owns
/// that is no longer desired? A key under our prefix that another manager owns is not a reason:
/// an apply cannot remove it (it is [`stale_prefix_keys`]' job, one merge patch).
pub fn needs_apply(desired: &BTreeMap<String, String>, node: &NodeView, _prefix: &str) -> bool {
    desired.iter().any(|(k, v)| node.labels.get(k) != Some(v))
        || node
            .labels
            .keys()
            .any(|k| node.applied_by_us.contains(k) && !desired.contains_key(k))
}

/// Keys under our prefix that are on the Node but not desired: what an apply could not remove
/// because another manager (a `kubectl label`, an older agent's merge patch) owns them.
pub fn stale_prefix_keys(
    desired: &BTreeMap<String, String>,
    node: &NodeView,
    prefix: &str,
) -> Vec<String> {
    node.labels
        .keys()
        .filter(|k| under_prefix(k, prefix) && !desired.contains_key(*k))
        .cloned()
        .collect()
}

/// Talos' `extensions.talos.dev/<name>=<version>` labels and annotations (a version that is not
/// a valid label value is published as an annotation), parsed by the verdict engine's own
/// [`crate::verdict::extensions_from_node_metadata`]: sorted by name, without `schematic` and
/// `modules.dep`, a label winning over an annotation of the same name. `None` when the Node
/// carries no `extensions.talos.dev/*` key (not Talos, or Talos before v1.8).
pub fn extensions_from_node(node: &NodeView) -> Option<Vec<Extension>> {
    crate::verdict::extensions_from_node_metadata(
        node.labels
            .iter()
            .chain(node.annotations.iter())
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn view(labels: &[(&str, &str)], ours: &[&str]) -> NodeView {
        NodeView {
            labels: map(labels),
            applied_by_us: ours.iter().map(|s| (*s).to_owned()).collect(),
            ..NodeView::default()
        }
    }

    #[test]
    fn managed_fields_of_our_apply_entry_only() {
        let entry = |manager: &str, op: &str, key: &str| ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(op.into()),
            fields_v1: Some(FieldsV1(serde_json::json!({
                "f:metadata": {"f:labels": {format!("f:{key}"): {}}}
            }))),
            ..ManagedFieldsEntry::default()
        };
        let meta = ObjectMeta {
            uid: Some("u1".into()),
            managed_fields: Some(vec![
                entry("gpuscout", "Apply", "nvidia.com/gpu.product"),
                entry("gpuscout", "Update", "x/y"),
                entry("kubectl-label", "Update", "gpuscout.io/amd.count"),
            ]),
            ..ObjectMeta::default()
        };
        let v = NodeView::from_meta(&meta);
        assert_eq!(v.uid, "u1");
        assert_eq!(
            v.applied_by_us.iter().collect::<Vec<_>>(),
            ["nvidia.com/gpu.product"]
        );
    }

    #[test]
    fn diff_only_on_change() {
        let desired = map(&[("gpuscout.io/amd.count", "1")]);
        let same = view(
            &[
                ("gpuscout.io/amd.count", "1"),
                ("kubernetes.io/os", "linux"),
            ],
            &[],
        );
        assert!(!needs_apply(&desired, &same, "gpuscout.io"));
        let changed = view(&[("gpuscout.io/amd.count", "2")], &[]);
        assert!(needs_apply(&desired, &changed, "gpuscout.io"));
        // A key we applied and no longer want: an apply releases it.
        let ours_extra = view(
            &[("gpuscout.io/amd.count", "1"), ("gpuscout.io/old", "x")],
            &["gpuscout.io/old"],
        );
        assert!(needs_apply(&desired, &ours_extra, "gpuscout.io"));
        // The same key set by someone else: no apply (it could not remove it), a cleanup.
        let extra = view(
            &[("gpuscout.io/amd.count", "1"), ("gpuscout.io/old", "x")],
            &[],
        );
        assert!(!needs_apply(&desired, &extra, "gpuscout.io"));
        assert_eq!(
            stale_prefix_keys(&desired, &extra, "gpuscout.io"),
            ["gpuscout.io/old"]
        );
        // A compat key we applied and no longer want is ours; someone else's is not.
        let compat = view(
            &[
                ("gpuscout.io/amd.count", "1"),
                ("nvidia.com/gpu.count", "1"),
            ],
            &["nvidia.com/gpu.count"],
        );
        assert!(needs_apply(&desired, &compat, "gpuscout.io"));
        let foreign = view(
            &[
                ("gpuscout.io/amd.count", "1"),
                ("nvidia.com/gpu.count", "1"),
            ],
            &[],
        );
        assert!(!needs_apply(&desired, &foreign, "gpuscout.io"));
        // A longer domain that merely starts with our prefix is not ours.
        let lookalike = view(
            &[("gpuscout.io/amd.count", "1"), ("gpuscout.iox/a", "1")],
            &[],
        );
        assert!(!needs_apply(&desired, &lookalike, "gpuscout.io"));
    }

    #[test]
    fn talos_extensions_from_labels_and_annotations() {
        let mut v = view(
            &[
                ("extensions.talos.dev/amdgpu", "20251021-v1.11.5"),
                ("extensions.talos.dev/modules.dep", "6.12.57-talos"),
                ("kubernetes.io/os", "linux"),
            ],
            &[],
        );
        v.annotations = map(&[
            ("extensions.talos.dev/schematic", "abc123"),
            (
                "extensions.talos.dev/nvidia-open-gpu-kernel-modules-lts",
                "570.1+v1",
            ),
            ("extensions.talos.dev/amdgpu", "ignored-label-wins"),
        ]);
        let ext = extensions_from_node(&v);
        assert_eq!(
            ext,
            Some(vec![
                Extension {
                    name: "amdgpu".into(),
                    version: "20251021-v1.11.5".into()
                },
                Extension {
                    name: "nvidia-open-gpu-kernel-modules-lts".into(),
                    version: "570.1+v1".into()
                },
            ])
        );
        // A Node without any such key (not Talos, or Talos before v1.8) says nothing.
        let plain = view(&[("kubernetes.io/os", "linux")], &[]);
        assert_eq!(extensions_from_node(&plain), None);
    }
}
