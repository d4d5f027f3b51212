//! The Rust scaffold: a crate on the guest SDK, which is not published, so its sources are
//! vendored into `levee-sdk/`. The project is its own workspace, with Levee's own
//! `[workspace.*]` settings and `Cargo.lock` (functions/), so it builds with the versions
//! Levee is tested with.

use super::{File, Plan, Vars};

/// Levee's guest workspace manifest, whose dependency versions and release profile the
/// project reuses.
const FUNCTIONS_CARGO_TOML: &str = include_str!("../../../functions/Cargo.toml");
const FUNCTIONS_CARGO_LOCK: &str = include_str!("../../../functions/Cargo.lock");
const RUST_TOOLCHAIN: &str = include_str!("../../../rust-toolchain.toml");

/// The SDK, as `(path under levee-sdk/, text)`. Its wit-bindgen reads `../wit`, which is the
/// project's `wit/` once vendored.
const SDK: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../functions/sdk/Cargo.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../functions/sdk/src/lib.rs"),
    ),
    (
        "src/context.rs",
        include_str!("../../../functions/sdk/src/context.rs"),
    ),
    (
        "src/error.rs",
        include_str!("../../../functions/sdk/src/error.rs"),
    ),
    (
        "src/fields.rs",
        include_str!("../../../functions/sdk/src/fields.rs"),
    ),
    (
        "src/http.rs",
        include_str!("../../../functions/sdk/src/http.rs"),
    ),
    (
        "src/memory.rs",
        include_str!("../../../functions/sdk/src/memory.rs"),
    ),
    (
        "src/message.rs",
        include_str!("../../../functions/sdk/src/message.rs"),
    ),
    (
        "src/wasi_http.rs",
        include_str!("../../../functions/sdk/src/wasi_http.rs"),
    ),
    (
        "src/wasm.rs",
        include_str!("../../../functions/sdk/src/wasm.rs"),
    ),
];

pub(super) fn plan(vars: &Vars) -> Plan {
    let mut files = vec![
        File::new("Cargo.toml", cargo_toml(vars)),
        File::new("Cargo.lock", FUNCTIONS_CARGO_LOCK),
        File::new("rust-toolchain.toml", RUST_TOOLCHAIN),
        File::new(
            "src/lib.rs",
            vars.fill(include_str!("templates/rust/lib.rs")),
        ),
        File::script(
            "build.sh",
            vars.fill(include_str!("templates/rust/build.sh")),
        ),
    ];
    for (path, text) in SDK {
        files.push(File::new(format!("levee-sdk/{path}"), *text));
    }
    Plan {
        files,
        module: format!("target/wasm32-wasip2/release/{}.wasm", vars.crate_name),
        build: "cargo build --release --target wasm32-wasip2".to_string(),
        test: "cargo test".to_string(),
        memory_mb: 16,
    }
}

/// The project's Cargo.toml: its `[package]`, then Levee's guest workspace settings with the
/// vendored SDK as the only other member.
fn cargo_toml(vars: &Vars) -> String {
    let mut out = vars.fill(include_str!("templates/rust/Cargo.toml.head.txt"));
    for line in FUNCTIONS_CARGO_TOML.lines() {
        let line = if line.trim_start().starts_with("members") {
            "members = [\"levee-sdk\"]".to_string()
        } else if line.trim_start().starts_with("levee-sdk") {
            "levee-sdk = { path = \"levee-sdk\" }".to_string()
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_has_the_sdk_as_member_and_levee_versions() {
        let toml = cargo_toml(&Vars::new("my-fn"));
        assert!(toml.contains("name = \"my-fn\""), "{toml}");
        assert!(toml.contains("members = [\"levee-sdk\"]"), "{toml}");
        assert!(
            toml.contains("levee-sdk = { path = \"levee-sdk\" }"),
            "{toml}"
        );
        assert!(toml.contains("wit-bindgen = "), "{toml}");
        assert!(!toml.contains("\"inbound\""), "{toml}");
    }

    #[test]
    fn every_sdk_module_is_vendored() {
        let lib = SDK.iter().find(|(p, _)| *p == "src/lib.rs").unwrap().1;
        for line in lib.lines() {
            let Some(m) = line
                .trim_start_matches("pub ")
                .strip_prefix("mod ")
                .and_then(|m| m.strip_suffix(';'))
            else {
                continue;
            };
            let path = format!("src/{m}.rs");
            assert!(SDK.iter().any(|(p, _)| *p == path), "{path} not vendored");
        }
        let wasm = SDK.iter().find(|(p, _)| *p == "src/wasm.rs").unwrap().1;
        assert!(wasm.contains("path: \"../wit\""), "the vendored wit path");
    }
}
