//! Python virtualenvs for tests that run official Python clients or libraries' own
//! servers: made once per name under the target folder, with pinned packages, by one
//! test process at a time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The virtualenv `name` with `packages` (`pkg==version`) installed: its folder. A
/// virtualenv whose marker file lists the same packages is reused.
pub fn venv(name: &str, packages: &[&str]) -> PathBuf {
    static MADE: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    let made = made.get_or_insert_with(HashMap::new);
    if let Some(dir) = made.get(name) {
        return dir.clone();
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    // Test processes (nextest runs one per test) make it one at a time; the lock goes
    // with the file when this returns.
    let lock = std::fs::File::create(dir.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    let marker = dir.join("hostplane-packages.txt");
    let wanted = packages.join("\n");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        let _ = std::fs::remove_dir_all(&dir);
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "python3 -m venv failed: Python 3 with venv is needed");
        let out = Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "installing {packages:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&marker, &wanted).unwrap();
    }
    made.insert(name.to_owned(), dir.clone());
    dir
}
