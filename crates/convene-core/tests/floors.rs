//! The core's modules stand on floors: each uses only modules on floors below its own, so there
//! is no import circle among them. Read from the source: every `crate::<module>` a module's code
//! names (comments and `#[cfg(test)]` code aside) is an edge; the test fails on a circle and
//! names it, and shows the floors against the ones ARCHITECTURE.md describes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use expect_test::expect;

/// The top-level module a source file belongs to (`service/entry.rs` -> `service`), or `None` for
/// the crate root and test-only files.
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    if name == "lib" || name.ends_with("_tests") || name == "tests" {
        return None;
    }
    Some(name.to_owned())
}

fn source_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            source_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The modules named as `crate::<module>` in a file's code before its first `#[cfg(test)]`.
fn uses(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                used.insert(name);
            }
        }
    }
    used
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(file.strip_prefix(&src).expect("under src")) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        let mut used = uses(&text);
        used.remove(&module);
        graph.entry(module).or_default().extend(used);
    }
    graph
}

/// Each module's floor: 0 when it uses no other module, else one above the highest it uses.
/// `Err` names a circle.
fn floors(graph: &BTreeMap<String, BTreeSet<String>>) -> Result<BTreeMap<String, usize>, String> {
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        floors: &mut BTreeMap<String, usize>,
    ) -> Result<usize, String> {
        if let Some(&floor) = floors.get(module) {
            return Ok(floor);
        }
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut circle = path[at..].to_vec();
            circle.push(module.to_owned());
            return Err(circle.join(" -> "));
        }
        path.push(module.to_owned());
        let mut floor = 0;
        for used in graph.get(module).into_iter().flatten() {
            floor = floor.max(visit(used, graph, path, floors)? + 1);
        }
        path.pop();
        floors.insert(module.to_owned(), floor);
        Ok(floor)
    }
    let mut found = BTreeMap::new();
    for module in graph.keys() {
        visit(module, graph, &mut Vec::new(), &mut found)?;
    }
    Ok(found)
}

#[test]
fn the_core_has_no_import_circle_and_stands_on_floors() {
    let graph = graph();
    assert!(graph.contains_key("ops") && graph.contains_key("service"));
    let floors = floors(&graph).unwrap_or_else(|circle| panic!("import circle: {circle}"));
    let mut by_floor: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (module, floor) in &floors {
        by_floor.entry(*floor).or_default().push(module);
    }
    let shown: String = by_floor
        .iter()
        .map(|(floor, modules)| format!("{floor}: {}\n", modules.join(" ")))
        .collect();
    expect![[r#"
        0: error random time
        1: apikey ids lockout
        2: login participant
        3: meeting
        4: access event
        5: change recording standing webhook
        6: ops ports
        7: service
    "#]]
    .assert_eq(&shown);
}

#[test]
fn a_circle_is_found_and_named() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    graph.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    graph.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(floors(&graph), Err("a -> b -> c -> a".to_owned()));
    graph.insert("c".to_owned(), BTreeSet::new());
    let floors = floors(&graph).expect("no circle");
    assert_eq!((floors["a"], floors["b"], floors["c"]), (2, 1, 0));
}

#[test]
fn comments_and_test_code_are_not_uses() {
    let text = "use crate::ids::X; // see crate::service\n/// [`crate::ops::Tx`]\n\
                fn f() { crate::time::now() }\n#[cfg(test)]\nmod tests { use crate::meeting; }\n";
    let used: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(used, ["ids", "time"]);
}
