//! The project as the generator sees it: absolute POSIX paths, and three questions it may
//! ask about them ([`Files`]). The generator itself does no I/O; [`Disk`] answers from a
//! folder on this machine, [`Memory`] from a listing held in memory.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// What the generator may ask about the project's files.
pub trait Files {
    /// Whether `path` is a file, a folder, or nothing.
    fn kind(&self, path: &str) -> Option<Kind>;
    /// The names in folder `path`, `None` when it cannot be listed.
    fn list(&self, path: &str) -> Option<Vec<String>>;
    /// A text file's contents (invalid UTF-8 replaced), `None` when it cannot be read.
    fn read(&self, path: &str) -> Option<String>;
}

/// The real file system.
pub struct Disk;

impl Files for Disk {
    fn kind(&self, path: &str) -> Option<Kind> {
        let meta = std::fs::metadata(path).ok()?;
        Some(if meta.is_dir() { Kind::Dir } else { Kind::File })
    }

    fn list(&self, path: &str) -> Option<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Some(names)
    }

    fn read(&self, path: &str) -> Option<String> {
        let bytes = std::fs::read(path).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// The real file system under one folder only: paths outside it (after `..` is applied)
/// are answered as missing. For an uploaded project, which holds no links (the unpacker
/// refuses them), so the lexical check is the real one.
pub struct Confined {
    root: String,
}

impl Confined {
    pub fn new(root: &str) -> Self {
        Confined {
            root: resolve(root),
        }
    }

    fn inside(&self, path: &str) -> Option<String> {
        let path = resolve(path);
        relative_to(&path, &self.root).is_some().then_some(path)
    }
}

impl Files for Confined {
    fn kind(&self, path: &str) -> Option<Kind> {
        Disk.kind(&self.inside(path)?)
    }

    fn list(&self, path: &str) -> Option<Vec<String>> {
        Disk.list(&self.inside(path)?)
    }

    fn read(&self, path: &str) -> Option<String> {
        Disk.read(&self.inside(path)?)
    }
}

/// Files held in memory, by absolute path; folders are those that hold a file.
#[derive(Debug, Default, Clone)]
pub struct Memory {
    files: BTreeMap<String, String>,
}

impl Memory {
    pub fn new<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Memory {
            files: files
                .into_iter()
                .map(|(p, c)| (resolve(p), c.to_owned()))
                .collect(),
        }
    }
}

impl Files for Memory {
    fn kind(&self, path: &str) -> Option<Kind> {
        let path = resolve(path);
        if self.files.contains_key(&path) {
            return Some(Kind::File);
        }
        let prefix = if path == "/" {
            path
        } else {
            format!("{path}/")
        };
        self.files
            .keys()
            .any(|k| k.starts_with(&prefix))
            .then_some(Kind::Dir)
    }

    fn list(&self, path: &str) -> Option<Vec<String>> {
        let path = resolve(path);
        let prefix = if path == "/" {
            path
        } else {
            format!("{path}/")
        };
        let mut names: Vec<String> = self
            .files
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
            .collect();
        names.dedup();
        (!names.is_empty()).then_some(names)
    }

    fn read(&self, path: &str) -> Option<String> {
        self.files.get(&resolve(path)).cloned()
    }
}

/// `base / rel` as Python's `pathlib` joins: an absolute `rel` replaces `base`; empty
/// and `.` segments go, `..` stays.
pub fn join(base: &str, rel: &str) -> String {
    let start = if rel.starts_with('/') { "" } else { base };
    let segments: Vec<&str> = start
        .split('/')
        .chain(rel.split('/'))
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    format!("/{}", segments.join("/"))
}

/// `path` with `..` segments applied (as `Path.resolve()` on a tree without symbolic links).
pub fn resolve(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// The last segment (`Path.name`), `""` for `/`.
pub fn name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// The folder holding `path` (`Path.parent`).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// `path.relative_to(base)` for paths already joined (a pure comparison of segments);
/// `None` when `path` is not under `base`. `.` when they are the same.
pub fn relative_to<'a>(path: &'a str, base: &str) -> Option<&'a str> {
    if path == base {
        return Some(".");
    }
    if base == "/" {
        return path.strip_prefix('/');
    }
    path.strip_prefix(base)?.strip_prefix('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_behave_as_pathlib() {
        assert_eq!(join("/a/b", "./c//d/"), "/a/b/c/d");
        assert_eq!(join("/a/b", "../c"), "/a/b/../c");
        assert_eq!(join("/a/b", "/x"), "/x");
        assert_eq!(resolve("/a/b/../c/./d"), "/a/c/d");
        assert_eq!(name("/a/b"), "b");
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(relative_to("/a/b/c", "/a"), Some("b/c"));
        assert_eq!(relative_to("/a/bc", "/a/b"), None);
        assert_eq!(relative_to("/a/b/../x", "/a/b"), Some("../x"));
        assert_eq!(relative_to("/a", "/a"), Some("."));
    }

    #[test]
    fn confined_answers_nothing_outside_its_folder() {
        let dir = std::env::temp_dir().join(format!("hp-confined-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("p/a")).unwrap();
        std::fs::write(dir.join("p/a/x.txt"), "in").unwrap();
        std::fs::write(dir.join("secret.txt"), "out").unwrap();
        let root = dir.join("p").to_string_lossy().into_owned();
        let c = Confined::new(&root);
        assert_eq!(c.read(&format!("{root}/a/x.txt")).as_deref(), Some("in"));
        assert_eq!(c.kind(&format!("{root}/a")), Some(Kind::Dir));
        assert_eq!(
            Disk.read(&format!("{root}/../secret.txt")).as_deref(),
            Some("out")
        );
        assert_eq!(c.read(&format!("{root}/../secret.txt")), None);
        assert_eq!(c.kind(&format!("{root}/..")), None);
        assert_eq!(c.list("/"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn memory_answers_like_a_folder() {
        let m = Memory::new([("/p/a/b.py", "x"), ("/p/c.txt", "y")]);
        assert_eq!(m.kind("/p"), Some(Kind::Dir));
        assert_eq!(m.kind("/p/a/b.py"), Some(Kind::File));
        assert_eq!(m.kind("/p/zz"), None);
        assert_eq!(m.list("/p"), Some(vec!["a".into(), "c.txt".into()]));
        assert_eq!(m.read("/p/a/../c.txt").as_deref(), Some("y"));
    }
}
