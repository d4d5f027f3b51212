//! The [`Store`] contract: namespaced kv semantics every store backend must show.
//!
//! Run it with [`store_contract_tests!`](crate::store_contract_tests).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use levee::store::{CommitOutcome, KvCommit, MAX_KEY_LEN, MAX_VALUE_LEN, Record};
use levee::{Error, PutOptions, Store};

/// Expands to one `#[tokio::test]` per store contract case. `$setup` is an async function
/// returning `(Arc<dyn Store>, G)`; `G` is kept alive until the case ends.
#[macro_export]
macro_rules! store_contract_tests {
    ($setup:path) => {
        $crate::store_contract_tests!(@cases $setup;
            get_put_delete,
            namespaces_are_separate,
            if_absent_writes_once,
            ttl_expires_items,
            get_many_reads_in_order,
            scan_prefix_order_and_limit,
            scan_continues_after_a_cursor,
            versions_rise_with_every_write,
            commit_applies_all_or_nothing,
            commit_records_are_checked_once,
            commit_adds_never_conflict,
            validation_errors,
        );
    };
    (@cases $setup:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $case() {
                let Some((store, _keep)) = $setup().await else { return };
                let prefix = $crate::contract::unique_prefix(stringify!($case));
                $crate::contract::store::$case(store, &prefix).await;
            }
        )*
    };
}

const PLAIN: PutOptions = PutOptions {
    if_absent: false,
    ttl: None,
};
const IF_ABSENT: PutOptions = PutOptions {
    if_absent: true,
    ttl: None,
};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Put, overwrite, get and delete one key; deleting a missing key is fine.
pub async fn get_put_delete(s: Arc<dyn Store>, ns: &str) {
    assert_eq!(s.get(ns, "k").await.unwrap(), None);
    assert!(s.put(ns, "k", b("one"), PLAIN).await.unwrap());
    assert_eq!(s.get(ns, "k").await.unwrap(), Some(b("one")));
    assert!(
        s.put(ns, "k", b("two"), PLAIN).await.unwrap(),
        "a plain put overwrites"
    );
    assert_eq!(s.get(ns, "k").await.unwrap(), Some(b("two")));
    s.delete(ns, "k").await.unwrap();
    assert_eq!(s.get(ns, "k").await.unwrap(), None);
    s.delete(ns, "k").await.unwrap();
    s.delete(ns, "never-written").await.unwrap();

    let binary = Bytes::from((0..=255u8).collect::<Vec<_>>());
    assert!(
        s.put(ns, "binary/ключ", binary.clone(), PLAIN)
            .await
            .unwrap()
    );
    assert_eq!(s.get(ns, "binary/ключ").await.unwrap(), Some(binary));
}

/// The same key in two namespaces holds two values; deleting or scanning one leaves the other.
pub async fn namespaces_are_separate(s: Arc<dyn Store>, prefix: &str) {
    let (one, two) = (format!("{prefix}-one"), format!("{prefix}-two"));
    s.put(&one, "shared", b("1"), PLAIN).await.unwrap();
    s.put(&two, "shared", b("2"), PLAIN).await.unwrap();
    assert_eq!(s.get(&one, "shared").await.unwrap(), Some(b("1")));
    assert_eq!(s.get(&two, "shared").await.unwrap(), Some(b("2")));
    assert_eq!(
        s.scan(&one, "", None, 10).await.unwrap(),
        vec![("shared".to_string(), b("1"))]
    );
    s.delete(&one, "shared").await.unwrap();
    assert_eq!(s.get(&one, "shared").await.unwrap(), None);
    assert_eq!(s.get(&two, "shared").await.unwrap(), Some(b("2")));
}

/// `if_absent` writes only when the key is missing and reports whether it wrote.
pub async fn if_absent_writes_once(s: Arc<dyn Store>, ns: &str) {
    assert!(s.put(ns, "once", b("first"), IF_ABSENT).await.unwrap());
    assert!(
        !s.put(ns, "once", b("second"), IF_ABSENT).await.unwrap(),
        "the key exists"
    );
    assert_eq!(
        s.get(ns, "once").await.unwrap(),
        Some(b("first")),
        "a refused put changes nothing"
    );
    s.delete(ns, "once").await.unwrap();
    assert!(
        s.put(ns, "once", b("third"), IF_ABSENT).await.unwrap(),
        "absent again after delete"
    );
    assert_eq!(s.get(ns, "once").await.unwrap(), Some(b("third")));
}

/// An item with a ttl is readable until it expires, then invisible to get, scan and `if_absent`.
pub async fn ttl_expires_items(s: Arc<dyn Store>, ns: &str) {
    let ttl = PutOptions {
        if_absent: false,
        ttl: Some(Duration::from_secs(1)),
    };
    assert!(s.put(ns, "short", b("lived"), ttl).await.unwrap());
    assert!(s.put(ns, "stays", b("here"), PLAIN).await.unwrap());
    assert_eq!(s.get(ns, "short").await.unwrap(), Some(b("lived")));

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        s.get(ns, "short").await.unwrap(),
        None,
        "expired items are invisible"
    );
    assert_eq!(
        s.scan(ns, "", None, 10).await.unwrap(),
        vec![("stays".to_string(), b("here"))]
    );
    assert_eq!(
        s.get_many(ns, &["short".into(), "stays".into()])
            .await
            .unwrap(),
        vec![None, Some(b("here"))],
        "a batch read does not see expired items either"
    );
    assert!(
        s.put(ns, "short", b("again"), IF_ABSENT).await.unwrap(),
        "an expired key counts as absent"
    );
    assert_eq!(s.get(ns, "short").await.unwrap(), Some(b("again")));
}

/// A batch read answers key by key in the order asked, `None` for absent keys, also for more
/// keys than one backend call takes (DynamoDB's `BatchGetItem` takes 100) and with repeats.
pub async fn get_many_reads_in_order(s: Arc<dyn Store>, ns: &str) {
    let written: Vec<String> = (0..120).map(|i| format!("k{i:03}")).collect();
    let writes = written.chunks(40).map(|chunk| KvCommit {
        ns: ns.to_string(),
        writes: chunk.iter().map(|k| (k.clone(), Some(b(k)))).collect(),
        ..KvCommit::default()
    });
    for commit in writes {
        let out = s.commit(&commit).await.unwrap();
        assert!(matches!(out, CommitOutcome::Committed { .. }), "{out:?}");
    }
    let mut keys: Vec<String> = written.iter().rev().cloned().collect();
    keys.insert(7, "absent".into());
    keys.push("k005".into());
    let found = s.get_many(ns, &keys).await.unwrap();
    let expected: Vec<Option<Bytes>> = keys.iter().map(|k| (k != "absent").then(|| b(k))).collect();
    assert_eq!(found, expected);
    assert!(s.get_many(ns, &[]).await.unwrap().is_empty());
    assert!(
        s.get_many("other-namespace", &keys[..3])
            .await
            .unwrap()
            .iter()
            .all(Option::is_none),
        "another namespace holds none of them"
    );
}

/// Scans return the keys with the prefix, in key order, at most `limit` of them.
pub async fn scan_prefix_order_and_limit(s: Arc<dyn Store>, ns: &str) {
    for key in ["user:c", "user:a", "order:1", "user:b", "user", "users:z"] {
        s.put(ns, key, b(&format!("v-{key}")), PLAIN).await.unwrap();
    }
    let keys = |items: Vec<(String, Bytes)>| items.into_iter().map(|(k, _)| k).collect::<Vec<_>>();

    let users = s.scan(ns, "user:", None, 10).await.unwrap();
    assert_eq!(users[0], ("user:a".to_string(), b("v-user:a")));
    assert_eq!(keys(users), ["user:a", "user:b", "user:c"]);
    assert_eq!(
        keys(s.scan(ns, "user:", None, 2).await.unwrap()),
        ["user:a", "user:b"]
    );
    assert_eq!(
        keys(s.scan(ns, "user", None, 10).await.unwrap()),
        ["user", "user:a", "user:b", "user:c", "users:z"]
    );
    assert_eq!(
        keys(s.scan(ns, "", None, 100).await.unwrap()),
        ["order:1", "user", "user:a", "user:b", "user:c", "users:z"]
    );
    assert!(s.scan(ns, "zzz", None, 10).await.unwrap().is_empty());
}

/// Keys and values outside the shared limits are rejected with an error that names them.
pub async fn validation_errors(s: Arc<dyn Store>, ns: &str) {
    let invalid = |r: Result<_, Error>, what: &str| match r {
        Err(Error::Invalid(msg)) => assert!(msg.contains(what), "`{msg}` should mention {what}"),
        other => panic!("expected an invalid-input error about the {what}, got {other:?}"),
    };
    let long_key = "k".repeat(MAX_KEY_LEN + 1);
    invalid(s.put(ns, "", b("v"), PLAIN).await.map(|_| ()), "key");
    invalid(s.put(ns, &long_key, b("v"), PLAIN).await.map(|_| ()), "key");
    invalid(s.get(ns, "").await.map(|_| ()), "key");
    invalid(s.get(ns, &long_key).await.map(|_| ()), "key");
    invalid(s.delete(ns, "").await, "key");
    let big = Bytes::from(vec![0u8; MAX_VALUE_LEN + 1]);
    invalid(s.put(ns, "big", big, PLAIN).await.map(|_| ()), "value");
    assert_eq!(
        s.get(ns, "big").await.unwrap(),
        None,
        "a rejected put writes nothing"
    );

    let longest = "k".repeat(MAX_KEY_LEN);
    let largest = Bytes::from(vec![7u8; MAX_VALUE_LEN]);
    assert!(
        s.put(ns, &longest, largest.clone(), PLAIN).await.unwrap(),
        "the limits themselves are allowed"
    );
    assert_eq!(s.get(ns, &longest).await.unwrap(), Some(largest));
}

/// A scan resumes strictly after its cursor and stays within the prefix.
pub async fn scan_continues_after_a_cursor(s: Arc<dyn Store>, ns: &str) {
    for k in ["p/1", "p/2", "p/3", "p/4", "q/1"] {
        s.put(ns, k, b(k), PLAIN).await.unwrap();
    }
    let first = keys(s.scan(ns, "p/", None, 2).await.unwrap());
    assert_eq!(first, ["p/1", "p/2"]);
    let next = keys(s.scan(ns, "p/", Some("p/2"), 2).await.unwrap());
    assert_eq!(next, ["p/3", "p/4"]);
    assert!(s.scan(ns, "p/", Some("p/4"), 2).await.unwrap().is_empty());
    assert!(
        s.scan(ns, "p/", None, 0).await.is_err(),
        "limit 0 is refused"
    );
}

/// Every write raises an item's version; an absent key reads as version 0.
pub async fn versions_rise_with_every_write(s: Arc<dyn Store>, ns: &str) {
    let v0 = s.get_versioned(ns, "k").await.unwrap();
    assert_eq!((v0.value, v0.version), (None, 0));
    s.put(ns, "k", b("1"), PLAIN).await.unwrap();
    let v1 = s.get_versioned(ns, "k").await.unwrap();
    assert_eq!(v1.value, Some(b("1")));
    assert!(v1.version > 0);
    s.put(ns, "k", b("2"), PLAIN).await.unwrap();
    let v2 = s.get_versioned(ns, "k").await.unwrap();
    assert!(v2.version > v1.version, "{v1:?} then {v2:?}");
    s.delete(ns, "k").await.unwrap();
    assert_eq!(s.get_versioned(ns, "k").await.unwrap().version, 0);
}

fn keys(items: Vec<(String, Bytes)>) -> Vec<String> {
    items.into_iter().map(|(k, _)| k).collect()
}

fn commit(ns: &str, reads: &[(&str, u64)], writes: &[(&str, Option<&str>)]) -> KvCommit {
    KvCommit {
        ns: ns.to_string(),
        reads: reads.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        writes: writes
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(b)))
            .collect(),
        adds: Vec::new(),
        record: None,
    }
}

/// A commit applies every write if the versions it read are current, and nothing otherwise:
/// two read-modify-writes from one snapshot cannot both win.
pub async fn commit_applies_all_or_nothing(s: Arc<dyn Store>, ns: &str) {
    s.put(ns, "a", b("0"), PLAIN).await.unwrap();
    let a = s.get_versioned(ns, "a").await.unwrap().version;
    let first = commit(
        ns,
        &[("a", a), ("b", 0)],
        &[("a", Some("1")), ("b", Some("x"))],
    );
    let second = commit(ns, &[("a", a)], &[("a", Some("2")), ("c", Some("y"))]);
    let out = s.commit(&first).await.unwrap();
    let CommitOutcome::Committed { versions } = out else {
        panic!("first commit: {out:?}")
    };
    assert_eq!(versions.len(), 2);
    assert_eq!(
        s.commit(&second).await.unwrap(),
        CommitOutcome::Conflict {
            keys: vec!["a".to_string()]
        },
        "the second read a stale version"
    );
    assert_eq!(s.get(ns, "a").await.unwrap(), Some(b("1")));
    assert_eq!(s.get(ns, "b").await.unwrap(), Some(b("x")));
    assert_eq!(
        s.get(ns, "c").await.unwrap(),
        None,
        "nothing of a conflict applies"
    );

    // A key read as absent conflicts once someone created it; deletes commit too.
    let create = commit(ns, &[("b", 0)], &[("b", Some("again"))]);
    assert!(matches!(
        s.commit(&create).await.unwrap(),
        CommitOutcome::Conflict { .. }
    ));
    let b_now = s.get_versioned(ns, "b").await.unwrap().version;
    let delete = commit(ns, &[("b", b_now)], &[("b", None)]);
    assert!(matches!(
        s.commit(&delete).await.unwrap(),
        CommitOutcome::Committed { .. }
    ));
    assert_eq!(s.get(ns, "b").await.unwrap(), None);
    // A blind write (nothing read) always applies.
    let blind = commit(ns, &[], &[("a", Some("blind"))]);
    assert!(matches!(
        s.commit(&blind).await.unwrap(),
        CommitOutcome::Committed { .. }
    ));
    assert_eq!(s.get(ns, "a").await.unwrap(), Some(b("blind")));
}

/// A commit with a completion record applies once; the second is a duplicate and changes nothing.
pub async fn commit_records_are_checked_once(s: Arc<dyn Store>, ns: &str) {
    let record = Record {
        key: format!("{ns}/m-1"),
        value: b("emits"),
        ttl: Duration::from_secs(3600),
    };
    let mut c = commit(ns, &[], &[("n", Some("1"))]);
    c.record = Some(record.clone());
    assert!(matches!(
        s.commit(&c).await.unwrap(),
        CommitOutcome::Committed { .. }
    ));
    let mut again = commit(ns, &[], &[("n", Some("2"))]);
    again.record = Some(record);
    assert_eq!(s.commit(&again).await.unwrap(), CommitOutcome::Duplicate);
    assert_eq!(s.get(ns, "n").await.unwrap(), Some(b("1")));
}

/// Adds to one counter from many commits at once never conflict and never lose a delta; an add
/// to a value that is not an integer refuses the whole commit, applying nothing.
pub async fn commit_adds_never_conflict(s: Arc<dyn Store>, ns: &str) {
    let adding = |delta: i64, extra: Option<&str>| KvCommit {
        adds: vec![("n".into(), delta)],
        writes: extra
            .map(|k| vec![(k.to_string(), Some(b("x")))])
            .unwrap_or_default(),
        ..commit(ns, &[], &[])
    };
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (s, c) = (s.clone(), adding(i + 1, None));
            tokio::spawn(async move { s.commit(&c).await })
        })
        .collect();
    for t in tasks {
        let outcome = t.await.unwrap().unwrap();
        assert!(
            matches!(outcome, CommitOutcome::Committed { .. }),
            "an add conflicted: {outcome:?}"
        );
    }
    assert_eq!(s.get(ns, "n").await.unwrap(), Some(b("36")));
    // Adds and writes in one commit apply together.
    s.commit(&adding(-40, Some("w"))).await.unwrap();
    assert_eq!(s.get(ns, "n").await.unwrap(), Some(b("-4")));
    assert_eq!(s.get(ns, "w").await.unwrap(), Some(b("x")));

    s.put(ns, "text", b("\"hello\""), PLAIN).await.unwrap();
    let bad = KvCommit {
        adds: vec![("text".into(), 1)],
        writes: vec![("w2".into(), Some(b("y")))],
        ..commit(ns, &[], &[])
    };
    let err = s.commit(&bad).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("not an integer"), "{err}");
    assert_eq!(
        s.get(ns, "w2").await.unwrap(),
        None,
        "a refused commit wrote"
    );
    s.put(ns, "big", b(&i64::MAX.to_string()), PLAIN)
        .await
        .unwrap();
    let over = KvCommit {
        adds: vec![("big".into(), 1)],
        ..commit(ns, &[], &[])
    };
    let err = s.commit(&over).await.unwrap_err();
    assert!(err.to_string().contains("overflow"), "{err}");
    // An add may not touch a key the same commit reads or writes.
    let both = KvCommit {
        adds: vec![("n".into(), 1)],
        ..commit(ns, &[("n", 1)], &[])
    };
    assert!(s.commit(&both).await.is_err());
}
