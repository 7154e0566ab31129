//! Kept-open attribute descriptors for the sysfs sources (not a source itself).
//!
//! A source that owns a [`Kept`] reads through [`Kept::reader`]. Where the root
//! [keeps descriptors open](crate::hostroot::HostRoot::keeps_open) (`<root>/sys/devices` is sysfs), the
//! reader remembers, for the current discovery report, every directory it resolved, every
//! directory it listed and an open descriptor ([`AttrFile`]) of every attribute it read: the
//! first scrape after a new report opens them, each later scrape costs one `pread` at offset 0
//! per attribute (sysfs regenerates the value on every read at offset 0). An attribute that
//! does not exist is remembered as absent until the next report.
//!
//! Hot unplug: a read that fails with `ENODEV`, `ENOENT` or `ESTALE` ([`Error::is_gone`]) drops
//! the descriptor and the value is absent (never 0); everything remembered is dropped after
//! that pass, so the next scrape resolves the device again and, if its directory is gone,
//! reports the source failed exactly as a reader without descriptors does. Any other read error
//! drops that one descriptor (opened again next time) and is returned.
//!
//! Elsewhere (fixtures on a normal file system, where a removed file stays readable through an
//! open descriptor) the reader passes every call straight to [`HostRoot`]: resolve, list and
//! open again on every scrape.

use crate::hostroot::{AttrFile, Error, HostRoot, Resolved};
use crate::model::Report;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Most descriptors one source keeps open; past it, further attributes are opened on every
/// read as without kept descriptors. About 25 per AMD GPU: room for 40 GPUs per source, and
/// far below a container's usual open-file limit.
pub const MAX_KEPT: usize = 1024;

/// The descriptors and lookups one source keeps for one report.
#[derive(Debug, Default)]
pub struct Kept {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The report the entries below belong to.
    report: Option<Arc<Report>>,
    dirs: HashMap<PathBuf, Resolved>,
    lists: HashMap<PathBuf, Vec<String>>,
    files: HashMap<PathBuf, Slot>,
    /// Set when a descriptor found its file gone: drop everything after this pass.
    stale: bool,
    /// Descriptors in `files`.
    open: usize,
}

#[derive(Debug)]
enum Slot {
    Open(AttrFile),
    /// Not found when first asked for under this report.
    Missing,
}

impl Kept {
    /// A reader for one pass of the source over `report`. Entries of an older report, or of a
    /// pass that saw a file gone, are dropped first.
    pub fn reader<'a>(&'a self, root: &'a HostRoot, report: &Arc<Report>) -> Reader<'a> {
        if !root.keeps_open() {
            return Reader { root, kept: None };
        }
        // Plain data: a panic in an earlier pass leaves nothing half-done that matters.
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let same = st.report.as_ref().is_some_and(|r| Arc::ptr_eq(r, report));
        if !same || st.stale {
            *st = State {
                report: Some(report.clone()),
                ..State::default()
            };
        }
        Reader {
            root,
            kept: Some(st),
        }
    }

    /// Number of descriptors held open now (tests).
    pub fn open_files(&self) -> usize {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.open
    }
}

/// Reads of one source pass: through the kept descriptors where the root allows it, else
/// straight through [`HostRoot`].
pub struct Reader<'a> {
    root: &'a HostRoot,
    kept: Option<MutexGuard<'a, State>>,
}

impl Reader<'_> {
    /// The root this reader reads.
    pub fn root(&self) -> &HostRoot {
        self.root
    }

    /// [`HostRoot::resolve`], remembered for the report.
    pub fn resolve(&mut self, path: impl AsRef<Path>) -> Result<Resolved, Error> {
        let path = path.as_ref();
        let Some(st) = &mut self.kept else {
            return self.root.resolve(path);
        };
        if let Some(d) = st.dirs.get(path) {
            return Ok(d.clone());
        }
        let d = self.root.resolve(path)?;
        st.dirs.insert(path.to_path_buf(), d.clone());
        Ok(d)
    }

    /// [`HostRoot::resolve_in`], remembered for the report.
    pub fn resolve_in(&mut self, dir: &Resolved, rel: impl AsRef<Path>) -> Result<Resolved, Error> {
        if self.kept.is_none() {
            return self.root.resolve_in(dir, rel);
        }
        self.resolve(dir.host.join(rel))
    }

    /// [`HostRoot::list_dir`] (sorted names), remembered for the report.
    pub fn list(&mut self, path: impl AsRef<Path>) -> Result<Vec<String>, Error> {
        let path = path.as_ref();
        let Some(st) = &mut self.kept else {
            return self.root.list_dir(path);
        };
        if let Some(l) = st.lists.get(path) {
            return Ok(l.clone());
        }
        let l = self.root.list_dir(path)?;
        st.lists.insert(path.to_path_buf(), l.clone());
        Ok(l)
    }

    /// [`HostRoot::read_attr`] through a kept descriptor: opened on first use under this report,
    /// then one `pread` per call.
    pub fn read(&mut self, dir: &Resolved, name: &str) -> Result<String, Error> {
        let Some(st) = &mut self.kept else {
            return self.root.read_attr(dir, name);
        };
        let key = dir.host.join(name);
        let result = match st.files.get(&key) {
            Some(Slot::Missing) => {
                return Err(Error::NotFound {
                    path: host_str(&key),
                });
            }
            Some(Slot::Open(f)) => f.read(),
            None if st.open >= MAX_KEPT => return self.root.read_attr(dir, name),
            None => match self.root.open_attr(dir, name) {
                Ok(f) => {
                    let r = f.read();
                    st.files.insert(key.clone(), Slot::Open(f));
                    st.open += 1;
                    r
                }
                Err(e) if e.is_not_found() => {
                    st.files.insert(key, Slot::Missing);
                    return Err(e);
                }
                Err(e) => return Err(e),
            },
        };
        settle(st, &key, result)
    }

    /// [`read`](Self::read), trimmed.
    pub fn read_trimmed(&mut self, dir: &Resolved, name: &str) -> Result<String, Error> {
        Ok(self.read(dir, name)?.trim().to_owned())
    }
}

/// What a read through a kept descriptor leaves behind: on success, nothing changes; a gone
/// file drops the descriptor, marks the pass stale and is absent (`NotFound`); another error
/// drops the descriptor and is returned.
fn settle(st: &mut State, key: &Path, r: Result<String, Error>) -> Result<String, Error> {
    match r {
        Ok(v) => Ok(v),
        Err(e) if e.is_gone() => {
            drop_file(st, key);
            st.stale = true;
            tracing::debug!(path = %host_str(key), error = %e, "kept attribute gone; dropped");
            Err(Error::NotFound {
                path: host_str(key),
            })
        }
        Err(e) => {
            drop_file(st, key);
            Err(e)
        }
    }
}

fn drop_file(st: &mut State, key: &Path) {
    if let Some(Slot::Open(_)) = st.files.remove(key) {
        st.open -= 1;
    }
}

fn host_str(p: &Path) -> String {
    format!("/{}", p.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(root: &HostRoot) -> Arc<Report> {
        Arc::new(crate::discover::discover(
            root,
            &crate::discover::Options::default(),
            &Default::default(),
        ))
    }

    #[test]
    fn a_gone_file_is_absent_dropped_and_the_pass_marked_stale() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("sys/d")).unwrap();
        std::fs::write(t.path().join("sys/d/busy"), "37\n").unwrap();
        let root = HostRoot::new(t.path()).unwrap().with_keep_open(true);
        let kept = Kept::default();
        let rep = report(&root);
        {
            let mut r = kept.reader(&root, &rep);
            let d = r.resolve("sys/d").unwrap();
            assert_eq!(r.read(&d, "busy").unwrap(), "37\n");
            // What sysfs answers after a hot unplug.
            let st = r.kept.as_mut().unwrap();
            let gone = Err(Error::Io {
                path: "/sys/d/busy".into(),
                source: std::io::Error::from_raw_os_error(libc::ENODEV),
            });
            let e = settle(st, Path::new("sys/d/busy"), gone).unwrap_err();
            assert!(e.is_not_found(), "absent, not an error: {e:?}");
            assert!(st.stale && st.files.is_empty());
        }
        // The next pass starts over: the directory is resolved and the file opened again.
        let mut r = kept.reader(&root, &rep);
        assert!(r.kept.as_ref().unwrap().dirs.is_empty());
        let d = r.resolve("sys/d").unwrap();
        assert_eq!(r.read(&d, "busy").unwrap(), "37\n");
        drop(r);
        assert_eq!(kept.open_files(), 1);
    }

    #[test]
    fn past_the_cap_attributes_are_read_without_keeping_them() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("sys/d");
        std::fs::create_dir_all(&dir).unwrap();
        let n = MAX_KEPT + 5;
        for i in 0..n {
            std::fs::write(dir.join(format!("a{i}")), format!("{i}\n")).unwrap();
        }
        let root = HostRoot::new(t.path()).unwrap().with_keep_open(true);
        let kept = Kept::default();
        let rep = report(&root);
        let mut r = kept.reader(&root, &rep);
        let d = r.resolve("sys/d").unwrap();
        for i in 0..n {
            assert_eq!(r.read(&d, &format!("a{i}")).unwrap(), format!("{i}\n"));
        }
        drop(r);
        assert_eq!(kept.open_files(), MAX_KEPT);
    }
}
