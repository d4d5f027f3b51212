//! The dependency graph the scaler reasons about: functions (with worker bounds, the functions they emit
//! to with a prior fan-out, and the stores they read) and stores (with a capacity in ops/s).
//!
//! The host builds it from its manifest. [`Graph::new`] validates it and computes a topological order.
//! Cycles are rejected: feed-forward sizing computes each function's expected inflow from its upstreams'
//! expected outflow in one pass, and with a cycle (and a fan-out of 1 or more) that inflow has no finite
//! fixed point. A pipeline that really loops back must break the loop in the manifest (for example by
//! sending the feedback through ingress, where it is measured as the function's own arrivals).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An edge: this function emits `fan_out` messages to `target` per message it processes (a prior; the
/// policy prefers the measured fan-out once there is one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// Name of the downstream function.
    pub target: String,
    /// Expected messages emitted to `target` per processed message.
    pub fan_out: f64,
}

/// A store read: this function performs `ops_per_message` store operations per message it processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreRead {
    /// Name of the store.
    pub store: String,
    /// Store operations per processed message.
    pub ops_per_message: f64,
}

/// One function (one queue, one worker pool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// Unique function name.
    pub name: String,
    /// Lower bound on workers; `0` allows scale to zero when idle.
    pub min_workers: u32,
    /// Upper bound on workers (at least 1).
    pub max_workers: u32,
    /// Functions this one emits to.
    #[serde(default)]
    pub emits_to: Vec<Edge>,
    /// Stores this one reads (or writes) per message.
    #[serde(default)]
    pub reads: Vec<StoreRead>,
    /// Expected messages per second one worker processes, used until a rate has been measured.
    #[serde(default)]
    pub service_rate_hint: Option<f64>,
}

impl FunctionSpec {
    /// A function with bounds and no edges.
    pub fn new(name: impl Into<String>, min_workers: u32, max_workers: u32) -> Self {
        Self {
            name: name.into(),
            min_workers,
            max_workers,
            emits_to: Vec::new(),
            reads: Vec::new(),
            service_rate_hint: None,
        }
    }

    /// Adds an edge to `target` with a prior fan-out.
    pub fn emits(mut self, target: impl Into<String>, fan_out: f64) -> Self {
        self.emits_to.push(Edge {
            target: target.into(),
            fan_out,
        });
        self
    }

    /// Adds a store read.
    pub fn reads(mut self, store: impl Into<String>, ops_per_message: f64) -> Self {
        self.reads.push(StoreRead {
            store: store.into(),
            ops_per_message,
        });
        self
    }

    /// Sets the service-rate hint (messages per second per worker).
    pub fn service_rate(mut self, per_worker: f64) -> Self {
        self.service_rate_hint = Some(per_worker);
        self
    }
}

/// A downstream store with a capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSpec {
    /// Unique store name.
    pub name: String,
    /// Operations per second the store sustains; requests beyond it fail.
    pub capacity: f64,
}

impl StoreSpec {
    /// A store with a capacity in ops/s.
    pub fn new(name: impl Into<String>, capacity: f64) -> Self {
        Self {
            name: name.into(),
            capacity,
        }
    }
}

/// A validated, acyclic dependency graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    functions: Vec<FunctionSpec>,
    stores: Vec<StoreSpec>,
    index: BTreeMap<String, usize>,
    order: Vec<usize>,
    upstream: Vec<Vec<(usize, usize)>>,
}

fn finite_non_negative(v: f64) -> bool {
    v.is_finite() && v >= 0.0
}

impl Graph {
    /// Validates and builds the graph. Errors name the function, edge or store at fault.
    pub fn new(functions: Vec<FunctionSpec>, stores: Vec<StoreSpec>) -> Result<Self> {
        let bad = |m: String| Err(Error::Graph(m));
        if functions.is_empty() {
            return bad("the graph has no functions".into());
        }
        let mut index = BTreeMap::new();
        for (i, f) in functions.iter().enumerate() {
            if f.name.trim().is_empty() {
                return bad(format!("function #{i} has an empty name"));
            }
            if index.insert(f.name.clone(), i).is_some() {
                return bad(format!("function {:?} is declared twice", f.name));
            }
            if f.max_workers == 0 {
                return bad(format!(
                    "function {:?}: max_workers must be at least 1",
                    f.name
                ));
            }
            if f.min_workers > f.max_workers {
                return bad(format!(
                    "function {:?}: min_workers {} exceeds max_workers {}",
                    f.name, f.min_workers, f.max_workers
                ));
            }
            if let Some(h) = f.service_rate_hint
                && !(h.is_finite() && h > 0.0)
            {
                return bad(format!(
                    "function {:?}: service_rate_hint must be a positive number, got {h}",
                    f.name
                ));
            }
        }
        let mut store_names = BTreeSet::new();
        for s in &stores {
            if !store_names.insert(s.name.clone()) {
                return bad(format!("store {:?} is declared twice", s.name));
            }
            if !(s.capacity.is_finite() && s.capacity > 0.0) {
                return bad(format!(
                    "store {:?}: capacity must be a positive number of ops/s, got {}",
                    s.name, s.capacity
                ));
            }
        }
        let mut upstream = vec![Vec::new(); functions.len()];
        for (i, f) in functions.iter().enumerate() {
            let mut seen = BTreeSet::new();
            for (e, edge) in f.emits_to.iter().enumerate() {
                let Some(&t) = index.get(&edge.target) else {
                    return bad(format!(
                        "function {:?} emits to unknown function {:?}",
                        f.name, edge.target
                    ));
                };
                if !seen.insert(t) {
                    return bad(format!(
                        "function {:?} emits to {:?} twice",
                        f.name, edge.target
                    ));
                }
                if !finite_non_negative(edge.fan_out) {
                    return bad(format!(
                        "function {:?} -> {:?}: fan_out must be a non-negative number, got {}",
                        f.name, edge.target, edge.fan_out
                    ));
                }
                upstream[t].push((i, e));
            }
            for r in &f.reads {
                if !store_names.contains(&r.store) {
                    return bad(format!(
                        "function {:?} reads unknown store {:?}",
                        f.name, r.store
                    ));
                }
                if !finite_non_negative(r.ops_per_message) {
                    return bad(format!(
                        "function {:?} reads {:?}: ops_per_message must be a non-negative number, got {}",
                        f.name, r.store, r.ops_per_message
                    ));
                }
            }
        }
        // Kahn's algorithm; ties broken by declaration order so the order is deterministic.
        let mut indegree: Vec<usize> = upstream.iter().map(Vec::len).collect();
        let mut ready: BTreeSet<usize> =
            (0..functions.len()).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(functions.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for edge in &functions[i].emits_to {
                let t = index[&edge.target];
                indegree[t] -= 1;
                if indegree[t] == 0 {
                    ready.insert(t);
                }
            }
        }
        if order.len() != functions.len() {
            let stuck: Vec<&str> = (0..functions.len())
                .filter(|&i| indegree[i] > 0)
                .map(|i| functions[i].name.as_str())
                .collect();
            return bad(format!(
                "emits_to forms a cycle through {}; the scaler needs an acyclic graph",
                stuck.join(", ")
            ));
        }
        Ok(Self {
            functions,
            stores,
            index,
            order,
            upstream,
        })
    }

    /// Functions in declaration order.
    pub fn functions(&self) -> &[FunctionSpec] {
        &self.functions
    }

    /// Stores in declaration order.
    pub fn stores(&self) -> &[StoreSpec] {
        &self.stores
    }

    /// A function by name.
    pub fn function(&self, name: &str) -> Option<&FunctionSpec> {
        self.index.get(name).map(|&i| &self.functions[i])
    }

    /// A store by name.
    pub fn store(&self, name: &str) -> Option<&StoreSpec> {
        self.stores.iter().find(|s| s.name == name)
    }

    /// Index of a function by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Function indices in topological order (every function after all functions that emit to it).
    pub fn topological_order(&self) -> &[usize] {
        &self.order
    }

    /// Function names in topological order.
    pub fn topological_names(&self) -> Vec<&str> {
        self.order
            .iter()
            .map(|&i| self.functions[i].name.as_str())
            .collect()
    }

    /// The edges into function `i`: `(upstream function index, index into its emits_to)`.
    pub fn upstream_of(&self, i: usize) -> &[(usize, usize)] {
        &self.upstream[i]
    }

    /// Functions with no `emits_to` (where a message's journey ends).
    pub fn is_sink(&self, i: usize) -> bool {
        self.functions[i].emits_to.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline() -> Vec<FunctionSpec> {
        vec![
            FunctionSpec::new("c", 0, 4),
            FunctionSpec::new("b", 1, 4).emits("c", 2.0),
            FunctionSpec::new("a", 1, 4).emits("b", 1.0).emits("c", 0.5),
        ]
    }

    #[test]
    fn topological_order_puts_upstream_first() {
        let g = Graph::new(pipeline(), vec![]).unwrap();
        assert_eq!(g.topological_names(), vec!["a", "b", "c"]);
        let c = g.index_of("c").unwrap();
        let ups: Vec<&str> = g
            .upstream_of(c)
            .iter()
            .map(|&(u, _)| g.functions()[u].name.as_str())
            .collect();
        assert_eq!(ups, vec!["b", "a"]);
        assert!(g.is_sink(c));
    }

    #[test]
    fn cycles_are_rejected_and_named() {
        let mut fs = pipeline();
        fs[0] = FunctionSpec::new("c", 0, 4).emits("a", 1.0);
        let err = Graph::new(fs, vec![]).unwrap_err().to_string();
        assert!(
            err.contains("cycle") && err.contains('a') && err.contains('c'),
            "{err}"
        );
    }

    #[test]
    fn bad_inputs_name_the_culprit() {
        let cases: Vec<(Vec<FunctionSpec>, Vec<StoreSpec>, &str)> = vec![
            (
                vec![FunctionSpec::new("a", 0, 1).emits("zz", 1.0)],
                vec![],
                "unknown function \"zz\"",
            ),
            (
                vec![FunctionSpec::new("a", 3, 2)],
                vec![],
                "min_workers 3 exceeds max_workers 2",
            ),
            (
                vec![FunctionSpec::new("a", 0, 0)],
                vec![],
                "max_workers must be at least 1",
            ),
            (
                vec![FunctionSpec::new("a", 0, 1).reads("db", 1.0)],
                vec![],
                "unknown store \"db\"",
            ),
            (
                vec![FunctionSpec::new("a", 0, 1)],
                vec![StoreSpec::new("db", 0.0)],
                "capacity",
            ),
            (
                vec![FunctionSpec::new("a", 0, 1), FunctionSpec::new("a", 0, 1)],
                vec![],
                "declared twice",
            ),
            (
                vec![
                    FunctionSpec::new("a", 0, 1).emits("b", -1.0),
                    FunctionSpec::new("b", 0, 1),
                ],
                vec![],
                "fan_out",
            ),
            (
                vec![FunctionSpec::new("a", 0, 1).emits("a", 1.0)],
                vec![],
                "cycle",
            ),
        ];
        for (fs, ss, want) in cases {
            let err = Graph::new(fs, ss).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }
}
