//! The Python scaffold: componentize-py builds `app.py` (world `capability`) into a component;
//! the logic lives in `handler.py`, which imports no bindings, so `python3 -m unittest` tests
//! it natively.

use super::{File, Plan, Vars};

/// The componentize-py pin, the same as Levee's own (functions/python/requirements.txt).
pub const REQUIREMENTS: &str = include_str!("../../../functions/python/requirements.txt");

pub(super) fn plan(vars: &Vars) -> Plan {
    Plan {
        files: vec![
            File::new(
                "handler.py",
                vars.fill(include_str!("templates/python/handler.py")),
            ),
            File::new("app.py", vars.fill(include_str!("templates/python/app.py"))),
            File::new(
                "test_handler.py",
                vars.fill(include_str!("templates/python/test_handler.py")),
            ),
            File::new("requirements.txt", REQUIREMENTS),
            File::script(
                "build.sh",
                vars.fill(include_str!("templates/python/build.sh")),
            ),
        ],
        module: format!("{}.wasm", vars.name),
        build: format!(
            "componentize-py -d wit -w capability componentize app -o {}.wasm",
            vars.name
        ),
        test: "python3 -m unittest".to_string(),
        // CPython needs 16 MiB and more; 64 leaves room for the handler's data.
        memory_mb: 64,
    }
}
