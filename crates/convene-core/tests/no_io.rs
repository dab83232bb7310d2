//! The core reads nothing from the operating system: no clock (time comes from the `Clock` port)
//! and no randomness (it comes from the `Entropy` port), in any source file.

use std::path::Path;

/// Ways to reach the operating system's clock or randomness.
const OS_READS: &[&str] = &[
    "rand::rng()",
    "thread_rng",
    "OsRng",
    "from_os_rng",
    "from_entropy",
    "getrandom",
    "SystemTime::now",
    "Instant::now",
];

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.display().to_string(), text));
        }
    }
}

#[test]
fn the_core_reads_no_clock_and_no_randomness_from_the_operating_system() {
    let mut files = Vec::new();
    sources(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut files,
    );
    assert!(files.iter().any(|(path, _)| path.ends_with("random.rs")));
    let found: Vec<String> = files
        .iter()
        .flat_map(|(path, text)| {
            OS_READS
                .iter()
                .filter(|needle| text.contains(*needle))
                .map(move |needle| format!("{path}: {needle}"))
        })
        .collect();
    assert!(
        found.is_empty(),
        "use the Clock and Entropy ports: {found:#?}"
    );
}
