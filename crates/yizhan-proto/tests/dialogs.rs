//! Tier T1: every golden dialogue in `tests/dialogs/` (at the repository root) runs against a
//! `ServerSession` in memory, answered by the testkit's `FakePolicy`. The same dialogues run
//! on the real server in `crates/yizhan-server/tests/dialogs.rs` (all but the two whose
//! extensions the server does not offer yet).

use std::path::PathBuf;

fn dialog_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/dialogs")
}

#[test]
fn every_dialog_passes_in_memory() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dialog_dir())
        .expect("tests/dialogs exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "dialog"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "only {} dialogues found", files.len());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| yizhan_testkit::run_dialog_in_memory(path).err())
        .map(|error| error.to_string())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} dialogues failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}
