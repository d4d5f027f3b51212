//! The JavaScript scaffold: componentize-js builds `NAME.js` (world `capability`) into a
//! component, pinned to the versions Levee is tested with (functions/js); the logic lives in
//! `handler.js`, which imports no bindings, so `node --test` tests it natively.

use super::{File, Plan, Vars};

const PACKAGE_JSON: &str = include_str!("../../../functions/js/package.json");
const PACKAGE_LOCK: &str = include_str!("../../../functions/js/package-lock.json");
/// The name functions/js's package.json and lock carry, replaced by the function's.
const LEVEE_PACKAGE_NAME: &str = "\"name\": \"levee-js-functions\"";

pub(super) fn plan(vars: &Vars) -> Plan {
    let name = format!("\"name\": \"{}\"", vars.name);
    let package = PACKAGE_JSON
        .replacen(LEVEE_PACKAGE_NAME, &name, 1)
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("\"description\"") {
                format!(
                    "  \"description\": \"The Levee function {}, built with componentize-js (npm ci, then ./build.sh)\",",
                    vars.name
                )
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    // The lock names the package twice: at the top and as the root of `packages`.
    let lock = PACKAGE_LOCK.replacen(LEVEE_PACKAGE_NAME, &name, 2);
    Plan {
        files: vec![
            File::new(
                "handler.js",
                vars.fill(include_str!("templates/js/handler.js")),
            ),
            File::new(
                format!("{}.js", vars.name),
                vars.fill(include_str!("templates/js/main.js")),
            ),
            File::new(
                "handler.test.js",
                vars.fill(include_str!("templates/js/handler.test.js")),
            ),
            File::new("package.json", package),
            File::new("package-lock.json", lock),
            File::script("build.sh", vars.fill(include_str!("templates/js/build.sh"))),
        ],
        module: format!("{}.wasm", vars.name),
        build: format!(
            "npm ci && npx componentize-js {0}.js --wit wit -n capability -o {0}.wasm",
            vars.name
        ),
        test: "node --test".to_string(),
        memory_mb: 32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_takes_the_function_name_and_keeps_the_pins() {
        let plan = plan(&Vars::new("my-fn"));
        let text = |p: &str| &plan.files.iter().find(|f| f.path == p).unwrap().text;
        let package = text("package.json");
        assert!(package.contains("\"name\": \"my-fn\""), "{package}");
        assert!(package.contains("\"@bytecodealliance/componentize-js\": \"0.23.0\""));
        assert!(!package.contains("levee-js-functions"));
        let lock = text("package-lock.json");
        assert_eq!(lock.matches("\"name\": \"my-fn\"").count(), 2);
        assert!(!lock.contains("levee-js-functions"));
    }
}
