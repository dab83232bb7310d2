//! Embeds the web app (`assets/app/`, built from `web/` and committed, so no Node is needed here):
//! writes `$OUT_DIR/web_assets.rs`, a table of every file with its content type, a strong ETag,
//! and its precompressed `.gz` twin when there is one. `web.rs` serves from that table.

use std::fmt::Write as _;
use std::path::Path;
use std::{env, fs};

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// 64-bit FNV-1a: a content fingerprint for ETags, not a security boundary.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn main() {
    let dir = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("assets/app");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.ends_with(".gz"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut table = String::from("&[\n");
    for name in &names {
        let path = dir.join(name);
        let body = fs::read(&path).expect("asset readable");
        let gz = dir.join(format!("{name}.gz"));
        let gzip = if gz.exists() {
            format!("Some(include_bytes!({:?}))", gz.display().to_string())
        } else {
            "None".to_owned()
        };
        writeln!(
            table,
            "    Asset {{ name: {name:?}, content_type: {:?}, etag: \"\\\"{:016x}\\\"\", body: include_bytes!({:?}), gzip: {gzip} }},",
            content_type(name),
            fingerprint(&body),
            path.display().to_string(),
        )
        .expect("writing to a String");
    }
    table.push(']');
    let out = Path::new(&env::var("OUT_DIR").expect("cargo sets it")).join("web_assets.rs");
    fs::write(out, table).expect("OUT_DIR writable");
}
