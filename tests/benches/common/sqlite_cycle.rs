//! The baseline for the embedded backend's end-to-end figure: what SQLite itself allows on this
//! machine for the same durable queue cycle, outside Levee. One thread, one connection, the same
//! settings as the embedded backend (WAL, `synchronous=NORMAL`), the same message table shape and
//! ready index; per batch of 10: one transaction inserting 10 messages, one leasing 10 (select the
//! due ones, move their visibility and draw a receipt token), one deleting them.

use std::time::Instant;

use rusqlite::{Connection, params};

const BATCH: usize = 10;

/// Runs `messages` through the cycle in a fresh file under `dir`; returns messages per second.
pub fn rate(dir: &std::path::Path, messages: usize) -> f64 {
    let conn = Connection::open(dir.join("baseline.db")).expect("open the baseline file");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         CREATE TABLE messages (
             seq INTEGER PRIMARY KEY, queue INTEGER NOT NULL, id TEXT NOT NULL,
             body BLOB NOT NULL, sent_at INTEGER NOT NULL, visible_at INTEGER NOT NULL,
             receive_count INTEGER NOT NULL DEFAULT 0, token INTEGER);
         CREATE INDEX messages_ready ON messages (queue, visible_at);",
    )
    .expect("baseline schema");
    let start = Instant::now();
    let mut done = 0;
    let mut seqs = Vec::with_capacity(BATCH);
    while done < messages {
        let now = start.elapsed().as_millis() as i64;
        let tx = conn.unchecked_transaction().expect("begin");
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO messages (queue, id, body, sent_at, visible_at)
                     VALUES (1, ?1, ?2, ?3, ?3)",
                )
                .expect("prepare insert");
            for i in 0..BATCH {
                let id = format!("{:032x}", rand_id(done + i));
                let body = format!(r#"{{"n": {}}}"#, done + i);
                insert
                    .execute(params![id, body.as_bytes(), now])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit inserts");

        let tx = conn.unchecked_transaction().expect("begin");
        {
            let mut select = tx
                .prepare_cached(
                    "SELECT seq, id, body FROM messages WHERE queue = 1 AND visible_at <= ?1
                     ORDER BY visible_at LIMIT ?2",
                )
                .expect("prepare select");
            let mut lease = tx
                .prepare_cached(
                    "UPDATE messages SET visible_at = ?2, receive_count = receive_count + 1,
                     token = ?3 WHERE seq = ?1",
                )
                .expect("prepare lease");
            let mut rows = select.query(params![now, BATCH as i64]).expect("select");
            seqs.clear();
            while let Some(r) = rows.next().expect("row") {
                let seq: i64 = r.get(0).expect("seq");
                let _id: String = r.get(1).expect("id");
                let _body: Vec<u8> = r.get(2).expect("body");
                seqs.push(seq);
            }
            drop(rows);
            for (k, seq) in seqs.iter().enumerate() {
                lease
                    .execute(params![seq, now + 30_000, rand_id(k) as i64])
                    .expect("lease");
            }
        }
        tx.commit().expect("commit leases");

        let tx = conn.unchecked_transaction().expect("begin");
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM messages WHERE seq = ?1")
                .expect("prepare delete");
            for seq in &seqs {
                delete.execute([seq]).expect("delete");
            }
        }
        tx.commit().expect("commit deletes");
        done += seqs.len();
    }
    messages as f64 / start.elapsed().as_secs_f64()
}

/// A cheap pseudo-random 64-bit value (splitmix64), standing in for ids and receipt tokens.
fn rand_id(n: usize) -> u64 {
    let mut z = (n as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
