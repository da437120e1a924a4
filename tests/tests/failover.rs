//! A join link naming several nodes: a device whose first node never
//! answers gets in through another, and then sticks to the one that works.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use lanyard_protocol::{JoinLink, Role};
use lanyard_tests::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_fails_over_past_a_dead_node_and_sticks_to_the_live_one() {
    let srv = TestServer::start().await.unwrap();
    // A node that never answers: a socket that only counts what arrives.
    let dead = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while dead.recv_from(&mut buf).await.is_ok() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let id = srv.identity().unwrap();
    let claims = TestServer::claims(Role::Attendee, "ann", "phone");
    let link = JoinLink {
        servers: vec![dead_addr.to_string(), srv.addr().to_string()],
        event: claims.event.clone(),
        token: id.sign(&claims),
        pin: id.pin(),
    };
    // Devices shuffle the link's nodes (a cluster's devices spread over
    // them): one that tries the dead node first, then one that does not.
    for dead_first in [true, false] {
        let mut tries = 0;
        let client = loop {
            let client = lanyard_client_core::Client::in_memory().unwrap();
            client.join(&link.to_string()).unwrap();
            let first = client.current_node().unwrap();
            if (first == dead_addr.to_string()) == dead_first {
                break client;
            }
            tries += 1;
            assert!(tries < 100, "100 devices all tried {first} first");
        };
        let before = received.load(std::sync::atomic::Ordering::SeqCst);
        client.append_note("s1", "first").unwrap();
        client
            .sync(Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("the live node was not reached: {e}"));
        assert_eq!(client.status().pending_changes, 0);
        if dead_first {
            assert!(
                received.load(std::sync::atomic::Ordering::SeqCst) > before,
                "the device tried the dead node first"
            );
        }
        assert_eq!(client.current_node(), Some(srv.addr().to_string()));
        let before = received.load(std::sync::atomic::Ordering::SeqCst);
        for k in 0..3 {
            client.append_note("s1", &format!(" {k}")).unwrap();
            client.sync(Duration::from_secs(60)).await.unwrap();
        }
        assert_eq!(
            received.load(std::sync::atomic::Ordering::SeqCst),
            before,
            "a device that got in sends nothing more to the dead node"
        );
    }
}
