//! Keeps the messages benchmark honest: run small, the provider must receive every
//! message exactly once, the log must show each sent, and every latency must be one
//! that was measured. No timing is asserted.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_delivers_exactly_what_it_counts() {
    use outpost_tests::messages_bench as mb;
    let o = mb::outbox_throughput(60).await.unwrap();
    assert_eq!(o.messages, 60);
    assert_eq!(o.sent, 60);
    assert_eq!(o.requests, 60, "no message posted twice");
    let d = mb::direct_throughput(60, 4).await.unwrap();
    assert_eq!((d.requests, d.sent), (60, 60));
    let l = mb::latency(20, 50.0).await.unwrap();
    assert_eq!(l.messages, 20);
    assert!(l.p50 >= 0 && l.p50 <= l.p99 && l.p99 <= l.max);
}
