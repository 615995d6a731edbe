//! Tier T4 regressions: every input in `tests/fuzz_regressions/` (crashers found by
//! `scripts/fuzz.sh`, plus hand-written seeds) replayed through all three fuzz harnesses.

use std::path::PathBuf;

#[test]
fn fuzz_regressions_replay() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/fuzz_regressions exists") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|ext| ext == "md") {
            continue;
        }
        eprintln!("replaying {}", path.display());
        let data = std::fs::read(&path).expect("readable regression input");
        yizhan_testkit::harness::command(&data);
        yizhan_testkit::harness::readers(&data);
        yizhan_testkit::harness::session(&data);
        yizhan_testkit::harness::header(&data);
        yizhan_testkit::harness::explain(&data);
        count += 1;
    }
    assert!(count > 0, "no regression inputs in {}", dir.display());
}
