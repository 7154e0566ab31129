//! Label ownership, modelled on server-side apply (kubernetes.io "Server-Side Apply"; our notes:
//! docs/research/kubernetes-labels-security.md §1). Only `metadata.labels` is tracked; each key
//! is one managed field. Managers are keyed by (manager, operation), as in `managedFields`.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub keys: BTreeSet<String>,
}

/// Labels plus who owns which key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    pub labels: BTreeMap<String, String>,
    pub managed: Vec<Managed>,
}

/// Keys whose apply would change a value another manager owns, with that manager.
pub type Conflicts = Vec<(String, String)>;

impl Owned {
    fn entry(&mut self, manager: &str, op: &str) -> &mut Managed {
        if let Some(i) = self
            .managed
            .iter()
            .position(|m| m.manager == manager && m.operation == op)
        {
            return &mut self.managed[i];
        }
        self.managed.push(Managed {
            manager: manager.to_owned(),
            operation: op.to_owned(),
            keys: BTreeSet::new(),
        });
        let last = self.managed.len() - 1;
        &mut self.managed[last]
    }

    fn prune(&mut self) {
        self.managed.retain(|m| !m.keys.is_empty());
    }

    /// Server-side apply of `applied` (the complete label set `manager` wants to own).
    /// Returns `Err` with the conflicts when `force` is false and another manager owns a key
    /// whose value would change. Keys `manager` applied before and no longer sends are released,
    /// and deleted when nobody else owns them.
    pub fn apply(
        &mut self,
        manager: &str,
        applied: &BTreeMap<String, String>,
        force: bool,
    ) -> Result<(), Conflicts> {
        let conflicts: Conflicts = applied
            .iter()
            .filter(|(k, v)| self.labels.get(*k) != Some(*v))
            .flat_map(|(k, _)| {
                self.managed
                    .iter()
                    .filter(|m| !(m.manager == manager && m.operation == "Apply"))
                    .filter(|m| m.keys.contains(k))
                    .map(|m| (k.clone(), m.manager.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        if !force && !conflicts.is_empty() {
            return Err(conflicts);
        }
        for (k, v) in applied {
            if self.labels.get(k) != Some(v) {
                // A changed value: every other owner loses the field (force); an equal value
                // is shared.
                for m in self
                    .managed
                    .iter_mut()
                    .filter(|m| !(m.manager == manager && m.operation == "Apply"))
                {
                    m.keys.remove(k);
                }
                self.labels.insert(k.clone(), v.clone());
            }
        }
        let before: BTreeSet<String> = self.entry(manager, "Apply").keys.clone();
        for k in before.difference(&applied.keys().cloned().collect()) {
            let owned_elsewhere = self
                .managed
                .iter()
                .any(|m| !(m.manager == manager && m.operation == "Apply") && m.keys.contains(k));
            if !owned_elsewhere {
                self.labels.remove(k);
            }
        }
        self.entry(manager, "Apply").keys = applied.keys().cloned().collect();
        self.prune();
        Ok(())
    }

    /// A non-apply write (merge, strategic-merge or JSON patch, PUT) by `manager`: `Some(v)`
    /// sets, `None` removes. A changed key moves to `manager` and leaves every other owner.
    pub fn update(&mut self, manager: &str, changes: &BTreeMap<String, Option<String>>) {
        for (k, v) in changes {
            match v {
                None => {
                    if self.labels.remove(k).is_some() {
                        for m in &mut self.managed {
                            m.keys.remove(k);
                        }
                    }
                }
                Some(v) => {
                    if self.labels.get(k) != Some(v) {
                        for m in &mut self.managed {
                            m.keys.remove(k);
                        }
                        self.labels.insert(k.clone(), v.clone());
                        self.entry(manager, "Update").keys.insert(k.clone());
                    }
                }
            }
        }
        self.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &[(&str, &str)]) -> BTreeMap<String, String> {
        p.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn apply_release_and_force() {
        let mut o = Owned::default();
        o.update(
            "kubelet",
            &[("kubernetes.io/os".to_owned(), Some("linux".to_owned()))].into(),
        );
        o.apply("gpuscout", &m(&[("g/a", "1"), ("g/b", "2")]), true)
            .unwrap();
        assert_eq!(o.labels.len(), 3);
        // Dropping g/b from the apply deletes it (only we owned it).
        o.apply("gpuscout", &m(&[("g/a", "1")]), true).unwrap();
        assert!(!o.labels.contains_key("g/b"));
        // kubectl overrides g/a: ownership moves; an unforced apply conflicts; force wins.
        o.update(
            "kubectl-label",
            &[("g/a".to_owned(), Some("9".to_owned()))].into(),
        );
        assert!(o.apply("gpuscout", &m(&[("g/a", "1")]), false).is_err());
        o.apply("gpuscout", &m(&[("g/a", "1")]), true).unwrap();
        assert_eq!(o.labels["g/a"], "1");
        // A key another manager set is not removed by our omitting it.
        o.update("other", &[("g/c".to_owned(), Some("x".to_owned()))].into());
        o.apply("gpuscout", &m(&[("g/a", "1")]), true).unwrap();
        assert_eq!(o.labels["g/c"], "x");
        assert_eq!(o.labels["kubernetes.io/os"], "linux");
    }
}
