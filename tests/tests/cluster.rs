//! Several `lanyard-server` processes on one throwaway PostgreSQL: a change
//! accepted by one node reaches the devices connected to the others, also
//! while the database drops every connection, and nothing is stored twice.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use lanyard_client_core::{BackgroundOptions, Client};
use lanyard_protocol::Role;
use lanyard_store_postgres::testing::TempCluster;
use lanyard_tests::crashloop::{link_as, Cluster};

/// Waits until every client holds session `id` (90 s at most); how long it took.
async fn all_hold(clients: &[Client], id: &str, pg: &TempCluster) -> Duration {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    loop {
        let missing: Vec<usize> = (0..clients.len())
            .filter(|i| !matches!(clients[*i].session(id), Ok(Some(_))))
            .collect();
        if missing.is_empty() {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "devices {missing:?} never got {id}; postgres log:\n{}",
            pg.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A throwaway PostgreSQL, its database (URL and name), the server binary,
/// and three nodes on it.
async fn three_nodes() -> (TempCluster, String, String, std::path::PathBuf, Cluster) {
    let pg = TempCluster::start().unwrap();
    let url = pg.create_database().unwrap();
    let db = url.rsplit('/').next().unwrap().to_string();
    let bin = lanyard_tests::server_bin_for_tests();
    let cluster = Cluster::start(&bin, 3, Some(&url)).await.unwrap();
    (pg, url, db, bin, cluster)
}

async fn publish(org: &Client, id: &str) {
    lanyard_tests::cluster_bench::publish(org, id)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_node_reaches_the_devices_of_every_node() {
    let (pg, url, db, bin, cluster) = three_nodes().await;
    let Cluster {
        dir: _dir,
        identity,
        data,
        addrs,
        nodes,
    } = cluster;

    // The organizer on node 0; two attendees on each of nodes 1 and 2.
    let org = Client::in_memory().unwrap();
    org.join(&link_as(&identity, &addrs[..1], Role::Organizer, "org", "laptop").unwrap())
        .unwrap();
    org.set_event("Cluster", "UTC").unwrap();
    let mut attendees = Vec::new();
    let mut syncs = Vec::new();
    for (k, addr) in addrs[1..].iter().enumerate() {
        for j in 0..2 {
            let c = Client::in_memory().unwrap();
            let user = format!("a{k}{j}");
            c.join(&link_as(&identity, &[*addr], Role::Attendee, &user, "phone").unwrap())
                .unwrap();
            syncs.push(c.start_background(BackgroundOptions::default()));
            attendees.push(c);
        }
    }

    let started = Instant::now();
    publish(&org, "s1").await;
    let acked = started.elapsed();
    all_hold(&attendees, "s1", &pg).await;
    println!(
        "organizer's sync on node 0 acknowledged after {} ms; on every device of nodes 1 and 2 after {} ms",
        acked.as_millis(),
        started.elapsed().as_millis()
    );

    // The database drops every connection (the nodes' pools and feeds)
    // while the organizer publishes more: everything still arrives once.
    for i in 2..=6 {
        if i == 3 {
            let dropped = pg.drop_connections().unwrap();
            assert!(dropped >= 3, "each node holds connections: {dropped}");
        }
        publish(&org, &format!("s{i}")).await;
    }
    for i in 2..=6 {
        all_hold(&attendees, &format!("s{i}"), &pg).await;
    }
    let twice = pg
        .psql(
            &db,
            "SELECT count(*) - count(DISTINCT (doc, md5(data))) FROM lanyard_chunks",
        )
        .unwrap();
    assert_eq!(twice, "0", "no chunk stored twice");

    // The offline commands do not mistake the node's empty sled directory
    // for its store.
    let out = std::process::Command::new(&bin)
        .args(["revoke", "--event", "crashloop", "--user", "a00", "--data"])
        .arg(&data[0])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("keeps its documents in postgres://lanyard@127.0.0.1"),
        "{err}"
    );

    // A revocation stored by one node (as its admin API does) reaches the
    // device on another node within seconds.
    let url2 = url.clone();
    tokio::task::spawn_blocking(move || {
        let store = lanyard_store_postgres::PgStore::connect(&url2).unwrap();
        let r = lanyard_protocol::Revocation {
            event: lanyard_protocol::EventId::new("crashloop").unwrap(),
            user: lanyard_protocol::UserId::new("a00").unwrap(),
            device: None,
        };
        lanyard_server::devices::save_revocations(&store, &[r]).unwrap();
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !attendees[0]
        .status()
        .last_error
        .is_some_and(|e| e.contains("revoked"))
    {
        assert!(
            Instant::now() < deadline,
            "the device on node 1 never learned it was revoked: {:?}",
            attendees[0].status().last_error
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for s in syncs {
        s.stop().await;
    }
    for mut n in nodes {
        n.start_kill().unwrap();
        n.wait().await.unwrap();
    }
}

/// The node that decides seats, as the database says (its listening address).
fn authority(pg: &TempCluster, db: &str) -> String {
    let node = pg.psql(db, "SELECT node FROM lanyard_authority").unwrap();
    node.split('/').next().unwrap_or_default().to_string()
}

/// `user`'s stored standing in session `s`, read from the database.
async fn stored_standing(url: &str, user: &str) -> Option<lanyard_protocol::seats::SeatState> {
    let url = url.to_owned();
    let user = lanyard_protocol::UserId::new(user).unwrap();
    tokio::task::spawn_blocking(move || {
        let store = lanyard_store_postgres::PgStore::connect(&url).unwrap();
        let doc = lanyard_protocol::DocId::Seats(
            lanyard_protocol::EventId::new("crashloop").unwrap(),
            user.clone(),
        );
        use lanyard_store::Store as _;
        let bytes = store.load_doc(&doc.to_string()).unwrap()?;
        let am = automerge::Automerge::load(&bytes).unwrap();
        lanyard_protocol::seats::doc::read_outcomes(&am, &user)
            .into_iter()
            .find(|o| o.session.as_str() == "s")
            .map(|o| o.state)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_the_last_seat_never_both_confirm_it() {
    use lanyard_client_core::ReservationState as State;
    use lanyard_protocol::seats::SeatState;
    let (pg, url, db, _bin, cluster) = three_nodes().await;
    let Cluster {
        dir: _dir,
        identity,
        addrs,
        mut nodes,
        ..
    } = cluster;

    // One seat, published through node 0 (the organizer's link names every
    // node: it carries on when one dies).
    let org = Client::in_memory().unwrap();
    org.join(&link_as(&identity, &addrs, Role::Organizer, "org", "laptop").unwrap())
        .unwrap();
    org.set_event("Cluster", "UTC").unwrap();
    publish(&org, "s").await;
    org.set_capacity("s", 1).unwrap();
    lanyard_tests::cluster_bench::acknowledged(&org, "the capacity")
        .await
        .unwrap();

    // Ann on node 1 and bob on node 2 reserve it at the same moment.
    let mut racers = Vec::new();
    for (user, addr) in [("ann", addrs[1]), ("bob", addrs[2])] {
        let c = Client::in_memory().unwrap();
        c.join(&link_as(&identity, &[addr], Role::Attendee, user, "phone").unwrap())
            .unwrap();
        lanyard_tests::cluster_bench::acknowledged(&c, "the first sync")
            .await
            .unwrap();
        assert!(c.session("s").unwrap().is_some(), "{user} sees the session");
        c.reserve("s").unwrap();
        racers.push(c);
    }
    let (a, b) = tokio::join!(
        lanyard_tests::cluster_bench::acknowledged(&racers[0], "ann's request"),
        lanyard_tests::cluster_bench::acknowledged(&racers[1], "bob's request"),
    );
    a.unwrap();
    b.unwrap();
    // Each learns the outcome the authority decided (through the feed when
    // it is on another node).
    let deadline = Instant::now() + Duration::from_secs(90);
    let states = loop {
        let states: Vec<(State, Option<u32>)> = racers
            .iter()
            .map(|c| {
                let r = c.reservations().unwrap();
                r.first()
                    .map_or((State::Pending, None), |r| (r.state, r.position))
            })
            .collect();
        if states.iter().all(|(s, _)| *s != State::Pending) {
            break states;
        }
        assert!(
            Instant::now() < deadline,
            "undecided after 90 s: {states:?}; postgres log:\n{}",
            pg.log()
        );
        for c in &racers {
            let _ = c.sync(Duration::from_secs(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut sorted = states.clone();
    sorted.sort_by_key(|(s, _)| *s != State::Confirmed);
    assert_eq!(
        sorted,
        vec![(State::Confirmed, None), (State::Waitlisted, Some(1))],
        "one seat, one confirmed: {states:?}"
    );
    let waiting = if states[0].0 == State::Waitlisted {
        "ann"
    } else {
        "bob"
    };
    let held = pg
        .psql(
            &db,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND mode = 'ExclusiveLock'",
        )
        .unwrap();
    assert!(
        held == "1" || held == "2",
        "one authority lock (and maybe a flush's): {held}"
    );

    // The node deciding seats dies. Another one takes over: the organizer
    // adds a seat, and the waiting attendee gets it.
    let deciding = authority(&pg, &db);
    let k = addrs
        .iter()
        .position(|a| a.to_string() == deciding)
        .unwrap_or_else(|| panic!("the authority {deciding} is none of {addrs:?}"));
    nodes[k].start_kill().unwrap();
    nodes[k].wait().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while authority(&pg, &db) == deciding {
        assert!(
            Instant::now() < deadline,
            "nobody took over from {deciding}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    org.set_capacity("s", 2).unwrap();
    lanyard_tests::cluster_bench::acknowledged(&org, "the new capacity")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = stored_standing(&url, waiting).await;
        if now == Some(SeatState::Confirmed) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} still {now:?} 90 s after node {k}, the authority, died"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "node {k} decided; after it died, {} decided",
        authority(&pg, &db)
    );
}
