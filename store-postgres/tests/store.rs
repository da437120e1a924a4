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
    assert_eq!(versions, "2");
}

/// Waits (60 s at most) until exactly one of `nodes` is the authority;
/// returns its index and epoch.
fn one_authority(nodes: &[&lanyard_store_postgres::Authority]) -> (usize, i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now: Vec<(usize, i64)> = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.current().map(|e| (i, e.epoch)))
            .collect();
        if let [one] = now[..] {
            return one;
        }
        assert!(now.len() <= 1, "two authorities at once: {now:?}");
        assert!(Instant::now() < deadline, "no authority within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_node_decides_and_a_stale_authority_cannot_write_its_decisions() {
    // Its own server: the authority's connection is dropped.
    let own = TempCluster::start().unwrap();
    let url = own.create_database().unwrap();
    let stores = [
        PgStore::connect(&url).unwrap(),
        PgStore::connect(&url).unwrap(),
    ];
    let elections = [stores[0].elect("seats/"), stores[1].elect("seats/")];
    let (first, epoch) = one_authority(&[&elections[0], &elections[1]]);
    let (lead, other) = (&stores[first], &stores[1 - first]);

    // The authority writes decisions; the other node cannot, and its
    // refused decision is dropped while its other writes go through.
    lead.append_chunks("seats/e/ann", &[vec![1]]).unwrap();
    other
        .append_chunks_deferred("seats/e/bob", &[vec![2]])
        .unwrap();
    other
        .append_chunks_deferred("attendee/e/bob", &[vec![3]])
        .unwrap();
    let err = other.flush().unwrap_err();
    assert!(matches!(err, lanyard_store::StoreError::Fenced(_)), "{err}");
    assert_eq!(other.load_doc("seats/e/bob").unwrap(), None);
    other.flush().unwrap();
    assert_eq!(lead.load_doc("attendee/e/bob").unwrap(), Some(vec![3]));

    // A decision made before the authority's database connection drops
    // is never written once another node has taken over.
    lead.append_chunks_deferred("seats/e/ann", &[vec![4]])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let holder = format!(
        "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objid = {}",
        0x4c61_6e79_6172_6402_i64 as u32
    );
    let db = url.rsplit('/').next().unwrap();
    assert_eq!(
        own.psql(db, &holder).unwrap(),
        "1",
        "the lock's holder ended"
    );
    let next = loop {
        if let Some(e) = elections[1 - first].current() {
            break e;
        }
        assert!(Instant::now() < deadline, "nobody took over within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(next.epoch > epoch, "{next:?} after {epoch}");
    let err = lead.flush().unwrap_err();
    assert!(matches!(err, lanyard_store::StoreError::Fenced(_)), "{err}");
    assert_eq!(other.load_doc("seats/e/ann").unwrap(), Some(vec![1]));
    assert_eq!(
        lead.load_doc("seats/e/ann").unwrap(),
        Some(vec![1]),
        "dropped on its own node too"
    );
    // The new authority writes; the old one, without the lock, follows.
    other.append_chunks("seats/e/ann", &[vec![5]]).unwrap();
    assert_eq!(lead.load_doc("seats/e/ann").unwrap(), Some(vec![1, 5]));
    let (now, _) = one_authority(&[&elections[0], &elections[1]]);
    assert_eq!(now, 1 - first);
}
