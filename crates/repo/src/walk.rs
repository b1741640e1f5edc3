//! The backup walk: depth first, each directory's entries in bytewise name
//! order, as a stream of events. Only the directories on the way down are
//! held (their sorted names), so memory follows the depth and the largest
//! directory, not the file count. The order is the order trees list their
//! nodes and the order of the cache's files section.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use globset::GlobSet;

use crate::cache::FileStat;

/// A node's metadata as trees store it.
#[derive(Clone, Debug)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, u32),
}

impl Meta {
    fn of(md: &std::fs::Metadata) -> Meta {
        Meta {
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: (md.mtime(), md.mtime_nsec() as u32),
        }
    }
}

pub fn stat_of(md: &std::fs::Metadata) -> FileStat {
    FileStat {
        size: md.len(),
        mtime: (md.mtime(), md.mtime_nsec() as u32),
        ctime: (md.ctime(), md.ctime_nsec() as u32),
        ino: md.ino(),
        dev: md.dev(),
    }
}

pub enum Event {
    /// A directory begins; its entries follow, then [`Event::Leave`].
    Enter {
        name: Vec<u8>,
        meta: Meta,
    },
    Leave,
    File {
        name: Vec<u8>,
        meta: Meta,
        path: PathBuf,
        stat: FileStat,
    },
    Symlink {
        name: Vec<u8>,
        meta: Meta,
        target: Vec<u8>,
    },
    /// Could not be listed or stat-ed (not stored).
    Unreadable {
        path: PathBuf,
        why: String,
    },
}

struct Frame {
    path: PathBuf,
    names: std::vec::IntoIter<OsString>,
}

pub struct Walk<'a> {
    stack: Vec<Frame>,
    start: Option<(PathBuf, Vec<u8>, std::fs::Metadata)>,
    excludes: &'a GlobSet,
    one_fs: Option<u64>,
    queued: std::collections::VecDeque<Event>,
}

impl<'a> Walk<'a> {
    /// Walks `path` (already lstat-ed as `md`), stored under `name`.
    pub fn new(
        path: &Path,
        name: &[u8],
        md: std::fs::Metadata,
        excludes: &'a GlobSet,
        one_fs: bool,
    ) -> Walk<'a> {
        Walk {
            stack: Vec::new(),
            one_fs: one_fs.then_some(md.dev()),
            start: Some((path.to_path_buf(), name.to_vec(), md)),
            excludes,
            queued: Default::default(),
        }
    }

    fn excluded(&self, path: &Path) -> bool {
        self.excludes.is_match(path) || path.file_name().is_some_and(|n| self.excludes.is_match(n))
    }

    /// The event for one lstat-ed entry (and, for a directory, its frame).
    fn visit(&mut self, path: PathBuf, name: Vec<u8>, md: &std::fs::Metadata) -> Option<Event> {
        let ft = md.file_type();
        if ft.is_dir() {
            let rd = match std::fs::read_dir(&path) {
                Ok(rd) => rd,
                Err(e) => {
                    return Some(Event::Unreadable {
                        why: e.to_string(),
                        path,
                    });
                }
            };
            let mut names = Vec::new();
            for e in rd {
                match e {
                    Ok(e) => names.push(e.file_name()),
                    Err(e) => self.queued.push_back(Event::Unreadable {
                        path: path.clone(),
                        why: e.to_string(),
                    }),
                }
            }
            names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            self.stack.push(Frame {
                path,
                names: names.into_iter(),
            });
            Some(Event::Enter {
                name,
                meta: Meta::of(md),
            })
        } else if ft.is_file() {
            Some(Event::File {
                name,
                meta: Meta::of(md),
                stat: stat_of(md),
                path,
            })
        } else if ft.is_symlink() {
            match std::fs::read_link(&path) {
                Ok(t) => Some(Event::Symlink {
                    name,
                    meta: Meta::of(md),
                    target: t.as_os_str().as_bytes().to_vec(),
                }),
                Err(e) => Some(Event::Unreadable {
                    path,
                    why: e.to_string(),
                }),
            }
        } else {
            // Sockets, fifos and devices are not backed up.
            None
        }
    }
}

impl Iterator for Walk<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queued.pop_front() {
                return Some(e);
            }
            if let Some((path, name, md)) = self.start.take() {
                if let Some(e) = self.visit(path, name, &md) {
                    return Some(e);
                }
                continue;
            }
            let frame = self.stack.last_mut()?;
            let Some(n) = frame.names.next() else {
                self.stack.pop();
                return Some(Event::Leave);
            };
            let child = frame.path.join(&n);
            if self.excluded(&child) {
                continue;
            }
            let md = match std::fs::symlink_metadata(&child) {
                Ok(m) => m,
                Err(e) => {
                    return Some(Event::Unreadable {
                        path: child,
                        why: e.to_string(),
                    });
                }
            };
            if md.is_dir() && self.one_fs.is_some_and(|d| d != md.dev()) {
                continue;
            }
            if let Some(e) = self.visit(child, n.as_bytes().to_vec(), &md) {
                return Some(e);
            }
        }
    }
}
