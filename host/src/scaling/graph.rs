//! The scaler's dependency graph from the manifest: one node per function with its worker bounds,
//! one edge per `emits_to` entry with a prior fan-out of 1.0 (the policy prefers a measured one),
//! and, when `platform.kv_capacity_ops` is set, the kv store with that capacity, read by each
//! function `kv_ops_per_message` times per message.

use levee_scaler::{FunctionSpec as Node, Graph, StoreSpec};

use crate::manifest::Manifest;
use crate::{Error, Result};

/// Messages a function is assumed to emit to each downstream per message it handles, until measured.
pub const PRIOR_FAN_OUT: f64 = 1.0;

/// The kv store's name in the graph.
pub const KV_STORE: &str = "kv";

/// Builds the graph of `manifest`'s functions.
pub fn graph_from_manifest(manifest: &Manifest) -> Result<Graph> {
    let capacity = manifest.platform.kv_capacity_ops;
    let nodes = manifest
        .functions
        .iter()
        .map(|(name, f)| {
            let node = f.emits_to.iter().fold(
                Node::new(name.clone(), f.min_workers(), f.max_workers()),
                |n, target| n.emits(target.clone(), PRIOR_FAN_OUT),
            );
            match capacity {
                Some(_) if f.kv_ops_per_message > 0.0 => node.reads(KV_STORE, f.kv_ops_per_message),
                _ => node,
            }
        })
        .collect();
    let stores = capacity
        .map(|c| vec![StoreSpec::new(KV_STORE, c)])
        .unwrap_or_default();
    Graph::new(nodes, stores).map_err(|e| Error::Manifest(format!("functions: {e}")))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn functions_bounds_and_edges_come_from_the_manifest() {
        let m = Manifest::parse(
            r#"
[functions.inbound]
module = "i.wasm"
emits_to = ["routing", "search-index"]
concurrency = 4
max_workers = 16
[functions.routing]
module = "r.wasm"
emits_to = ["notify"]
[functions.search-index]
module = "s.wasm"
concurrency = 1
min_workers = 0
max_workers = 8
[functions.notify]
module = "n.wasm"
"#,
            Path::new("."),
        )
        .unwrap();
        let g = graph_from_manifest(&m).unwrap();
        let inbound = g.function("inbound").unwrap();
        assert_eq!((inbound.min_workers, inbound.max_workers), (4, 16));
        let targets: Vec<(&str, f64)> = inbound
            .emits_to
            .iter()
            .map(|e| (e.target.as_str(), e.fan_out))
            .collect();
        assert_eq!(targets, vec![("routing", 1.0), ("search-index", 1.0)]);
        let si = g.function("search-index").unwrap();
        assert_eq!((si.min_workers, si.max_workers), (0, 8));
        let notify = g.function("notify").unwrap();
        assert_eq!((notify.min_workers, notify.max_workers), (2, 2));
        let order = g.topological_names();
        let pos = |n: &str| order.iter().position(|x| *x == n).unwrap();
        assert!(pos("inbound") < pos("routing") && pos("routing") < pos("notify"));
    }

    #[test]
    fn a_cycle_is_a_manifest_error() {
        let m = Manifest::parse(
            "[functions.a]\nmodule = \"a.wasm\"\nemits_to = [\"b\"]\n\
             [functions.b]\nmodule = \"b.wasm\"\nemits_to = [\"a\"]\n",
            Path::new("."),
        )
        .unwrap();
        let e = graph_from_manifest(&m).unwrap_err().to_string();
        assert!(e.contains("cycle") && e.contains("functions"), "{e}");
    }

    #[test]
    fn the_kv_store_and_its_readers_come_from_the_manifest() {
        let m = Manifest::parse(
            r#"
[platform]
kv_capacity_ops = 500
[functions.a]
module = "a.wasm"
emits_to = ["b"]
kv_ops_per_message = 2.5
[functions.b]
module = "b.wasm"
kv_ops_per_message = 0
"#,
            Path::new("."),
        )
        .unwrap();
        let g = graph_from_manifest(&m).unwrap();
        assert_eq!(g.stores().len(), 1);
        assert_eq!(g.stores()[0].capacity, 500.0);
        let a = g.function("a").unwrap();
        assert_eq!(a.reads.len(), 1);
        assert_eq!(
            (a.reads[0].store.as_str(), a.reads[0].ops_per_message),
            (KV_STORE, 2.5)
        );
        assert!(g.function("b").unwrap().reads.is_empty());
        let bad = Manifest::parse(
            "[platform]\nkv_capacity_ops = -1\n[functions.a]\nmodule = \"a.wasm\"",
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("platform.kv_capacity_ops"), "{bad}");
    }
}
