//! The PostgreSQL store against a real, throwaway PostgreSQL server: the
//! shared store suite, and what several nodes on one database rely on.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lanyard_store::Store;
use lanyard_store_postgres::testing::TempCluster;
use lanyard_store_postgres::{ChangeFeed, PgStore, RemoteChunk};

fn cluster() -> &'static TempCluster {
    static CLUSTER: OnceLock<TempCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| TempCluster::start().expect("start a throwaway PostgreSQL"))
}

fn fresh() -> PgStore {
    let url = cluster().create_database().unwrap();
    PgStore::connect(&url).unwrap()
}

mod suite {
    lanyard_store::store_suite!(super::fresh());
}

/// Reads the feed until `want` chunks arrived (60 s at most).
fn collect(rt: &tokio::runtime::Runtime, feed: &mut ChangeFeed, want: usize) -> Vec<RemoteChunk> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match rt.block_on(async { tokio::time::timeout(left, feed.next()).await }) {
            Ok(Some(batch)) => got.extend(batch),
            Ok(None) => panic!("the feed ended"),
            Err(_) => panic!("only {} of {want} chunks arrived: {got:?}", got.len()),
        }
    }
    got
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_node_reads_what_another_commits_in_order_and_not_its_own() {
    let url = cluster().create_database().unwrap();
    let a = PgStore::connect(&url).unwrap();
    let b = PgStore::connect(&url).unwrap();
    let rt = rt();
    let mut feed_b = b.follow().unwrap();
    a.append_chunks_deferred("doc/1", &[vec![1], vec![2]])
        .unwrap();
    a.append_chunks_deferred("doc/2", &[vec![3]]).unwrap();
    b.append_chunks("doc/1", &[vec![9]]).unwrap();
    // Not durable yet: not in the feed, but visible to its own node, after
    // what is durable.
    assert_eq!(a.load_doc("doc/1").unwrap(), Some(vec![9, 1, 2]));
    a.flush().unwrap();
    let got = collect(&rt, &mut feed_b, 3);
    let seen: Vec<(String, Vec<u8>)> = got
        .iter()
        .map(|c| (c.doc.clone(), c.data.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("doc/1".to_string(), vec![1]),
            ("doc/1".to_string(), vec![2]),
            ("doc/2".to_string(), vec![3])
        ],
        "a's chunks in order, b's own skipped"
    );
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    // Both nodes read the same document.
    assert_eq!(b.load_doc("doc/1").unwrap(), a.load_doc("doc/1").unwrap());
    assert_eq!(a.doc_ids().unwrap(), vec!["doc/1", "doc/2"]);
}

#[test]
fn concurrent_writers_are_read_once_each_in_commit_order() {
    let url = cluster().create_database().unwrap();
    let reader = PgStore::connect(&url).unwrap();
    let rt = rt();
    let mut feed = reader.follow().unwrap();
    let writers: Vec<_> = (0..3u8)
        .map(|w| {
            let url = url.clone();
            std::thread::spawn(move || {
                let s = PgStore::connect(&url).unwrap();
                for i in 0..40u8 {
                    s.append_chunks_deferred(&format!("w{w}"), &[vec![w, i]])
                        .unwrap();
                    if i % 3 == 0 {
                        s.flush().unwrap();
                    }
                }
                s.flush().unwrap();
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let got = collect(&rt, &mut feed, 120);
    assert!(
        got.windows(2).all(|w| w[0].seq < w[1].seq),
        "in order, once each"
    );
    for w in 0..3u8 {
        let mine: Vec<u8> = got
            .iter()
            .filter(|c| c.data[0] == w)
            .map(|c| c.data[1])
            .collect();
        assert_eq!(
            mine,
            (0..40).collect::<Vec<u8>>(),
            "writer {w}'s chunks, each once, in order"
        );
    }
    // Nothing more arrives.
    let more =
        rt.block_on(async { tokio::time::timeout(Duration::from_millis(1500), feed.next()).await });
    assert!(more.is_err(), "no chunk twice: {more:?}");
}

#[test]
fn dropped_connections_lose_and_duplicate_nothing() {
    // Its own server: it drops every connection to it.
    let own = TempCluster::start().unwrap();
    let url = own.create_database().unwrap();
    let a = PgStore::connect(&url).unwrap();
    let b = PgStore::connect(&url).unwrap();
    let rt = rt();
    let mut feed = b.follow().unwrap();
    let status = feed.status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !status.connected() {
        assert!(Instant::now() < deadline, "the feed never connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut written = 0u8;
    for round in 0..3 {
        for _ in 0..5 {
            a.append_chunks_deferred("d", &[vec![written]]).unwrap();
            written += 1;
        }
        // A flush may fail while connections are being dropped: the writes
        // stay pending and the next flush writes them once.
        let killed = own.drop_connections().unwrap();
        assert!(killed > 0, "round {round}: no connection dropped");
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = a.flush() {
            assert!(Instant::now() < deadline, "flush never recovered: {e}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let got = collect(&rt, &mut feed, written as usize);
    let data: Vec<u8> = got.iter().map(|c| c.data[0]).collect();
    assert_eq!(data, (0..written).collect::<Vec<u8>>());
    assert_eq!(b.load_doc("d").unwrap(), Some((0..written).collect()));
    assert!(status.reconnects() >= 1, "the feed reconnected");
    let more =
        rt.block_on(async { tokio::time::timeout(Duration::from_millis(1500), feed.next()).await });
    assert!(more.is_err(), "nothing twice: {more:?}");
}

#[test]
fn an_unreachable_database_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err =
        PgStore::connect(&format!("postgres://lanyard:secret@127.0.0.1:{port}/x")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cannot connect to postgres://lanyard@127.0.0.1"),
        "{text}"
    );
    assert!(
        !text.contains("secret"),
        "the password is never shown: {text}"
    );
    let err = PgStore::connect("not a url").unwrap_err();
    assert!(err.to_string().contains("is not a PostgreSQL URL"), "{err}");
}

#[test]
fn a_second_node_finds_the_schema_migrated() {
    let url = cluster().create_database().unwrap();
    let a = PgStore::connect(&url).unwrap();
    a.put_meta("k", b"v").unwrap();
    let b = PgStore::connect(&url).unwrap();
    assert_eq!(b.get_meta("k").unwrap(), Some(b"v".to_vec()));
    let versions = cluster()
        .psql(
            url.rsplit('/').next().unwrap(),
            "SELECT count(*) FROM lanyard_schema",
        )
        .unwrap();
    assert_eq!(versions, "1");
}
