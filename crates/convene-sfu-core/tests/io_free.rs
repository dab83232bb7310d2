//! The engine crate does no IO, by Cargo: nothing it depends on (transitively, as built for use,
//! not for its own tests) is an async runtime, a web framework or a socket crate, and its
//! randomness comes from the seed in its config, never from the operating system.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Crates that do IO or exist to serve it; none may be in the engine's dependency tree.
const IO_CRATES: &[&str] = &[
    "async-io",
    "async-std",
    "axum",
    "axum-core",
    "futures",
    "futures-executor",
    "futures-io",
    "futures-util",
    "hyper",
    "hyper-util",
    "mio",
    "polling",
    "quinn-udp",
    "reqwest",
    "smol",
    "socket2",
    "tokio",
    "tower",
    "tungstenite",
];

fn is_io_crate(name: &str) -> bool {
    IO_CRATES.contains(&name) || name.starts_with("tokio-") || name.starts_with("tower-")
}

/// The platform this test runs on, as rustc names it.
fn host() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = Command::new(rustc).arg("-vV").output().expect("rustc runs");
    let version = String::from_utf8(output.stdout).expect("UTF-8");
    version
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

/// Every package the engine crate reaches on this platform through normal dependencies (not its
/// dev-dependencies nor anyone's build scripts), by name, with the path that reaches it.
fn normal_dependency_tree() -> HashMap<String, String> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .args(["--manifest-path", manifest, "--filter-platform", &host()])
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let names: HashMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("a resolved graph")
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = names
        .iter()
        .find(|(_, name)| **name == env!("CARGO_PKG_NAME"))
        .map(|(id, _)| *id)
        .expect("this crate is in the metadata");

    let mut reached = HashMap::from([(names[root].to_owned(), names[root].to_owned())]);
    let mut queue = vec![root];
    while let Some(id) = queue.pop() {
        let path = reached[names[id]].clone();
        for dep in nodes[id]["deps"].as_array().expect("deps") {
            let normal = dep["dep_kinds"]
                .as_array()
                .expect("dep_kinds")
                .iter()
                .any(|kind| kind["kind"].is_null());
            let dep_id = dep["pkg"].as_str().unwrap();
            let name = names[dep_id];
            if normal && !reached.contains_key(name) {
                reached.insert(name.to_owned(), format!("{path} -> {name}"));
                queue.push(dep_id);
            }
        }
    }
    reached
}

#[test]
fn depends_on_no_io_crate() {
    let tree = normal_dependency_tree();
    assert!(
        tree.contains_key("str0m"),
        "the walk sees the engine's dependencies"
    );
    let io: BTreeSet<&String> = tree
        .iter()
        .filter(|(name, _)| is_io_crate(name))
        .map(|(_, path)| path)
        .collect();
    assert!(io.is_empty(), "the engine crate must do no IO: {io:#?}");
}

/// What would draw randomness from the operating system instead of the config's seed.
const OS_RANDOMNESS: &[&str] = &[
    "rand::rng(",
    "thread_rng",
    "from_os_rng",
    "OsRng",
    "rand::random",
    "getrandom",
];

fn sources(dir: &Path, files: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("readable source folder") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("readable source");
            files.push((path.display().to_string(), text));
        }
    }
}

#[test]
fn draws_no_randomness_from_the_operating_system() {
    let mut files = Vec::new();
    sources(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut files,
    );
    assert!(files.iter().any(|(path, _)| path.ends_with("ids.rs")));
    let found: Vec<String> = files
        .iter()
        .flat_map(|(path, text)| {
            OS_RANDOMNESS
                .iter()
                .filter(|needle| text.contains(*needle))
                .map(move |needle| format!("{path}: {needle}"))
        })
        .collect();
    assert!(
        found.is_empty(),
        "ids come from EngineConfig::seed: {found:#?}"
    );
}
